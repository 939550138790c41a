"""bench/scale_bench.py: its wrk parsing, and its --quick run end to end
(a real 3-node raftkv cluster driven by wrk through every phase)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.scale_bench import parse_wrk, phase_pauses

ROOT = Path(__file__).resolve().parent.parent

WRK_OUTPUT = """\
Running 1s test @ http://127.0.0.1:7001
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    13.40ms    6.20ms  60.01ms   80.00%
    Req/Sec     1.10k   100.00     1.20k    90.00%
  Latency Distribution
     50%   12.50ms
     75%   16.00ms
     90%   20.25ms
     99%    1.05s
  1094 requests in 2.00s, 100.00KB read
  Socket errors: connect 0, read 1, write 0, timeout 2
  Non-2xx or 3xx responses: 5
Requests/sec:   1094.00
Transfer/sec:    100.00KB
"""


def test_parse_wrk_reads_latency_percentiles_and_errors() -> None:
    result = parse_wrk(WRK_OUTPUT)
    assert result.requests == 1094
    assert result.seconds == pytest.approx(2.0)
    assert result.requests_per_s == pytest.approx(547.0)
    assert (result.p50_ms, result.p90_ms, result.p99_ms) == (12.5, 20.25, 1050.0)
    assert result.non_2xx == 5
    assert result.socket_errors == 3


def test_parse_wrk_reads_a_run_length_in_minutes() -> None:
    # wrk writes 60 s and more as minutes ("1.00m").
    result = parse_wrk(WRK_OUTPUT.replace("1094 requests in 2.00s", "420000 requests in 1.00m"))
    assert result.seconds == pytest.approx(60.0)
    assert result.requests_per_s == pytest.approx(7000.0)


def test_phase_pauses_counts_the_phase_and_finds_its_longest_pause() -> None:
    before = {"n1": {"max_ms": 80.0, "over_10ms": 5, "recent": [[100.0, 80.0]]},
              "n2": {"max_ms": 12.0, "over_10ms": 1, "recent": [[100.0, 12.0]]}}
    after = {"n1": {"max_ms": 80.0, "over_10ms": 7, "recent": [[100.0, 80.0], [200.5, 15.0], [201.0, 11.0]]},
             "n2": {"max_ms": 30.0, "over_10ms": 2, "recent": [[100.0, 12.0], [201.0, 30.0]]}}
    # n1's all-time maximum is older than the phase: its longest is the 15 ms one.
    assert phase_pauses(before, after, since=200.0) == {
        "n1": {"over_10ms": 2, "max_ms": 15.0}, "n2": {"over_10ms": 1, "max_ms": 30.0}
    }


@pytest.mark.skipif(shutil.which("wrk") is None, reason="needs wrk")
def test_quick_run_goes_through_every_phase(tmp_path: Path) -> None:
    out = tmp_path / "scale.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "scale_bench.py"), "--quick", "--json", str(out)],
        capture_output=True, text=True, timeout=180, cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "| follower rebuild from empty, s |" in run.stdout
    figures = json.loads(out.read_text())
    (report,) = figures["systems"]
    assert report["system"] == "raftkv"
    assert report["new_keys"]["requests"] > 0
    assert report["new_keys"]["non_2xx"] == 0
    # --quick fills to 20,000 keys past the new-key phase, in txns of 100.
    assert report["fill"] is not None and report["fill"]["non_2xx"] == 0
    assert report["keys"] >= 20_000
    assert set(report["at_size"]["nodes"]) == {"n1", "n2", "n3"}
    assert all(node["rss"] > 0 and node["disk"] > 0 for node in report["at_size"]["nodes"].values())
    assert 0 < report["restart_s"] < 60
    # The wiped follower is timed until it holds the leader's revision.
    assert report["rebuild"]["revision"] >= report["keys"] // 100
    assert 0 < report["rebuild"]["seconds"] < 60
    assert report["big_values"]["requests"] > 0 and report["big_values"]["non_2xx"] == 0
    assert report["big_values"]["bytes_written"] > 0
    # Event-loop pauses per phase, from every node's /v1/status.
    for phase in ("new keys", "fill", "big values"):
        assert set(report["loop_pauses"][phase]) == {"n1", "n2", "n3"}
        assert all(p["over_10ms"] >= 0 and p["max_ms"] >= 0 for p in report["loop_pauses"][phase].values())
    assert "| new keys: loop pauses over 10 ms per node (longest ms) |" in run.stdout
