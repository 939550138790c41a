"""Side-by-side HTTP benchmark: a 3-node raftkv cluster vs a 3-node etcd cluster.

Both run on 127.0.0.1 in the same run, one after the other, driven by `wrk`
with identical workloads (64-byte values over 1000 keys), aimed at the
leader. All clusters run at once and every round drives each workload on
each system back to back, so the per-round ratios compare like with like on
a noisy machine; medians over rounds are reported. etcd is driven through its HTTP/JSON gateway (`/v3/kv/put`,
`/v3/kv/range`), with fsync on, as shipped by Debian's `etcd-server`.

    python bench/cluster_bench.py --engines native,pysyncobj --etcd --duration 5 --rounds 3

Native-engine peers run mutual TLS, as everywhere by default; `--peer-tls
both` runs a plaintext-peer cluster beside it (`raftkv-native-plain`) and
adds a ratio table of TLS vs plaintext.

Every raftkv row also gives the leader's CPU time per request (user +
system seconds of its process from /proc/<pid>/stat over the wrk run,
divided by the requests wrk counted): on a shared machine requests/s swing
with the neighbours' load, CPU per request much less, so it is the figure
to compare code changes by. `--baseline-tree DIR` runs one more native
cluster from another checkout (`git worktree add /tmp/baseline <commit>`),
plaintext peers, named `raftkv-native@baseline`, so old and new code share
every round.

Needs `wrk` (and `etcd` for --etcd): `apt-get install wrk etcd-server`.
Prints a markdown table; `--json FILE` also writes the raw figures.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from raftkv.local_cluster import LocalCluster, free_ports  # noqa: E402

KEYS = 1000
VALUE = "v" * 64

RAFTKV_WRITE = """
local value = string.rep("v", 64)
request = function()
  return wrk.format("PUT", "/v1/kv/bench/" .. math.random(1, %d), nil, value)
end
""" % KEYS

RAFTKV_READ = """
request = function()
  return wrk.format("GET", "/v1/kv/bench/" .. math.random(1, %d))
end
""" % KEYS


def _etcd_script(kind: str) -> str:
    # Precompute the JSON bodies: etcd's gateway wants base64 keys and values.
    bodies = []
    for i in range(1, KEYS + 1):
        key = base64.b64encode(f"bench/{i}".encode()).decode()
        if kind == "write":
            value = base64.b64encode(VALUE.encode()).decode()
            bodies.append(f'{{"key":"{key}","value":"{value}"}}')
        else:
            bodies.append(f'{{"key":"{key}"}}')
    path = "/v3/kv/put" if kind == "write" else "/v3/kv/range"
    table = ",".join(f"'{b}'" for b in bodies)
    return f"""
local bodies = {{{table}}}
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  return wrk.format("POST", "{path}", nil, bodies[math.random(1, #bodies)])
end
"""


@dataclass
class Result:
    system: str
    workload: str
    connections: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    leader_cpu_us: float | None = None  # leader process CPU per request (raftkv only)


@dataclass
class WrkRun:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int


def run_wrk(url: str, script: str, connections: int, duration: int) -> WrkRun:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
        script_path = f.name
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", script_path, url],
        capture_output=True, text=True, check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _latency_ms(re.search(r"50%\s+([\d.]+\w+)", out).group(1))  # type: ignore[union-attr]
    p99 = _latency_ms(re.search(r"99%\s+([\d.]+\w+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, sock.groups())) if sock else 0)
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return WrkRun(rps, p50, p99, errors, requests)


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        # Field 2 (the command) may contain spaces; count from after its ')'.
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _latency_ms(text: str) -> float:
    number, unit = re.match(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


WORKLOADS = [("write", 1), ("write", 64), ("read", 1), ("read", 64)]


@dataclass
class System:
    name: str
    url: str
    script: dict[str, str]  # workload -> wrk Lua script
    leader_pid: int | None = None  # raftkv: whose CPU time is measured


def preload_raftkv(url: str) -> None:
    for i in range(1, KEYS + 1):
        req = urllib.request.Request(f"{url}/v1/kv/bench/{i}", data=VALUE.encode(), method="PUT")
        urllib.request.urlopen(req).read()


def start_raftkv(cluster: LocalCluster, name: str) -> System:
    leader = cluster.node(cluster.wait_ready(60))
    preload_raftkv(leader.url)
    assert leader.process is not None
    return System(name, leader.url, {"write": RAFTKV_WRITE, "read": RAFTKV_READ}, leader.process.pid)


class _TreeCluster(LocalCluster):
    """A LocalCluster whose nodes import raftkv from another source tree."""

    def __init__(self, tree: Path, *args: object, **kwargs: object) -> None:
        self.tree = tree
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def command(self, node):  # type: ignore[no-untyped-def]
        # env execs python in place, so the pid stays the node's; `python -m`
        # puts the working directory first on sys.path, before the editable
        # install of this tree.
        return ["env", "-C", str(self.tree), *super().command(node)]


def start_etcd(base: Path, stack: contextlib.ExitStack) -> str:
    """A 3-member etcd cluster on loopback; returns the leader's client URL."""
    client_ports, peer_ports = free_ports(3), free_ports(3)
    names = [f"e{i}" for i in range(1, 4)]
    initial = ",".join(f"{n}=http://127.0.0.1:{p}" for n, p in zip(names, peer_ports))
    for name, cport, pport in zip(names, client_ports, peer_ports):
        log = stack.enter_context(open(base / f"{name}.log", "wb"))
        process = subprocess.Popen(
            ["etcd", "--name", name, "--data-dir", str(base / name),
             "--listen-client-urls", f"http://127.0.0.1:{cport}",
             "--advertise-client-urls", f"http://127.0.0.1:{cport}",
             "--listen-peer-urls", f"http://127.0.0.1:{pport}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{pport}",
             "--initial-cluster", initial, "--initial-cluster-state", "new",
             "--initial-cluster-token", "bench"],
            stdout=log, stderr=subprocess.STDOUT,
        )
        stack.callback(_stop_process, process)
    url = _etcd_leader_url(client_ports)
    for i in range(1, KEYS + 1):
        body = json.dumps({"key": base64.b64encode(f"bench/{i}".encode()).decode(),
                           "value": base64.b64encode(VALUE.encode()).decode()}).encode()
        urllib.request.urlopen(urllib.request.Request(f"{url}/v3/kv/put", data=body)).read()
    return url


def _stop_process(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _etcd_leader_url(ports: list[int]) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for port in ports:
            try:
                with urllib.request.urlopen(
                    urllib.request.Request(f"http://127.0.0.1:{port}/v3/maintenance/status", data=b"{}"),
                    timeout=1,
                ) as r:
                    status = json.loads(r.read())
                if status.get("leader") and status["leader"] == status["header"]["member_id"]:
                    return f"http://127.0.0.1:{port}"
            except OSError:
                pass
        time.sleep(0.2)
    raise TimeoutError("etcd cluster did not elect a leader")


def run_rounds(
    systems: list[System], duration: int, rounds: int, workloads: list[tuple[str, int]] = WORKLOADS
) -> list[list[Result]]:
    """Every round drives every workload on every system back to back, so
    load drift on a shared machine hits the systems alike."""
    all_rounds = []
    for _ in range(rounds):
        results = []
        for workload, conns in workloads:
            for system in systems:
                pid = system.leader_pid
                cpu_before = process_cpu_seconds(pid) if pid is not None else 0.0
                run = run_wrk(system.url, system.script[workload], conns, duration)
                cpu_us = None
                if pid is not None and run.requests:
                    cpu_us = (process_cpu_seconds(pid) - cpu_before) / run.requests * 1e6
                results.append(Result(
                    system.name, workload, conns, run.requests_per_s, run.p50_ms, run.p99_ms, run.errors, cpu_us
                ))
        all_rounds.append(results)
    return all_rounds


def medians(all_rounds: list[list[Result]]) -> list[Result]:
    out = []
    for i, first in enumerate(all_rounds[0]):
        runs = [r[i] for r in all_rounds]
        out.append(Result(
            first.system, first.workload, first.connections,
            statistics.median(r.requests_per_s for r in runs),
            statistics.median(r.p50_ms for r in runs),
            statistics.median(r.p99_ms for r in runs),
            sum(r.errors for r in runs),
            None if first.leader_cpu_us is None else statistics.median(
                r.leader_cpu_us for r in runs if r.leader_cpu_us is not None
            ),
        ))
    return out


def ratios(all_rounds: list[list[Result]], baseline: str) -> list[tuple[str, str, int, float, float, float]]:
    """(system, workload, connections, median ratio of requests/s, of p50, of p99) vs baseline."""
    out = []
    for i, first in enumerate(all_rounds[0]):
        if first.system == baseline:
            continue
        base_i = next(j for j, r in enumerate(all_rounds[0])
                      if r.system == baseline and r.workload == first.workload
                      and r.connections == first.connections)
        per_round = [(r[i], r[base_i]) for r in all_rounds]
        out.append((
            first.system, first.workload, first.connections,
            statistics.median(a.requests_per_s / b.requests_per_s for a, b in per_round),
            statistics.median(a.p50_ms / b.p50_ms for a, b in per_round),
            statistics.median(a.p99_ms / b.p99_ms for a, b in per_round),
        ))
    return out


def table(results: list[Result]) -> str:
    lines = [
        "| system | workload | connections | requests/s | p50 ms | p99 ms | leader CPU µs/request | errors |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        cpu = "" if r.leader_cpu_us is None else f"{r.leader_cpu_us:,.0f}"
        lines.append(
            f"| {r.system} | {r.workload} | {r.connections} | {r.requests_per_s:,.0f} | "
            f"{r.p50_ms:.2f} | {r.p99_ms:.2f} | {cpu} | {r.errors} |"
        )
    return "\n".join(lines)


def ratio_table(rows: list[tuple[str, str, int, float, float, float]], baseline: str) -> str:
    lines = [
        f"| system | workload | connections | requests/s vs {baseline} | p50 vs {baseline} | p99 vs {baseline} |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for system, workload, conns, rps, p50, p99 in rows:
        lines.append(f"| {system} | {workload} | {conns} | {rps:.2f}x | {p50:.2f}x | {p99:.2f}x |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", default="native", help="comma-separated raftkv engines to run")
    parser.add_argument("--etcd", action="store_true", help="also run etcd (needs the etcd binary)")
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; medians are reported")
    parser.add_argument("--json", type=Path, help="write raw per-round results here")
    parser.add_argument(
        "--peer-tls",
        choices=("on", "off", "both"),
        default="on",
        help="native engine peers over mutual TLS (on, the default), plaintext (off), or both side by side",
    )
    parser.add_argument(
        "--workloads",
        default=",".join(f"{w}/{c}" for w, c in WORKLOADS),
        help="comma-separated workload/connections pairs to run (default: %(default)s)",
    )
    parser.add_argument(
        "--baseline-tree",
        type=Path,
        help="also run a native cluster (plaintext peers) from this checkout of raftkv, e.g. an older commit",
    )
    args = parser.parse_args()
    try:
        workloads = [(w, int(c)) for w, c in (item.split("/") for item in args.workloads.split(","))]
    except ValueError:
        parser.error(f"--workloads takes pairs like write/1,read/64, not {args.workloads!r}")
    if any(w not in ("write", "read") or c < 1 for w, c in workloads):
        parser.error("--workloads: the workload is write or read, connections at least 1")
    if shutil.which("wrk") is None:
        parser.error("wrk is not installed (apt-get install wrk)")
    if args.etcd and shutil.which("etcd") is None:
        parser.error("etcd is not installed (apt-get install etcd-server)")
    with tempfile.TemporaryDirectory(prefix="raftkv-bench-") as tmp, contextlib.ExitStack() as stack:
        base = Path(tmp)
        systems = []
        for engine in filter(None, args.engines.split(",")):
            # pysyncobj cannot do TLS: its peers are plaintext whatever --peer-tls says.
            variants = {"on": [True], "off": [False], "both": [True, False]}[args.peer_tls]
            for peer_tls in variants if engine == "native" else [False]:
                name = f"raftkv-{engine}" + ("" if peer_tls or engine != "native" else "-plain")
                cluster = stack.enter_context(
                    LocalCluster(base / name, engine=engine, peer_tls=peer_tls if engine == "native" else None)
                )
                systems.append(start_raftkv(cluster, name))
        if args.baseline_tree is not None:
            cluster = stack.enter_context(
                _TreeCluster(args.baseline_tree.resolve(), base / "baseline", engine="native", peer_tls=False)
            )
            systems.append(start_raftkv(cluster, "raftkv-native@baseline"))
        if args.etcd:
            url = start_etcd(base, stack)
            systems.append(System("etcd", url, {"write": _etcd_script("write"), "read": _etcd_script("read")}))
        all_rounds = run_rounds(systems, args.duration, args.rounds, workloads)
    print(table(medians(all_rounds)))
    if args.etcd:
        print()
        print(ratio_table(ratios(all_rounds, "etcd"), "etcd"))
    if args.peer_tls == "both" and "native" in args.engines.split(","):
        plain = "raftkv-native-plain"
        tls_rows = [row for row in ratios(all_rounds, plain) if row[0] == "raftkv-native"]
        print()
        print(ratio_table(tls_rows, plain))
    if args.json:
        args.json.write_text(json.dumps([[asdict(r) for r in rnd] for rnd in all_rounds], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
