"""Readers that turn recorded histories into operations for the checker.

Formats:
  jepsen-log    Jepsen's log lines for one register (`INFO  jepsen.util - 3\t:invoke\t:cas\t[1 4]`);
                fields are separated by tabs or runs of spaces, as Jepsen and Porcupine read them.
  porcupine-kv  EDN-like maps, one per line, for a get/put/append key-value store.
  jsonl         our harness's JSON-lines history (see `jepsen_style.history`).
Time is the line number for the first two formats (only order matters).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Callable

from jepsen_style.checker.models import Model, keyed_register_model, kv_model, register_model
from jepsen_style.checker.operation import UNKNOWN, Operation
from jepsen_style.history import HistoryFormatError, history_to_operations, parse_history_lines

__all__ = [
    "FORMATS",
    "HistoryFormat",
    "HistoryFormatError",
    "load_history",
    "parse_edn",
    "parse_jepsen_log",
    "parse_jsonl",
    "parse_porcupine_kv",
]


@dataclass(frozen=True, slots=True)
class Keyword:
    """An EDN keyword such as `:timed-out` (kept distinct from strings)."""

    name: str

    def __str__(self) -> str:
        return ":" + self.name


# --- a small EDN reader (nil, booleans, numbers, strings, keywords, vectors, maps) ---

_DELIMITERS = frozenset(" \t\r\n,[](){}\"")


def parse_edn(text: str) -> Any:
    """Parse one EDN value; vectors become tuples, maps dicts keyed by Keyword/str."""
    value, end = _edn_value(text, _skip_space(text, 0))
    end = _skip_space(text, end)
    if end != len(text):
        raise ValueError(f"unexpected text after value at column {end + 1}: {text[end:end + 20]!r}")
    return value


def _skip_space(text: str, at: int) -> int:
    while at < len(text) and text[at] in " \t\r\n,":
        at += 1
    return at


def _edn_value(text: str, at: int) -> tuple[Any, int]:
    if at >= len(text):
        raise ValueError("unexpected end of input")
    first = text[at]
    if first == '"':
        return _edn_string(text, at)
    if first in "[(":
        closing = "]" if first == "[" else ")"
        items, at = _edn_sequence(text, at + 1, closing)
        return tuple(items), at
    if first == "{":
        items, at = _edn_sequence(text, at + 1, "}")
        if len(items) % 2:
            raise ValueError("map literal has an odd number of forms")
        return dict(zip(items[::2], items[1::2])), at
    end = at
    while end < len(text) and text[end] not in _DELIMITERS:
        end += 1
    token = text[at:end]
    if not token:
        raise ValueError(f"unexpected {first!r} at column {at + 1}")
    return _edn_atom(token), end


def _edn_sequence(text: str, at: int, closing: str) -> tuple[list[Any], int]:
    items: list[Any] = []
    while True:
        at = _skip_space(text, at)
        if at >= len(text):
            raise ValueError(f"missing {closing!r}")
        if text[at] == closing:
            return items, at + 1
        item, at = _edn_value(text, at)
        items.append(item)


_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t", "r": "\r"}


def _edn_string(text: str, at: int) -> tuple[str, int]:
    chars: list[str] = []
    at += 1
    while at < len(text):
        char = text[at]
        if char == '"':
            return "".join(chars), at + 1
        if char == "\\":
            at += 1
            if at >= len(text) or text[at] not in _ESCAPES:
                raise ValueError(f"bad escape in string at column {at + 1}")
            chars.append(_ESCAPES[text[at]])
        else:
            chars.append(char)
        at += 1
    raise ValueError("unterminated string")


def _edn_atom(token: str) -> Any:
    if token == "nil":
        return None
    if token == "true":
        return True
    if token == "false":
        return False
    if token.startswith(":") and len(token) > 1:
        return Keyword(token[1:])
    try:
        return int(token)
    except ValueError:
        pass
    try:
        return float(token)
    except ValueError:
        raise ValueError(f"cannot read {token!r}") from None


# --- pairing invocations with completions -----------------------------------

class _Pairing:
    """Tracks the open call of each process while a log is read."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.open: dict[Any, tuple[str, Any, float, int]] = {}

    def invoke(self, process: Any, f: str, argument: Any, moment: float, line: int) -> None:
        if process in self.open:
            raise HistoryFormatError(
                f"{self.source}:{line}: process {process} invokes {f} while its call from line "
                f"{self.open[process][3]} is still open"
            )
        self.open[process] = (f, argument, moment, line)

    def complete(self, process: Any, f: str, line: int) -> tuple[Any, float]:
        if process not in self.open:
            raise HistoryFormatError(f"{self.source}:{line}: process {process} completes {f} without an invoke")
        open_f, argument, moment, _ = self.open.pop(process)
        if open_f != f:
            raise HistoryFormatError(f"{self.source}:{line}: process {process} completes {f} but invoked {open_f}")
        return argument, moment


# --- jepsen-log ---------------------------------------------------------------

_JEPSEN_MARKER = "jepsen.util - "


def parse_jepsen_log(text: str, source: str = "<jepsen-log>") -> list[Operation]:
    """Operations for `register_model` from Jepsen's log of one register."""
    pairing = _Pairing(source)
    ops: list[Operation] = []
    seen_events = 0
    for number, line in enumerate(text.splitlines(), start=1):
        marker = line.find(_JEPSEN_MARKER)
        if marker < 0:
            continue  # other log output
        # Any run of whitespace separates fields; the value is the rest of the
        # line, since an EDN value such as `[1 4]` holds spaces of its own.
        fields = line[marker + len(_JEPSEN_MARKER):].split(None, 3)
        where = f"{source}:{number}"
        if len(fields) != 4:
            raise HistoryFormatError(
                f"{where}: expected 4 fields separated by tabs or spaces (process, type, f, value), got {len(fields)}"
            )
        process_text, kind, f, value_text = fields
        if process_text.startswith(":"):
            continue  # :nemesis and other non-client processes
        try:
            process = int(process_text)
            value = parse_edn(value_text)
        except ValueError as error:
            raise HistoryFormatError(f"{where}: {error}") from None
        kind, f = kind.removeprefix(":"), f.removeprefix(":")
        if f not in ("read", "write", "cas"):
            raise HistoryFormatError(f"{where}: unknown function {f!r} (expected :read, :write or :cas)")
        seen_events += 1
        moment = float(number)
        if kind == "invoke":
            argument: Any = None
            if f == "write":
                argument = value
            elif f == "cas":
                if not (isinstance(value, tuple) and len(value) == 2):
                    raise HistoryFormatError(f"{where}: cas value must be [from to], got {value_text!r}")
                argument = value
            pairing.invoke(process, f, argument, moment, number)
            continue
        if kind not in ("ok", "fail", "info"):
            raise HistoryFormatError(f"{where}: unknown type {kind!r} (expected :invoke, :ok, :fail or :info)")
        argument, called = pairing.complete(process, f, number)
        if kind == "ok":
            output = value if f == "read" else (True if f == "cas" else "ok")
            ops.append(Operation(process, (f, argument), called, output, moment))
        elif kind == "fail":
            # A failed cas answered "not swapped"; a failed read or write did nothing.
            if f == "cas":
                ops.append(Operation(process, (f, argument), called, False, moment))
        elif f != "read":
            ops.append(Operation(process, (f, argument), called, UNKNOWN, math.inf))
    if seen_events == 0:
        raise HistoryFormatError(f"{source}: no Jepsen operation lines found (is this the right --format?)")
    for process, (f, argument, called, _) in pairing.open.items():
        if f != "read":
            ops.append(Operation(process, (f, argument), called, UNKNOWN, math.inf))
    return ops


# --- porcupine-kv ---------------------------------------------------------------

_KV_FUNCTIONS = ("get", "put", "append")


def parse_porcupine_kv(text: str, source: str = "<porcupine-kv>") -> list[Operation]:
    """Operations for `kv_model` from EDN maps with :process :type :f :key :value."""
    pairing = _Pairing(source)
    ops: list[Operation] = []
    seen_events = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{source}:{number}"
        try:
            event = parse_edn(line)
        except ValueError as error:
            raise HistoryFormatError(f"{where}: {error}") from None
        if not isinstance(event, dict):
            raise HistoryFormatError(f"{where}: expected a map {{:process ... }}, got {line[:40]!r}")
        fields = {str(k).removeprefix(":"): v for k, v in event.items()}
        missing = [name for name in ("process", "type", "f", "key", "value") if name not in fields]
        if missing:
            raise HistoryFormatError(f"{where}: missing {', '.join(':' + m for m in missing)}")
        process, kind, f, key, value = (fields[n] for n in ("process", "type", "f", "key", "value"))
        kind, f = str(kind).removeprefix(":"), str(f).removeprefix(":")
        if f not in _KV_FUNCTIONS:
            raise HistoryFormatError(f"{where}: unknown function {f!r} (expected :get, :put or :append)")
        if not isinstance(key, str):
            raise HistoryFormatError(f"{where}: :key must be a string, got {key!r}")
        if value is not None and not isinstance(value, str):
            raise HistoryFormatError(f"{where}: :value must be a string or nil, got {value!r}")
        seen_events += 1
        moment = float(number)
        if kind == "invoke":
            if f != "get" and value is None:
                raise HistoryFormatError(f"{where}: {f} needs a string :value")
            pairing.invoke(process, f, (key, f, value if f != "get" else None), moment, number)
            continue
        if kind not in ("ok", "fail", "info"):
            raise HistoryFormatError(f"{where}: unknown :type {kind!r} (expected :invoke, :ok, :fail or :info)")
        op_input, called = pairing.complete(process, f, number)
        if op_input[0] != key:
            raise HistoryFormatError(f"{where}: completes key {key!r} but invoked key {op_input[0]!r}")
        if kind == "ok":
            output = ("" if value is None else value) if f == "get" else "ok"
            ops.append(Operation(process, op_input, called, output, moment))
        elif kind == "info" and f != "get":
            ops.append(Operation(process, op_input, called, UNKNOWN, math.inf))
    if seen_events == 0:
        raise HistoryFormatError(f"{source}: no events found")
    for process, (f, op_input, called, _) in pairing.open.items():
        if f != "get":
            ops.append(Operation(process, op_input, called, UNKNOWN, math.inf))
    return ops


# --- our JSON lines ----------------------------------------------------------------

def parse_jsonl(text: str, source: str = "<jsonl>") -> list[Operation]:
    """Operations for `keyed_register_model` from the harness's register workload history."""
    events = list(parse_history_lines(text.splitlines(), source))
    if not events:
        raise HistoryFormatError(f"{source}: no events found")
    try:
        return history_to_operations(events, "register")
    except HistoryFormatError as error:
        raise HistoryFormatError(f"{source}: {error}") from None


# --- registry --------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class HistoryFormat:
    name: str
    parse: Callable[[str, str], list[Operation]]
    model: Callable[[], Model]


FORMATS: dict[str, HistoryFormat] = {
    "jepsen-log": HistoryFormat("jepsen-log", parse_jepsen_log, register_model),
    "porcupine-kv": HistoryFormat("porcupine-kv", parse_porcupine_kv, kv_model),
    "jsonl": HistoryFormat("jsonl", parse_jsonl, keyed_register_model),
}


def load_history(path: str | os.PathLike[str], format_name: str) -> tuple[list[Operation], Model]:
    """Read and parse a history file; raise `HistoryFormatError` or `OSError`."""
    if format_name not in FORMATS:
        raise HistoryFormatError(f"unknown format {format_name!r}; choose one of {', '.join(FORMATS)}")
    history_format = FORMATS[format_name]
    with open(path, "rb") as file:
        raw = file.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise HistoryFormatError(f"{path}: not UTF-8 text ({error})") from None
    return history_format.parse(text, str(path)), history_format.model()
