"""The jepsen_style watch workload: its checker catches broken streams and
histories, and a short run under kills and partitions is VALID."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from jepsen_style.checker.watch_checker import check_watch
from jepsen_style.history import HistoryEvent, read_history
from jepsen_style.runner import RunConfig, run

HISTORY = [[1, "w/0", "0-1"], [2, "w/1", "1-1"], [3, "w/0", None], [4, "w/1", "0-2"]]


def history(watchers: dict[str, dict[str, Any]], changes: list[list[Any]] = HISTORY,
            puts: list[tuple[list[Any], str]] | None = None) -> list[HistoryEvent]:
    """Writes (all acknowledged unless said), the history read, then each watcher's report."""
    events: list[HistoryEvent] = []
    clock = 0.0

    def call(process: int, f: str, key: str, argument: Any, outcome: str, result: Any) -> None:
        nonlocal clock
        events.append(HistoryEvent(process, "invoke", f, key, argument, clock))
        events.append(HistoryEvent(process, outcome, f, key, result, clock + 0.5))  # type: ignore[arg-type]
        clock += 1

    if puts is None:
        puts = [([key, value], "ok") for _rev, key, value in changes if value is not None]
    for argument, outcome in puts:
        call(0, "put", "w/", argument, outcome, argument)
    call(0, "delete", "w/", ["w/0", None], "ok", ["w/0", None])
    call(9, "read", "history", None, "ok", {"revision": changes[-1][0], "changes": changes})
    for name, report in watchers.items():
        call(9, "read", name, None, "ok", report)
    return events


def report(events: list[list[Any]], reached: int = 4) -> dict[str, Any]:
    return {"events": events, "reached": reached, "reconnects": 1, "compacted": False}


def test_watchers_that_saw_the_committed_history_are_valid() -> None:
    result = check_watch(history({"watcher/0": report(HISTORY), "watcher/1": report(HISTORY + [[5, "w/2", "x"]], 5)}))
    assert result.valid, result.anomalies
    assert result.checked == 2


@pytest.mark.parametrize(
    "events, reached, finding",
    [
        ([HISTORY[0], HISTORY[2], HISTORY[3]], 4, "gap: never received the committed change revision 2 (put w/1 = '1-1')"),
        ([HISTORY[0], HISTORY[1], HISTORY[1], HISTORY[2], HISTORY[3]], 4, "duplicate: received more than once revision 2"),
        ([HISTORY[0], HISTORY[2], HISTORY[1], HISTORY[3]], 4, "reorder: received revision 2 (put w/1 = '1-1') after revision 3"),
        ([HISTORY[0], [2, "w/1", "9-9"], HISTORY[2], HISTORY[3]], 4, "phantom: received a change that is not in the committed history revision 2 (put w/1 = '9-9')"),
        (HISTORY[:2], 2, "stopped at revision 2, before the final revision 4"),
    ],
)
def test_a_broken_stream_is_invalid(events: list[list[Any]], reached: int, finding: str) -> None:
    result = check_watch(history({"watcher/0": report(HISTORY), "watcher/1": report(events, reached)}))
    assert not result.valid
    assert any(a.startswith("watcher/1: " + finding) for a in result.anomalies), result.anomalies
    assert not any(a.startswith("watcher/0") for a in result.anomalies)


def test_a_history_that_lost_a_write_or_invented_one_is_invalid() -> None:
    changes = [[1, "w/0", "0-1"], [2, "w/1", "ghost"]]
    puts = [(["w/0", "0-1"], "ok"), (["w/1", "1-1"], "ok"), (["w/1", "ghost"], "fail")]
    result = check_watch(history({"watcher/0": report(changes, 2)}, changes, puts))
    assert sorted(result.anomalies) == [
        "history: holds 'ghost', which no put that could have succeeded wrote",
        "history: the acknowledged put of '1-1' to 'w/1' is not in it (lost)",
    ]
    unread = [e for e in history({}) if e.key != "history"]
    assert "no successful read of the committed history" in check_watch(unread).anomalies[0]


@pytest.mark.timeout(120)
def test_watch_run_with_kill_and_partition_nemeses_is_valid(tmp_path: Path) -> None:
    out = tmp_path / "watch"
    config = RunConfig(workload="watch", nemeses=["kill", "partition"], time_s=15, concurrency=4, rate=30,
                       nodes=3, engine="native", seed=7, out=out, quiet_s=(1.0, 2.0), fault_s=(2.0, 4.0))
    result = run(config)
    assert result.exit_code == 0, result.summary
    assert result.results["nemesis"]["faults"] >= 2
    reads = {e.key: e.value for e in read_history(out / "history.jsonl") if e.f == "read" and e.type == "ok"}
    committed = reads["history"]["changes"]
    assert len(committed) > 100 and any(value is None for _r, _k, value in committed)  # puts and deletes
    watchers = [reads[f"watcher/{n}"] for n in range(3)]
    assert all(len(w["events"]) >= len(committed) for w in watchers)
    assert sum(w["reconnects"] for w in watchers) >= 1  # some stream broke and resumed elsewhere


def test_a_store_history_that_does_not_add_up_is_invalid() -> None:
    events = history({"watcher/0": report(HISTORY)})
    read = next(e for e in events if e.key == "history" and e.type == "ok")
    read.value["inconsistent"] = "revision 3 changed nothing under w/ (or several keys)"
    assert check_watch(events).anomalies == ["history: revision 3 changed nothing under w/ (or several keys)"]
