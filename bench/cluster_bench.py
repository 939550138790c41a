"""Side-by-side HTTP benchmark: a 3-node raftkv cluster vs a 3-node etcd cluster.

Both run on 127.0.0.1 in the same run, one after the other, driven by `wrk`
with identical workloads (64-byte values over 1000 keys), aimed at the
leader. etcd is driven through its HTTP/JSON gateway (`/v3/kv/put`,
`/v3/kv/range`), with fsync on, as shipped by Debian's `etcd-server`.

    python bench/cluster_bench.py --engines pysyncobj --etcd --duration 10

Needs `wrk` (and `etcd` for --etcd): `apt-get install wrk etcd-server`.
Prints a markdown table; `--json FILE` also writes the raw figures.
"""

from __future__ import annotations

import argparse
import base64
import json
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


def run_wrk(url: str, script: str, connections: int, duration: int) -> tuple[float, float, float, int]:
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
    return rps, p50, p99, errors


def _latency_ms(text: str) -> float:
    number, unit = re.match(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


WORKLOADS = [("write", 1), ("write", 64), ("read", 1), ("read", 64)]


def bench_raftkv(engine: str, duration: int, repeats: int, base: Path) -> list[Result]:
    results = []
    with LocalCluster(base / f"raftkv-{engine}", engine=engine) as cluster:
        leader = cluster.wait_ready(60)
        url = cluster.node(leader).url
        # Every key exists before reads are measured.
        for i in range(1, KEYS + 1):
            req = urllib.request.Request(f"{url}/v1/kv/bench/{i}", data=VALUE.encode(), method="PUT")
            urllib.request.urlopen(req).read()
        for workload, conns in WORKLOADS:
            script = RAFTKV_WRITE if workload == "write" else RAFTKV_READ
            results.append(_median_of(f"raftkv-{engine}", workload, conns, url, script, duration, repeats))
    return results


def bench_etcd(duration: int, repeats: int, base: Path) -> list[Result]:
    client_ports, peer_ports = free_ports(3), free_ports(3)
    names = [f"e{i}" for i in range(1, 4)]
    initial = ",".join(f"{n}=http://127.0.0.1:{p}" for n, p in zip(names, peer_ports))
    procs = []
    try:
        for name, cport, pport in zip(names, client_ports, peer_ports):
            log = open(base / f"{name}.log", "wb")
            procs.append(subprocess.Popen(
                ["etcd", "--name", name, "--data-dir", str(base / name),
                 "--listen-client-urls", f"http://127.0.0.1:{cport}",
                 "--advertise-client-urls", f"http://127.0.0.1:{cport}",
                 "--listen-peer-urls", f"http://127.0.0.1:{pport}",
                 "--initial-advertise-peer-urls", f"http://127.0.0.1:{pport}",
                 "--initial-cluster", initial, "--initial-cluster-state", "new",
                 "--initial-cluster-token", "bench"],
                stdout=log, stderr=subprocess.STDOUT,
            ))
        url = _etcd_leader_url(client_ports)
        for i in range(1, KEYS + 1):
            body = json.dumps({"key": base64.b64encode(f"bench/{i}".encode()).decode(),
                               "value": base64.b64encode(VALUE.encode()).decode()}).encode()
            urllib.request.urlopen(urllib.request.Request(f"{url}/v3/kv/put", data=body)).read()
        return [
            _median_of("etcd", workload, conns, url, _etcd_script(workload), duration, repeats)
            for workload, conns in WORKLOADS
        ]
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)


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


def _median_of(system: str, workload: str, conns: int, url: str, script: str, duration: int, repeats: int) -> Result:
    runs = [run_wrk(url, script, conns, duration) for _ in range(repeats)]
    return Result(
        system, workload, conns,
        statistics.median(r[0] for r in runs),
        statistics.median(r[1] for r in runs),
        statistics.median(r[2] for r in runs),
        sum(r[3] for r in runs),
    )


def table(results: list[Result]) -> str:
    lines = [
        "| system | workload | connections | requests/s | p50 ms | p99 ms | errors |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {r.system} | {r.workload} | {r.connections} | {r.requests_per_s:,.0f} | "
            f"{r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.errors} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", default="native", help="comma-separated raftkv engines to run")
    parser.add_argument("--etcd", action="store_true", help="also run etcd (needs the etcd binary)")
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per workload; the median is reported")
    parser.add_argument("--json", type=Path, help="write raw results here")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        parser.error("wrk is not installed (apt-get install wrk)")
    if args.etcd and shutil.which("etcd") is None:
        parser.error("etcd is not installed (apt-get install etcd-server)")
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="raftkv-bench-") as tmp:
        base = Path(tmp)
        for engine in filter(None, args.engines.split(",")):
            results += bench_raftkv(engine, args.duration, args.repeats, base)
        if args.etcd:
            results += bench_etcd(args.duration, args.repeats, base)
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
