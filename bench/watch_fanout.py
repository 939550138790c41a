"""Watch fan-out, raftkv vs etcd in one run (issue #11 part 7).

N watchers (default 1,000) stream one prefix, spread evenly over the three
nodes of each cluster, while writes under that prefix run at fixed rates and
then as fast as a few connections go. Every value is the writer's
``time.monotonic_ns()`` when the write was due, so a watcher receiving it
knows its delivery latency (CLOCK_MONOTONIC is one clock for every process of
the machine). Per system and phase the bench reports the events delivered
per second (summed over watchers, from the first write to the last event
received), latency p50/p99/max, events lost or duplicated, and the nodes'
summed RSS.

    python bench/watch_fanout.py                      # 1,000 watchers, both systems
    python bench/watch_fanout.py --quick --systems raftkv

raftkv: 3-node native cluster, mutual-TLS peers (the default), watches are
``GET /v1/watch?prefix=`` as NDJSON. etcd: 3 members started like
bench/cluster_bench.py's, watches are its grpc-gateway ``POST /v3/watch``
(newline-delimited JSON, values base64). Writes go to each leader over
HTTP/JSON (raftkv ``PUT /v1/kv``, etcd ``POST /v3/kv/put``). Phases
alternate between the systems, so load drift on a shared machine hits both.

The client side is the same for both: watcher worker processes (``--procs``,
default 2), one asyncio loop each with aiohttp streams. Every watcher counts
its events with one bytes.count per chunk; every ``--check-every``-th watcher
also parses each event's revision and send time (latency samples, and a
revision that is not above the previous one counts as a duplicate). A
watcher that has fewer events than acknowledged writes when the drain
deadline passes counts the difference as lost; more events than writes
attempted (a failed write may still commit) count as duplicated.

Prints a markdown table; ``--json FILE`` also writes the rows.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from array import array
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.cluster_bench import _etcd_leader_url, process_cpu_seconds  # noqa: E402
from raftkv.local_cluster import LocalCluster, free_ports  # noqa: E402

PREFIX = "fanout/"
KEYS = 100  # writes cycle over this many keys under PREFIX
DRAIN_TIMEOUT = 20.0


# -- the watcher side (worker processes) -------------------------------------


@dataclass(frozen=True)
class Dialect:
    """How one system's watch stream looks on the wire."""

    event_marker: bytes  # occurs once per event
    event_pattern: re.Pattern[bytes]  # groups: revision, value (send time)
    value_base64: bool


RAFTKV_STREAM = Dialect(b'"type":"put"', re.compile(rb'"value":"(\d+)","revision":(\d+)'), False)
# etcd's kv: key, create_revision, mod_revision, version, value (base64).
ETCD_STREAM = Dialect(
    b'"kv":', re.compile(rb'"mod_revision":"(\d+)","version":"\d+","value":"([A-Za-z0-9+/=]*)"'), True
)


class WatchStream:
    """What one watcher has received in the current phase."""

    def __init__(self, dialect: Dialect, checked: bool, latencies: array) -> None:
        self.dialect = dialect
        self.checked = checked
        self.latencies = latencies  # shared by the worker's checked streams
        self.events = 0
        self.duplicates = 0
        self.last_revision = 0
        self.last_ns = 0
        self.broken = False
        self._rest = b""

    def reset(self) -> None:
        self.events = self.duplicates = self.last_ns = 0

    def feed(self, chunk: bytes, now_ns: int) -> None:
        data = self._rest + chunk
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            self._rest = data
            return
        lines, self._rest = data[:cut], data[cut:]
        if not self.checked:
            count = lines.count(self.dialect.event_marker)
        else:
            count = 0
            for first, second in self.dialect.event_pattern.findall(lines):
                if self.dialect.value_base64:
                    revision, sent = int(first), int(base64.b64decode(second))
                else:
                    sent, revision = int(first), int(second)
                if revision <= self.last_revision:
                    self.duplicates += 1
                self.last_revision = revision
                self.latencies.append((now_ns - sent) / 1e6)
                count += 1
        if count:
            self.events += count
            self.last_ns = now_ns


async def _read_stream(response: aiohttp.ClientResponse, stream: WatchStream) -> None:
    try:
        async for chunk in response.content.iter_any():
            stream.feed(chunk, time.monotonic_ns())
    except (aiohttp.ClientError, asyncio.CancelledError):
        pass
    finally:
        stream.broken = True


async def _open_raftkv(session: aiohttp.ClientSession, url: str, stream: WatchStream) -> aiohttp.ClientResponse:
    response = await session.get(
        f"{url}/v1/watch", params={"prefix": PREFIX}, headers={"Accept": "application/x-ndjson"}
    )
    if response.status != 200:
        raise RuntimeError(f"raftkv watch on {url}: {response.status} {await response.text()}")
    return response


async def _open_etcd(session: aiohttp.ClientSession, url: str, stream: WatchStream) -> aiohttp.ClientResponse:
    key = PREFIX.encode()
    range_end = key[:-1] + bytes([key[-1] + 1])
    body = {"create_request": {"key": base64.b64encode(key).decode(), "range_end": base64.b64encode(range_end).decode()}}
    response = await session.post(f"{url}/v3/watch", json=body)
    if response.status != 200:
        raise RuntimeError(f"etcd watch on {url}: {response.status} {await response.text()}")
    # Registered once the "created" message arrives; later writes are seen.
    first = await response.content.readline()
    if b'"created":true' not in first:
        raise RuntimeError(f"etcd watch on {url}: unexpected first message {first[:200]!r}")
    return response


async def _worker(conn: Connection, system: str, urls: list[str], indexes: list[int], check_every: int) -> None:
    dialect, opener = (RAFTKV_STREAM, _open_raftkv) if system == "raftkv" else (ETCD_STREAM, _open_etcd)
    latencies = array("d")
    cpu_start = time.process_time()
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None, sock_connect=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        streams = [WatchStream(dialect, i % check_every == 0, latencies) for i in indexes]
        opening = asyncio.Semaphore(50)

        async def open_one(i: int, stream: WatchStream) -> aiohttp.ClientResponse:
            async with opening:
                return await opener(session, urls[i % len(urls)], stream)

        responses = await asyncio.gather(*(open_one(i, s) for i, s in zip(indexes, streams)))
        readers = [asyncio.create_task(_read_stream(r, s)) for r, s in zip(responses, streams)]
        conn.send("ready")
        while True:
            command = await asyncio.to_thread(conn.recv)
            if command[0] == "reset":
                for stream in streams:
                    stream.reset()
                del latencies[:]
                cpu_start = time.process_time()
                conn.send("ok")
            elif command[0] == "collect":
                _, expected, attempted, deadline_s = command
                deadline = time.monotonic() + deadline_s
                while time.monotonic() < deadline and any(
                    s.events < expected and not s.broken for s in streams
                ):
                    await asyncio.sleep(0.05)
                conn.send({
                    "events": sum(s.events for s in streams),
                    "lost": sum(max(0, expected - s.events) for s in streams),
                    # More events than writes attempted: some event came twice.
                    "extra": sum(max(0, s.events - attempted) for s in streams),
                    "duplicates": sum(s.duplicates for s in streams),
                    "broken": sum(s.broken for s in streams),
                    "last_ns": max((s.last_ns for s in streams), default=0),
                    "latencies": latencies.tobytes(),
                    "cpu_s": time.process_time() - cpu_start,
                })
            else:
                break
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        for response in responses:
            response.close()


def _worker_main(conn: Connection, system: str, urls: list[str], indexes: list[int], check_every: int) -> None:
    asyncio.run(_worker(conn, system, urls, indexes, check_every))


class Watchers:
    """N watchers of one system, split over worker processes."""

    def __init__(self, system: str, urls: list[str], count: int, procs: int, check_every: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.count = count
        self.pipes: list[Connection] = []
        self.processes: list[Any] = []
        for p in range(procs):
            parent, child = ctx.Pipe()
            indexes = list(range(p, count, procs))
            process = ctx.Process(target=_worker_main, args=(child, system, urls, indexes, check_every), daemon=True)
            process.start()
            self.pipes.append(parent)
            self.processes.append(process)
        for pipe in self.pipes:
            if not pipe.poll(120):
                raise TimeoutError(f"{system} watchers did not open within 120 s")
            pipe.recv()

    def reset(self) -> None:
        for pipe in self.pipes:
            pipe.send(("reset",))
        for pipe in self.pipes:
            pipe.recv()

    def collect(self, expected: int, attempted: int, deadline_s: float) -> dict[str, Any]:
        """Wait until each watcher has ``expected`` (acknowledged) events or
        the deadline passes. A write that failed may still have committed, so
        only events beyond ``attempted`` count as duplicates."""
        for pipe in self.pipes:
            pipe.send(("collect", expected, attempted, deadline_s))
        parts = [pipe.recv() for pipe in self.pipes]
        latencies = array("d")
        for part in parts:
            latencies.frombytes(part["latencies"])
        total = {k: sum(p[k] for p in parts) for k in ("events", "lost", "extra", "duplicates", "broken", "cpu_s")}
        total["last_ns"] = max(p["last_ns"] for p in parts)
        total["latencies"] = sorted(latencies)
        return total

    def close(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send(("stop",))
        for process in self.processes:
            process.join(10)
            if process.is_alive():
                process.kill()


# -- the writer side ---------------------------------------------------------


@dataclass
class WriteRun:
    acked: int
    errors: int
    first_ns: int
    seconds: float
    ack_ms: list[float]  # due time to acknowledgement, per acknowledged write


def _put_request(system: str, leader: str, n: int, sent_ns: int) -> tuple[str, str, dict[str, Any]]:
    key, value = f"{PREFIX}{n % KEYS}", str(sent_ns)
    if system == "raftkv":
        return "PUT", f"{leader}/v1/kv/{key}", {"data": value.encode()}
    body = {"key": base64.b64encode(key.encode()).decode(), "value": base64.b64encode(value.encode()).decode()}
    return "POST", f"{leader}/v3/kv/put", {"json": body}


async def write_phase(system: str, leader: str, rate: float | None, connections: int, duration: float) -> WriteRun:
    """Writes at ``rate`` per second (open loop: each write starts when due,
    its value the time it was due) or, with rate None, as fast as
    ``connections`` closed-loop writers go."""
    acked = errors = 0
    ack_ms: list[float] = []
    counter = iter(range(10**12))

    async def put(session: aiohttp.ClientSession, due_ns: int) -> None:
        nonlocal acked, errors
        method, url, kwargs = _put_request(system, leader, next(counter), due_ns)
        try:
            async with session.request(method, url, **kwargs) as response:
                await response.read()
                if response.status == 200:
                    acked += 1
                    ack_ms.append((time.monotonic_ns() - due_ns) / 1e6)
                else:
                    errors += 1
        except (aiohttp.ClientError, TimeoutError):
            errors += 1

    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        start_ns = time.monotonic_ns()
        end_ns = start_ns + int(duration * 1e9)
        if rate is None:
            async def closed_loop() -> None:
                while (now := time.monotonic_ns()) < end_ns:
                    await put(session, now)

            await asyncio.gather(*(closed_loop() for _ in range(connections)))
        else:
            tasks = []
            step = 1e9 / rate
            for i in range(int(duration * rate)):
                due = start_ns + int(i * step)
                delay = (due - time.monotonic_ns()) / 1e9
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(put(session, due)))
            await asyncio.gather(*tasks)
    return WriteRun(acked, errors, start_ns, (time.monotonic_ns() - start_ns) / 1e9, sorted(ack_ms))


# -- systems -----------------------------------------------------------------


@dataclass
class Target:
    name: str
    urls: list[str]
    leader: str
    pids: list[int]


def rss_mb(pids: list[int]) -> float:
    total_kb = 0
    for pid in pids:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
    return total_kb / 1024


def start_raftkv(base: Path, stack: contextlib.ExitStack) -> Target:
    cluster = stack.enter_context(LocalCluster(base / "raftkv", engine="native"))
    leader = cluster.node(cluster.wait_ready(60))
    pids = [n.process.pid for n in cluster.nodes if n.process is not None]
    return Target("raftkv", cluster.endpoints, leader.url, pids)


def start_etcd(base: Path, stack: contextlib.ExitStack) -> Target:
    client_ports, peer_ports = free_ports(3), free_ports(3)
    names = [f"e{i}" for i in range(1, 4)]
    initial = ",".join(f"{n}=http://127.0.0.1:{p}" for n, p in zip(names, peer_ports))
    pids = []
    for name, cport, pport in zip(names, client_ports, peer_ports):
        log = stack.enter_context(open(base / f"{name}.log", "wb"))
        process = subprocess.Popen(
            ["etcd", "--name", name, "--data-dir", str(base / name),
             "--listen-client-urls", f"http://127.0.0.1:{cport}",
             "--advertise-client-urls", f"http://127.0.0.1:{cport}",
             "--listen-peer-urls", f"http://127.0.0.1:{pport}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{pport}",
             "--initial-cluster", initial, "--initial-cluster-state", "new",
             "--initial-cluster-token", "fanout"],
            stdout=log, stderr=subprocess.STDOUT,
        )
        stack.callback(_stop_process, process)
        pids.append(process.pid)
    leader = _etcd_leader_url(client_ports)
    return Target("etcd", [f"http://127.0.0.1:{p}" for p in client_ports], leader, pids)


def _stop_process(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# -- phases and report -------------------------------------------------------


@dataclass
class Row:
    system: str
    phase: str
    watchers: int
    writes: int
    write_errors: int
    writes_per_s: float
    write_p50_ms: float  # due time to the write's acknowledgement
    events: int
    events_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    lost: int
    duplicated: int
    broken_streams: int
    rss_mb: float
    nodes_cpu_s: float  # the three nodes' user+system CPU over the phase and drain
    watchers_cpu_s: float  # the watcher processes' CPU over the same span
    span_s: float  # first write to last event received


def _quantile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def run_phase(target: Target, watchers: Watchers, phase: str, rate: float | None, conns: int, duration: float) -> Row:
    watchers.reset()
    cpu_before = sum(process_cpu_seconds(pid) for pid in target.pids)
    run = asyncio.run(write_phase(target.name, target.leader, rate, conns, duration))
    got = watchers.collect(run.acked, run.acked + run.errors, DRAIN_TIMEOUT)
    nodes_cpu = sum(process_cpu_seconds(pid) for pid in target.pids) - cpu_before
    span = max(got["last_ns"] - run.first_ns, 1) / 1e9
    lat = got["latencies"]
    return Row(
        target.name, phase, watchers.count, run.acked, run.errors, run.acked / run.seconds,
        _quantile(run.ack_ms, 0.5),
        got["events"], got["events"] / span,
        _quantile(lat, 0.5), _quantile(lat, 0.99), lat[-1] if lat else float("nan"),
        got["lost"], got["extra"] + got["duplicates"], got["broken"], rss_mb(target.pids),
        nodes_cpu, got["cpu_s"], span,
    )


def table(rows: list[Row]) -> str:
    lines = [
        "| system | phase | watchers | writes/s | write p50 ms | events/s | p50 ms | p99 ms | max ms | write errors | lost | dup "
        "| nodes' RSS MB | nodes' CPU µs/event | watchers' CPU % |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r.system} | {r.phase} | {r.watchers} | {r.writes_per_s:,.0f} | {r.write_p50_ms:.1f} | "
            f"{r.events_per_s:,.0f} | "
            f"{r.p50_ms:.1f} | {r.p99_ms:.1f} | {r.max_ms:.1f} | {r.write_errors} | {r.lost} | {r.duplicated} | "
            f"{r.rss_mb:,.0f} | "
            f"{r.nodes_cpu_s / max(r.events, 1) * 1e6:.1f} | {r.watchers_cpu_s / r.span_s * 100:.0f} |"
        )
    return "\n".join(lines)


def _uptime() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--systems", default="raftkv,etcd", help="comma-separated: raftkv, etcd (default: both)")
    parser.add_argument("--watchers", type=int, default=1000, help="watchers per system (default: %(default)s)")
    parser.add_argument("--rates", default="200,1000", help="fixed write rates per second, comma-separated")
    parser.add_argument("--max-connections", type=int, default=4, help="writers of the max-rate phase")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of writes per phase")
    parser.add_argument("--procs", type=int, default=2, help="watcher worker processes per system")
    parser.add_argument("--check-every", type=int, default=10,
                        help="every Nth watcher parses each event (latency, order); the others count")
    parser.add_argument("--quick", action="store_true",
                        help="small mode: 30 watchers, one process, 200/s then max, 2 s each")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    if args.quick:
        args.watchers, args.procs, args.rates, args.duration, args.check_every = 30, 1, "200", 2.0, 3
    systems = [s for s in args.systems.split(",") if s]
    if not systems or set(systems) - {"raftkv", "etcd"}:
        parser.error("--systems takes raftkv, etcd or both")
    if args.watchers < 1 or args.procs < 1 or args.check_every < 1 or args.duration <= 0:
        parser.error("--watchers, --procs, --check-every and --duration must be positive")
    try:
        rates = [float(r) for r in args.rates.split(",") if r]
    except ValueError:
        parser.error(f"--rates takes numbers like 200,1000, not {args.rates!r}")
    if "etcd" in systems and shutil.which("etcd") is None:
        parser.error("etcd is not installed (apt-get install etcd-server)")
    phases: list[tuple[str, float | None, int]] = [(f"{r:g}/s", r, 16) for r in rates]
    phases.append((f"max, {args.max_connections} conns", None, args.max_connections))
    load_before = _uptime()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="raftkv-fanout-") as tmp, contextlib.ExitStack() as stack:
        base = Path(tmp)
        targets = [start_raftkv(base, stack) if s == "raftkv" else start_etcd(base, stack) for s in systems]
        pools = []
        for target in targets:
            pool = Watchers(target.name, target.urls, args.watchers, args.procs, args.check_every)
            stack.callback(pool.close)
            pools.append(pool)
        for phase, rate, conns in phases:
            for target, pool in zip(targets, pools):
                row = run_phase(target, pool, phase, rate, conns, args.duration)
                print(f"# {row.system} {row.phase}: {row.events_per_s:,.0f} events/s, p99 {row.p99_ms:.1f} ms",
                      file=sys.stderr, flush=True)
                rows.append(row)
    load_after = _uptime()
    print(table(rows))
    print(f"\nload average before {load_before}, after {load_after}; {os.cpu_count()} CPUs")
    if args.json:
        args.json.write_text(json.dumps(
            {"rows": [asdict(r) for r in rows], "load_before": load_before, "load_after": load_after}, indent=2
        ))
    bad = [r for r in rows if r.lost or r.duplicated or r.write_errors]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
