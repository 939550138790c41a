"""How long a new node takes to join a loaded cluster and be promoted.

A 3-node LocalCluster gets N keys (100-byte values, 100 per transaction),
then `serve --join` starts a 4th node; the figures are the time from its
start to /readyz 200 (caught up as a learner) and to a successful
promote. RAFTKV_SNAPSHOT_EVERY / RAFTKV_SNAPSHOT_RETAIN in the environment
decide whether it catches up from entries or from a snapshot.

    .venv/bin/python bench/join_catch_up.py 200000
"""
from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from raftkv.local_cluster import LocalCluster  # noqa: E402
from tests.http import call, call_json  # noqa: E402


def main(keys: int) -> None:
    base = Path(tempfile.mkdtemp(prefix="join-bench-"))
    try:
        with LocalCluster(base, nodes=3) as c:
            url = c.node(c.wait_ready()).url
            started = time.monotonic()
            for i in range(0, keys, 100):
                ops = [{"op": "put", "key": f"k/{j:08d}", "value": "x" * 100} for j in range(i, min(keys, i + 100))]
                resp = call_json("POST", f"{url}/v1/txn", {"compare": [], "success": ops})
                assert resp.status == 200, resp.body
            load = time.monotonic() - started
            joined_at = time.monotonic()
            node = c.add_node("n4")
            while not c.is_ready("n4", 0.5):
                time.sleep(0.05)
            ready = time.monotonic() - joined_at
            while call("POST", f"{url}/v1/members/n4/promote").status != 200:
                time.sleep(0.05)
            promoted = time.monotonic() - joined_at
            by_snapshot = "installed" in node.log_path.read_text()
            print(f"keys={keys} load={load:.1f}s join->ready={ready:.2f}s join->promoted={promoted:.2f}s "
                  f"caught_up_from={'snapshot' if by_snapshot else 'entries'}")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000)
