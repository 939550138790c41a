"""The jepsen_style lock workload: its checker flags overlapping holds and
fencing tokens out of order, and a short run under kills is VALID."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from jepsen_style.checker.lock_checker import check_holds, check_locks
from jepsen_style.history import HistoryEvent, read_history
from jepsen_style.runner import RunConfig, run


def hold(hold_id: str, token: int, acquired: float, release: float, safe_until: float = 99.0) -> dict[str, Any]:
    return {"id": hold_id, "lease": "1", "token": token, "acquired": acquired, "release_invoked": release,
            "lease_safe_until": safe_until}


def test_holds_one_after_another_with_growing_tokens_are_valid() -> None:
    assert check_holds([hold("a", 3, 0.0, 1.0), hold("b", 5, 1.0, 2.0), hold("c", 9, 2.5, 3.0)]) == []


def test_a_hold_that_starts_before_another_ended_is_an_overlap() -> None:
    anomalies = check_holds([hold("a", 3, 0.0, 1.0), hold("b", 5, 0.9, 2.0)])
    assert len(anomalies) == 1 and anomalies[0].startswith("overlap: hold b (token 5) acquired at 0.900 s while hold a")


def test_an_overlap_after_the_first_lease_was_possibly_gone_is_not_flagged() -> None:
    # a stopped renewing: its lease was only certainly alive until 0.5 s.
    assert check_holds([hold("a", 3, 0.0, 1.0, safe_until=0.5), hold("b", 5, 0.9, 2.0)]) == []
    # An overlap with an earlier, longer hold is still found past a short one.
    anomalies = check_holds([hold("a", 1, 0.0, 5.0), hold("b", 2, 1.0, 1.5), hold("c", 3, 2.0, 3.0)])
    assert [a.split()[2] for a in anomalies] == ["b", "c"]


def test_tokens_that_do_not_grow_in_acquire_order_are_flagged() -> None:
    anomalies = check_holds([hold("a", 7, 0.0, 1.0), hold("b", 5, 1.5, 2.0)])
    assert anomalies == ["fencing: hold b acquired at 1.500 s got token 5, not above token 7 of hold a acquired at 0.000 s"]


def test_a_history_without_the_holds_report_is_unknown() -> None:
    events = [HistoryEvent(0, "invoke", "hold", "l", "0-1", 0.0), HistoryEvent(0, "ok", "hold", "l", "0-1", 1.0)]
    assert check_locks(events).valid is None


@pytest.mark.timeout(120)
def test_lock_run_with_kill_nemesis_is_valid(tmp_path: Path) -> None:
    out = tmp_path / "lock"
    config = RunConfig(workload="lock", nemeses=["kill"], time_s=15, concurrency=4, rate=20,
                       nodes=3, engine="native", seed=11, out=out, quiet_s=(1.0, 2.0), fault_s=(2.0, 4.0))
    result = run(config)
    assert result.exit_code == 0, result.summary
    assert result.results["nemesis"]["faults"] >= 1
    holds = next(e.value for e in read_history(out / "history.jsonl") if e.f == "read" and e.type == "ok")
    assert len(holds) >= 20
    assert len({h["lease"] for h in holds}) == len(holds)
