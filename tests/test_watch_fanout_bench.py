"""bench/watch_fanout.py --quick against a real raftkv cluster: every watcher
gets every acknowledged write exactly once, and the figures are filled in."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_fanout_delivers_every_write_to_every_watcher(tmp_path: Path) -> None:
    out = tmp_path / "fanout.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "watch_fanout.py"), "--quick", "--systems", "raftkv",
         "--duration", "1", "--json", str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [r["phase"] for r in rows] == ["200/s", "max, 4 conns"]
    for row in rows:
        assert row["system"] == "raftkv" and row["watchers"] == 30
        assert row["writes"] > 0 and row["write_errors"] == 0
        assert row["events"] == row["writes"] * row["watchers"]
        assert row["lost"] == 0 and row["duplicated"] == 0 and row["broken_streams"] == 0
        assert row["events_per_s"] > 0 and row["rss_mb"] > 0
        assert 0 < row["p50_ms"] <= row["p99_ms"] <= row["max_ms"] and math.isfinite(row["max_ms"])
    assert "| raftkv | 200/s | 30 |" in done.stdout
