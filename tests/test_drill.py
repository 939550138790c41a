"""`drill failover`: figures and table (pure), and short real drills."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from jepsen_style.cli import main
from jepsen_style.drill import DrillConfig, run_drill
from jepsen_style.report.drill_summary import RoundResult, drill_json, format_table, round_of, spread

REPO = Path(__file__).resolve().parents[1]


def test_spread_ignores_missing_values() -> None:
    assert spread([0.3, None, 0.1, 0.2]) == {"median": 0.2, "p99": 0.3, "worst": 0.3}
    assert spread([None]) == {"median": None, "p99": None, "worst": None}


def test_round_of_uses_fault_times_as_boundaries() -> None:
    faults = [10.0, 20.0]
    assert [round_of(t, faults) for t in (5.0, 10.0, 15.0, 25.0)] == [0, 1, 1, 2]


def test_table_shows_each_round_and_the_spread() -> None:
    rounds = [RoundResult(1, "kill", "n1", "n2", 0.4, 0.5, 10, 0),
              RoundResult(2, "kill", "n2", None, None, None, 3, 1, error="no new leader within 20 s")]
    result = drill_json(rounds, {}, acknowledged=13, lost=["drill/w0/1"], lost_before_first_fault=0,
                        harness_errors=[])
    table = format_table(result)
    assert "400" in table and "500" in table and "no new leader" in table
    assert "all survived: NO: 1 lost" in table
    assert result["rounds_failed"] == 1 and result["leader_s"]["worst"] == 0.4


def test_bad_rounds_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit:
        main(["drill", "failover", "--rounds", "0"])
    assert exit.value.code == 2 and "must be more than 0" in capsys.readouterr().err


def test_cluster_that_will_not_start_is_a_harness_failure(tmp_path: Path) -> None:
    result = run_drill(DrillConfig(mode="kill", rounds=1, engine="native", out=tmp_path,
                                   node_args=("--timeout", "soon")))
    assert result.exit_code == 2
    saved = json.loads((tmp_path / "drill.json").read_text())
    assert "did not start" in saved["harness_errors"][0] and saved["rounds"] == []


@pytest.mark.timeout(90)
def test_kill_drill_three_rounds(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "jepsen_style", "drill", "failover", "--mode", "kill", "--rounds", "3",
         "--engine", "native", "--out", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=80)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all survived: yes" in result.stdout and "median" in result.stdout
    saved = json.loads((tmp_path / "drill.json").read_text())
    assert len(saved["rounds"]) == 3 and saved["lost_writes"] == 0
    assert saved["acknowledged_writes"] > 50
    for r in saved["rounds"]:
        assert r["new_leader"] not in (None, r["old_leader"])
        assert 0 < r["leader_s"] < 20 and 0 < r["write_stall_s"] < 20
    assert saved["write_stall_s"]["worst"] >= saved["write_stall_s"]["median"]
    assert (tmp_path / "logs" / "n1.log").exists()
    # The patient client (one write at a time to a follower) got through
    # after every kill, well within its 5 s request timeout.
    patient = saved["patient_client"]
    assert "patient client" in result.stdout
    assert [r["round"] for r in patient["rounds"]] == [1, 2, 3]
    for r, p in zip(saved["rounds"], patient["rounds"]):
        assert p["node"] != r["old_leader"]
        assert 0 < p["stall_s"] < 3, patient
    assert patient["acknowledged_writes"] > 10


@pytest.mark.timeout(60)
def test_transfer_drill_moves_leadership(tmp_path: Path) -> None:
    result = run_drill(DrillConfig(mode="transfer", rounds=2, engine="native", out=tmp_path))
    assert result.exit_code == 0, result.table
    assert all(r["new_leader"] != r["old_leader"] and r["error"] is None for r in result.result["rounds"])
