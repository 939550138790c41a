"""The history a test run records: one JSON object per line, one line per event.

    {"process": 3, "type": "invoke", "f": "cas", "key": "k1", "value": ["a", "b"], "time": 12.5}

`process` is a client number, or "nemesis" for fault injection (always type
"info"). `type` is "invoke" when a call starts, then "ok" (it happened),
"fail" (it definitely did not happen) or "info" (the outcome is unknown: it
may happen at any later time, or never). `time` is monotonic seconds.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, Literal

import orjson

from jepsen_style.checker.operation import UNKNOWN, Operation

EventType = Literal["invoke", "ok", "fail", "info"]
EVENT_TYPES: frozenset[str] = frozenset({"invoke", "ok", "fail", "info"})
NEMESIS = "nemesis"
_FIELDS = ("process", "type", "f", "key", "value", "time")


class HistoryFormatError(ValueError):
    """A history file or event is malformed; the message says where and why."""


@dataclass(frozen=True, slots=True)
class HistoryEvent:
    process: int | str
    type: EventType
    f: str
    key: str | None
    value: Any
    time: float
    # Fields beyond the six above are kept so a rewrite loses nothing.
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_nemesis(self) -> bool:
        return self.process == NEMESIS


def event_to_dict(event: HistoryEvent) -> dict[str, Any]:
    data: dict[str, Any] = dict(event.extra)
    data.update(process=event.process, type=event.type, f=event.f, key=event.key,
                value=event.value, time=event.time)
    return data


def event_from_dict(data: Any, where: str = "event") -> HistoryEvent:
    """Validate one decoded JSON object; raise `HistoryFormatError` naming `where`."""
    if not isinstance(data, dict):
        raise HistoryFormatError(f"{where}: expected a JSON object, got {type(data).__name__}")
    missing = [name for name in _FIELDS if name not in data]
    if missing:
        raise HistoryFormatError(f"{where}: missing field(s) {', '.join(missing)}")
    process = data["process"]
    if not ((isinstance(process, int) and not isinstance(process, bool)) or process == NEMESIS):
        raise HistoryFormatError(f'{where}: "process" must be an integer or "nemesis", got {process!r}')
    kind = data["type"]
    if kind not in EVENT_TYPES:
        raise HistoryFormatError(f'{where}: "type" must be one of invoke, ok, fail, info, got {kind!r}')
    if process == NEMESIS and kind != "info":
        raise HistoryFormatError(f'{where}: nemesis events must have type "info", got {kind!r}')
    f = data["f"]
    if not isinstance(f, str) or not f:
        raise HistoryFormatError(f'{where}: "f" must be a non-empty string, got {f!r}')
    key = data["key"]
    if key is not None and not isinstance(key, str):
        raise HistoryFormatError(f'{where}: "key" must be a string or null, got {key!r}')
    moment = data["time"]
    if isinstance(moment, bool) or not isinstance(moment, (int, float)) or not math.isfinite(moment):
        raise HistoryFormatError(f'{where}: "time" must be a finite number of seconds, got {moment!r}')
    extra = {name: value for name, value in data.items() if name not in _FIELDS}
    return HistoryEvent(process, kind, f, key, data["value"], float(moment), extra)


def dumps_event(event: HistoryEvent) -> bytes:
    """One JSON line, newline included."""
    return orjson.dumps(event_to_dict(event)) + b"\n"


def parse_history_lines(lines: Iterable[str | bytes], source: str = "<history>") -> Iterator[HistoryEvent]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{source}:{number}"
        try:
            data = orjson.loads(line)
        except orjson.JSONDecodeError as error:
            raise HistoryFormatError(f"{where}: not valid JSON ({error})") from None
        yield event_from_dict(data, where)


def read_history(path: str | os.PathLike[str]) -> list[HistoryEvent]:
    with open(path, "rb") as file:
        return list(parse_history_lines(file, str(path)))


def write_history(path: str | os.PathLike[str], events: Iterable[HistoryEvent]) -> None:
    """Write a whole history and fsync it, replacing any file at `path`."""
    with HistoryWriter(path, mode="wb") as writer:
        for event in events:
            writer.append(event)


class HistoryWriter:
    """Appends events as they happen; `sync()` makes what was written durable.

    Lines are written whole, so a crash leaves at most one torn last line.
    """

    def __init__(self, path: str | os.PathLike[str], mode: Literal["ab", "wb"] = "ab") -> None:
        self.path = Path(path)
        self._file: IO[bytes] = open(self.path, mode)

    def append(self, event: HistoryEvent) -> None:
        self._file.write(dumps_event(event))

    def sync(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if not self._file.closed:
            self.sync()
            self._file.close()

    def __enter__(self) -> "HistoryWriter":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# --- from events to operations ----------------------------------------------

CallOutcome = Literal["ok", "fail", "info", "open"]


@dataclass(frozen=True, slots=True)
class Call:
    """An invocation paired with its completion.

    `outcome` is "open" when the history ended before any completion arrived;
    like "info" it means the call may or may not have taken effect.
    `end` is the completion time (math.inf for "info" and "open").
    """

    process: int | str
    f: str
    key: str | None
    argument: Any
    result: Any
    outcome: CallOutcome
    start: float
    end: float

    @property
    def outcome_known(self) -> bool:
        return self.outcome in ("ok", "fail")


def pair_calls(events: Iterable[HistoryEvent]) -> list[Call]:
    """Pair each client's invoke with its completion, in completion order
    (calls still open at the end come last). Nemesis events are skipped.

    Raises `HistoryFormatError` for a completion without an invoke, a second
    invoke while one is open, or a completion that does not match its invoke.
    """
    pending: dict[int | str, HistoryEvent] = {}
    calls: list[Call] = []
    for index, event in enumerate(events):
        if event.is_nemesis:
            continue
        where = f"event {index + 1} (process {event.process}, {event.type} {event.f})"
        if event.type == "invoke":
            if event.process in pending:
                raise HistoryFormatError(f"{where}: process invoked again while its previous call is still open")
            pending[event.process] = event
            continue
        invoke = pending.pop(event.process, None)
        if invoke is None:
            raise HistoryFormatError(f"{where}: completion without a matching invoke")
        if invoke.f != event.f or invoke.key != event.key:
            raise HistoryFormatError(
                f"{where}: completes {invoke.f} on key {invoke.key!r} with {event.f} on key {event.key!r}"
            )
        if event.time < invoke.time:
            raise HistoryFormatError(f"{where}: completes at {event.time} before its invoke at {invoke.time}")
        end = event.time if event.type != "info" else math.inf
        calls.append(Call(event.process, invoke.f, invoke.key, invoke.value, event.value,
                          event.type, invoke.time, end))  # type: ignore[arg-type]
    for invoke in pending.values():
        calls.append(Call(invoke.process, invoke.f, invoke.key, invoke.value, None, "open", invoke.time, math.inf))
    return calls


REGISTER_FUNCTIONS = frozenset({"read", "write", "cas"})
WORKLOADS = ("register",)


def history_to_operations(events: Iterable[HistoryEvent], workload: str = "register") -> list[Operation]:
    """Pair invocations with completions into operations for a model.

    For the "register" workload (model: `keyed_register_model`), inputs are
    (key, "read", None), (key, "write", v) and (key, "cas", (from, to)); a
    failed write or read is dropped (it did not happen / constrains nothing),
    a failed cas is a completed cas that returned False, and an "info" or a
    call still open at the end has an unknown outcome.
    """
    if workload != "register":
        raise HistoryFormatError(f"unknown workload {workload!r}; supported: {', '.join(WORKLOADS)}")
    ops: list[Operation] = []
    for call in pair_calls(events):
        where = f"process {call.process} {call.f} at time {call.start}"
        if call.f not in REGISTER_FUNCTIONS:
            raise HistoryFormatError(f"{where}: unknown function for the register workload (expected read, write or cas)")
        op_input = (call.key, call.f, _register_argument(call, where))
        if call.outcome == "ok":
            output = freeze(call.result) if call.f == "read" else (True if call.f == "cas" else "ok")
            ops.append(Operation(call.process, op_input, call.start, output, call.end))
        elif call.outcome == "fail":
            if call.f == "cas":
                ops.append(Operation(call.process, op_input, call.start, False, call.end))
        elif call.f != "read":  # a read with unknown result constrains nothing
            ops.append(Operation(call.process, op_input, call.start, UNKNOWN, math.inf))
    return ops


def _register_argument(call: Call, where: str) -> Any:
    if call.f == "read":
        return None
    if call.f == "write":
        return freeze(call.argument)
    value = call.argument
    if not isinstance(value, list) or len(value) != 2:
        raise HistoryFormatError(f"{where}: cas value must be [from, to], got {value!r}")
    return (freeze(value[0]), freeze(value[1]))


def freeze(value: Any) -> Any:
    """Make a decoded JSON value hashable (lists become tuples, objects sorted pairs)."""
    if isinstance(value, list):
        return tuple(freeze(item) for item in value)
    if isinstance(value, dict):
        return tuple(sorted((key, freeze(item)) for key, item in value.items()))
    return value


