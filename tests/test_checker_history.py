from __future__ import annotations

import math
from pathlib import Path

import orjson
import pytest

from jepsen_style.checker.linearizability import check
from jepsen_style.checker.models import keyed_register_model
from jepsen_style.checker.operation import UNKNOWN, Operation
from jepsen_style.history import (
    HistoryEvent,
    HistoryFormatError,
    HistoryWriter,
    history_to_operations,
    pair_calls,
    read_history,
    write_history,
)


def ev(process: int | str, type: str, f: str, key: str | None, value: object, time: float) -> HistoryEvent:
    return HistoryEvent(process, type, f, key, value, time)  # type: ignore[arg-type]


def test_write_then_read_round_trips_through_a_real_file(tmp_path: Path) -> None:
    events = [
        ev(0, "invoke", "write", "k", "v1", 0.5),
        ev("nemesis", "info", "start-partition", None, {"isolated": ["n1"]}, 0.7),
        ev(0, "ok", "write", "k", "v1", 1.0),
        ev(1, "invoke", "cas", "k", ["v1", "v2"], 1.5),
        ev(1, "info", "cas", "k", None, 2.0),
    ]
    path = tmp_path / "history.jsonl"
    write_history(path, events)
    assert read_history(path) == events


def test_writer_appends_and_keeps_extra_fields(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    first = HistoryEvent(0, "invoke", "read", "k", None, 1.0, {"node": "n2"})
    with HistoryWriter(path) as writer:
        writer.append(first)
    with HistoryWriter(path) as writer:
        writer.append(ev(0, "ok", "read", "k", None, 2.0))
    events = read_history(path)
    assert events[0] == first
    assert events[0].extra == {"node": "n2"}
    assert len(events) == 2


def _write_lines(tmp_path: Path, *lines: bytes) -> Path:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


GOOD = {"process": 0, "type": "invoke", "f": "read", "key": "k", "value": None, "time": 1.0}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"process": "bob"}, '"process" must be an integer or "nemesis"'),
        ({"process": True}, '"process" must be an integer'),
        ({"type": "done"}, '"type" must be one of'),
        ({"process": "nemesis", "type": "invoke"}, 'nemesis events must have type "info"'),
        ({"f": ""}, '"f" must be a non-empty string'),
        ({"key": 5}, '"key" must be a string or null'),
        ({"time": "soon"}, '"time" must be a finite number'),
        ({"time": None}, '"time" must be a finite number'),
    ],
)
def test_malformed_event_gets_a_clear_error_with_its_line(tmp_path: Path, change: dict, message: str) -> None:
    path = _write_lines(tmp_path, orjson.dumps(GOOD), orjson.dumps({**GOOD, **change}))
    with pytest.raises(HistoryFormatError, match=message) as info:
        read_history(path)
    assert f"{path}:2" in str(info.value)


def test_missing_field_and_bad_json_are_reported(tmp_path: Path) -> None:
    without_time = {k: v for k, v in GOOD.items() if k != "time"}
    with pytest.raises(HistoryFormatError, match="missing field\\(s\\) time"):
        read_history(_write_lines(tmp_path, orjson.dumps(without_time)))
    with pytest.raises(HistoryFormatError, match="bad.jsonl:1: not valid JSON"):
        read_history(_write_lines(tmp_path, b'{"process": 0,'))
    with pytest.raises(HistoryFormatError, match="expected a JSON object"):
        read_history(_write_lines(tmp_path, b"[1, 2]"))


def test_register_workload_becomes_operations() -> None:
    events = [
        ev(0, "invoke", "write", "k", "a", 0.0),
        ev(0, "ok", "write", "k", "a", 1.0),
        ev(1, "invoke", "cas", "k", ["a", "b"], 2.0),
        ev(2, "invoke", "read", "k", None, 2.1),
        ev(1, "fail", "cas", "k", ["a", "b"], 3.0),
        ev(2, "ok", "read", "k", "a", 3.1),
        ev(3, "invoke", "write", "k", "c", 4.0),
        ev(3, "info", "write", "k", None, 5.0),
        ev(4, "invoke", "read", "k", None, 6.0),
        ev(4, "fail", "read", "k", None, 7.0),
        ev(5, "invoke", "write", "j", "z", 8.0),
        ev(6, "invoke", "read", "k", None, 9.0),
    ]
    ops = history_to_operations(events, "register")
    assert ops == [
        Operation(0, ("k", "write", "a"), 0.0, "ok", 1.0),
        Operation(1, ("k", "cas", ("a", "b")), 2.0, False, 3.0),
        Operation(2, ("k", "read", None), 2.1, "a", 3.1),
        Operation(3, ("k", "write", "c"), 4.0, UNKNOWN, math.inf),
        Operation(5, ("j", "write", "z"), 8.0, UNKNOWN, math.inf),
    ]
    # The failed cas says the value was not "a", but it was: a violation.
    assert check(ops, keyed_register_model()).verdict == "not-linearizable"


@pytest.mark.parametrize(
    ("events", "message"),
    [
        ([ev(0, "ok", "read", "k", None, 1.0)], "completion without a matching invoke"),
        ([ev(0, "invoke", "read", "k", None, 1.0), ev(0, "invoke", "read", "k", None, 2.0)],
         "invoked again while its previous call is still open"),
        ([ev(0, "invoke", "read", "k", None, 1.0), ev(0, "ok", "write", "k", None, 2.0)],
         "completes read on key 'k' with write"),
        ([ev(0, "invoke", "read", "k", None, 1.0), ev(0, "ok", "read", "j", None, 2.0)],
         "completes read on key 'k' with read on key 'j'"),
        ([ev(0, "invoke", "read", "k", None, 5.0), ev(0, "ok", "read", "k", None, 2.0)],
         "before its invoke"),
    ],
)
def test_pairing_errors_are_clear(events: list[HistoryEvent], message: str) -> None:
    with pytest.raises(HistoryFormatError, match=message):
        pair_calls(events)


def test_register_workload_errors_are_clear() -> None:
    with pytest.raises(HistoryFormatError, match="cas value must be \\[from, to\\]"):
        history_to_operations([ev(0, "invoke", "cas", "k", "a", 1.0)])
    with pytest.raises(HistoryFormatError, match="unknown function for the register workload"):
        history_to_operations([ev(0, "invoke", "add", "k", 1, 1.0)])
    with pytest.raises(HistoryFormatError, match="unknown workload 'bank'"):
        history_to_operations([], "bank")


def test_json_values_become_hashable() -> None:
    events = [ev(0, "invoke", "write", "k", [1, {"a": 2}], 0.0), ev(0, "ok", "write", "k", None, 1.0),
              ev(0, "invoke", "read", "k", None, 2.0), ev(0, "ok", "read", "k", [1, {"a": 2}], 3.0)]
    ops = history_to_operations(events)
    assert check(ops, keyed_register_model()).verdict == "linearizable"
