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
    pending: dict[int | str, tuple[HistoryEvent, Any]] = {}
    ops: list[Operation] = []
    for index, event in enumerate(events):
        if event.is_nemesis:
            continue
        where = f"event {index + 1} (process {event.process}, {event.type} {event.f})"
        if event.f not in REGISTER_FUNCTIONS:
            raise HistoryFormatError(f"{where}: unknown function for the register workload (expected read, write or cas)")
        if event.type == "invoke":
            if event.process in pending:
                raise HistoryFormatError(f"{where}: process invoked again while its previous call is still open")
            pending[event.process] = (event, _register_argument(event, where))
            continue
        if event.process not in pending:
            raise HistoryFormatError(f"{where}: completion without a matching invoke")
        invoke, argument = pending.pop(event.process)
        if invoke.f != event.f or invoke.key != event.key:
            raise HistoryFormatError(
                f"{where}: completes {invoke.f} on key {invoke.key!r} with {event.f} on key {event.key!r}"
            )
        if event.time < invoke.time:
            raise HistoryFormatError(f"{where}: completes at {event.time} before its invoke at {invoke.time}")
        op_input = (invoke.key, invoke.f, argument)
        if event.type == "ok":
            output = _freeze(event.value) if invoke.f == "read" else (True if invoke.f == "cas" else "ok")
            ops.append(Operation(event.process, op_input, invoke.time, output, event.time))
        elif event.type == "fail":
            if invoke.f == "cas":
                ops.append(Operation(event.process, op_input, invoke.time, False, event.time))
        elif invoke.f != "read":  # info: a read with unknown result constrains nothing
            ops.append(Operation(event.process, op_input, invoke.time, UNKNOWN, math.inf))
    for invoke, argument in pending.values():
        if invoke.f != "read":
            ops.append(Operation(invoke.process, (invoke.key, invoke.f, argument), invoke.time, UNKNOWN, math.inf))
    return ops


def _register_argument(event: HistoryEvent, where: str) -> Any:
    if event.f == "read":
        return None
    if event.f == "write":
        return _freeze(event.value)
    value = event.value
    if not isinstance(value, list) or len(value) != 2:
        raise HistoryFormatError(f"{where}: cas value must be [from, to], got {value!r}")
    return (_freeze(value[0]), _freeze(value[1]))


def _freeze(value: Any) -> Any:
    """Make JSON values hashable so they can be part of a model state."""
    if isinstance(value, list):
        return tuple(_freeze(item) for item in value)
    if isinstance(value, dict):
        return tuple(sorted((key, _freeze(item)) for key, item in value.items()))
    return value
