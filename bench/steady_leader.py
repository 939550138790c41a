"""Leader stability under steady write load: no leader change without faults.

Starts a 3-node raftkv cluster, drives writes at the leader with `wrk`
(64 connections, 64-byte values over 1000 keys) for --duration seconds while
polling every node's /v1/status, and reports every term or leader change it
saw. Exit 0 when there was none.

    python bench/steady_leader.py --engine native --duration 300
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.cluster_bench import RAFTKV_WRITE  # noqa: E402
from raftkv.local_cluster import LocalCluster  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", default="native")
    parser.add_argument("--duration", type=int, default=300, help="seconds of load")
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        parser.error("wrk is not installed (apt-get install wrk)")
    with tempfile.TemporaryDirectory(prefix="raftkv-steady-") as tmp, LocalCluster(
        Path(tmp), engine=args.engine
    ) as cluster:
        leader = cluster.wait_ready(60)
        first = cluster.status(leader)
        assert first is not None
        changes: list[str] = []
        samples = 0
        stop = threading.Event()

        def watch() -> None:
            nonlocal samples
            seen = (first["term"], leader)
            while not stop.is_set():
                for node in cluster.nodes:
                    status = cluster.status(node.node_id, timeout=2)
                    if status is None:
                        changes.append(f"{time.strftime('%X')} {node.node_id} did not answer /v1/status")
                        continue
                    samples += 1
                    now = (status["term"], status["leader_id"])
                    if now != seen:
                        changes.append(f"{time.strftime('%X')} {node.node_id}: term/leader {seen} -> {now}")
                        seen = now
                time.sleep(0.2)

        watcher = threading.Thread(target=watch)
        watcher.start()
        script = Path(tmp) / "write.lua"
        script.write_text(RAFTKV_WRITE)
        wrk = subprocess.run(
            ["wrk", "-t1", f"-c{args.connections}", f"-d{args.duration}s", "--latency", "-s", str(script),
             cluster.node(leader).url],
            capture_output=True, text=True,
        )
        stop.set()
        watcher.join()
    print(wrk.stdout)
    print(f"{samples} status samples over {args.duration}s; term {first['term']}, leader {leader} at the start")
    if changes:
        print(f"{len(changes)} leader/term changes:")
        print("\n".join(changes))
        return 1
    print("no leader change")
    return 0


if __name__ == "__main__":
    sys.exit(main())
