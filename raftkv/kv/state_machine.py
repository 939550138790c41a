"""The replicated key-value state machine (etcd-style revisions).

Engines call :meth:`KVStateMachine.apply` once per committed log entry, in
log order, on every replica. It is pure and deterministic: no I/O, clock or
randomness, so the same entries in the same order give byte-identical
snapshots everywhere. A committed entry must never crash a replica, so a
malformed command yields an ``invalid_command`` result and changes nothing.

Results are plain dicts shared with the idempotency table: callers must
treat them as read-only.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable
from typing import Any

from sortedcontainers import SortedDict

from raftkv.kv import commands, snapshot_format
from raftkv.kv.commands import InvalidCommand
from raftkv.kv.idempotency import DEFAULT_MAX_BYTES, DEFAULT_MAX_KEYS, Entry, IdempotencyTable
from raftkv.kv.integers import format_int, in_int64_range, parse_int64
from raftkv.kv.snapshot_format import Record

KV = dict[str, Any]
Result = dict[str, Any]
# key -> what it held before the running txn first touched it (None: absent)
UndoLog = dict[str, Record | None]

_COMPARE_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_MAX_CODE_POINT = 0x10FFFF
INVALID_COMMAND = "invalid_command"


class _TxnOpFailed(Exception):
    """An op of the chosen txn branch cannot apply; the txn is rolled back."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class KVStateMachine:
    def __init__(
        self,
        max_idempotency_keys: int = DEFAULT_MAX_KEYS,
        max_idempotency_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        """Both idempotency bounds decide whether a retry applies again, so
        every replica of a cluster must be built with the same values."""
        self._data: SortedDict = SortedDict()  # str -> Record
        self._revision = 0
        self._idempotency = IdempotencyTable(max_idempotency_keys, max_idempotency_bytes)
        self._handlers: dict[str, Callable[[commands.Command], Result]] = {
            "put": self._apply_put,
            "delete": self._apply_delete,
            "delete_prefix": self._apply_delete_prefix,
            "txn": self._apply_txn,
            "noop": self._apply_noop,
        }

    # ---- writes -----------------------------------------------------------

    def apply(self, data: bytes) -> Result:
        try:
            command = commands.decode(data)
        except InvalidCommand as exc:
            return self._invalid(exc)
        idem = command.get("idem")
        if idem is None:
            return self._dispatch(command)
        if type(idem) is not str or not idem:
            return self._invalid(InvalidCommand(f"'idem' must be a non-empty string, got {idem!r}"))
        fingerprint = commands.fingerprint(data)
        first = self._idempotency.get(idem)
        if first is not None:
            return self._answer_retry(idem, fingerprint, first, command)
        result = self._dispatch(command)
        if not _is_invalid(result):  # a malformed command does not spend its key
            self._idempotency.record(idem, fingerprint, _without_command_values(command, result))
        return result

    def apply_command(self, command: commands.Command) -> Result:
        """Apply a command given as a dict (tests, tools): as the engine would
        apply its encoding."""
        return self.apply(commands.encode(command))

    def _dispatch(self, command: commands.Command) -> Result:
        op = command.get("op")
        handler = self._handlers.get(op) if type(op) is str else None
        if handler is None:
            return self._invalid(
                InvalidCommand(f"unknown op {op!r}; expected one of {sorted(commands.WRITE_OPS)}")
            )
        try:
            return handler(command)
        except InvalidCommand as exc:
            return self._invalid(InvalidCommand(f"{op}: {exc}"))

    def _answer_retry(
        self, idem: str, fingerprint: bytes, first: Entry, command: commands.Command
    ) -> Result:
        """The answer to a command whose idempotency key was applied before:
        the first result if it is the same request, else an error; never a
        second application."""
        shown = _quote(idem)
        if first.fingerprint is None:
            return self._error(
                "idempotency_key_reused",
                f"Idempotency-Key {shown} was applied before this store kept request "
                "fingerprints, so this request cannot be matched to it; nothing was applied",
            )
        if first.fingerprint != fingerprint:
            return self._error(
                "idempotency_key_reused",
                f"Idempotency-Key {shown} was already used for a different request "
                "(another method, target or body); nothing was applied. Use a new key "
                "for a new request",
            )
        if first.result is None:
            return self._error(
                "idempotency_result_expired",
                f"the request with Idempotency-Key {shown} was applied once; its result is "
                "no longer kept (the idempotency table's byte bound), so it cannot be "
                "replayed; nothing was applied now",
            )
        return {**_with_command_values(command, first.result), "replayed": True}

    def _apply_put(self, command: commands.Command) -> Result:
        key = command.get("key")
        value = command.get("value")
        if type(key) is not str or not key or type(value) is not bytes:
            commands.require_key(command)  # raises, naming the field
            commands.require_value(command)
        revision = self._revision + 1
        data = self._data
        old = data.get(key)
        record = (value, revision, revision, 1) if old is None else (value, old[1], revision, old[3] + 1)
        data[key] = record
        self._revision = revision
        return {"ok": True, "revision": revision, "kv": _kv(key, record)}

    def _apply_delete(self, command: commands.Command) -> Result:
        key = commands.require_key(command)
        if self._data.pop(key, None) is None:
            return {"ok": True, "revision": self._revision, "deleted": 0}
        self._revision += 1
        return {"ok": True, "revision": self._revision, "deleted": 1}

    def _apply_delete_prefix(self, command: commands.Command) -> Result:
        prefix = commands.require_prefix(command)
        deleted = self._delete_range(prefix, None)
        if deleted:
            self._revision += 1
        return {"ok": True, "revision": self._revision, "deleted": deleted}

    def _apply_noop(self, command: commands.Command) -> Result:
        return {"ok": True, "revision": self._revision}

    def _apply_txn(self, command: commands.Command) -> Result:
        compares, success, failure = commands.check_txn(command)
        succeeded = True
        for item in compares:
            if not self._compare_holds(item):
                succeeded = False
                break
        branch = success if succeeded else failure
        revision = self._revision + 1
        undo: UndoLog = {}
        results: list[Result] = []
        try:
            for op in branch:
                results.append(self._apply_txn_op(op, revision, undo))
        except _TxnOpFailed as failed:
            self._roll_back(undo)
            where = f"txn {'success' if succeeded else 'failure'}[{len(results)}]"
            return {
                "ok": False,
                "revision": self._revision,
                "error": {"code": failed.code, "message": f"{where} {failed.message}"},
            }
        if undo:  # something was written
            self._revision = revision
        return {"ok": True, "succeeded": succeeded, "revision": self._revision, "results": results}

    def _compare_holds(self, item: dict[str, Any]) -> bool:
        record = self._data.get(item["key"])
        target = item["target"]
        actual: Any
        if target == "value":
            if record is None:
                return False
            actual = record[0]
        elif target == "number":
            actual = None if record is None else parse_int64(record[0])
            if actual is None:
                return False
        elif record is None:
            actual = 0
        elif target == "version":
            actual = record[3]
        elif target == "create_revision":
            actual = record[1]
        else:  # mod_revision
            actual = record[2]
        return _COMPARE_OPERATORS[item["cmp"]](actual, item["value"])

    def _apply_txn_op(self, op: dict[str, Any], revision: int, undo: UndoLog) -> Result:
        name = op["op"]
        if name == "delete_prefix":
            return {"deleted": self._delete_range(op["prefix"], undo)}
        key = op["key"]
        data = self._data
        old = data.get(key)
        if name == "get":
            return {"kv": None if old is None else _kv(key, old)}
        if name == "delete":
            if old is None:
                return {"deleted": 0}
            undo.setdefault(key, old)
            del data[key]
            return {"deleted": 1}
        if name == "put":
            value = op["value"]
        else:  # add
            current = 0 if old is None else parse_int64(old[0])
            if current is None:
                raise _TxnOpFailed(
                    "not_a_number",
                    f"add: key {_quote(key)} holds a value that is not a base-10 "
                    f"signed 64-bit integer, so nothing was applied",
                )
            total = current + op["delta"]
            if not in_int64_range(total):
                raise _TxnOpFailed(
                    "out_of_range",
                    f"add: key {_quote(key)} would become {total}, outside the "
                    f"signed 64-bit range, so nothing was applied",
                )
            value = format_int(total)
        undo.setdefault(key, old)
        record = (value, revision, revision, 1) if old is None else (value, old[1], revision, old[3] + 1)
        data[key] = record
        return {"kv": _kv(key, record)}

    def _delete_range(self, prefix: str, undo: UndoLog | None) -> int:
        data = self._data
        low, high = self._prefix_bounds(prefix)
        if low >= high:
            return 0
        doomed = list(data.islice(low, high))
        if undo is not None:
            for key in doomed:
                undo.setdefault(key, data[key])
        if len(doomed) == len(data):
            data.clear()
        else:
            for key in doomed:
                del data[key]
        return len(doomed)

    def _roll_back(self, undo: UndoLog) -> None:
        data = self._data
        for key, record in undo.items():
            if record is None:
                data.pop(key, None)
            else:
                data[key] = record

    def _invalid(self, exc: InvalidCommand) -> Result:
        return self._error(INVALID_COMMAND, str(exc))

    def _error(self, code: str, message: str) -> Result:
        return {"ok": False, "revision": self._revision, "error": {"code": code, "message": message}}

    # ---- reads ------------------------------------------------------------

    @property
    def revision(self) -> int:
        return self._revision

    @property
    def max_idempotency_keys(self) -> int:
        return self._idempotency.max_keys

    @property
    def max_idempotency_bytes(self) -> int:
        return self._idempotency.max_bytes

    @property
    def idempotency_keys(self) -> int:
        """How many idempotency keys are currently remembered."""
        return len(self._idempotency)

    def get(self, key: str) -> KV | None:
        record = self._data.get(key)
        return None if record is None else _kv(key, record)

    def range(
        self, prefix: str = "", limit: int | None = None, start_after: str | None = None
    ) -> tuple[list[KV], bool]:
        """Keys starting with ``prefix`` (after ``start_after``), sorted; and
        whether more such keys remain beyond ``limit``."""
        if limit is not None and (type(limit) is not int or limit < 1):
            raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
        data = self._data
        low, high = self._prefix_bounds(prefix)
        if start_after is not None:
            low = max(low, data.bisect_right(start_after))
        stop = high if limit is None else min(high, low + limit)
        kvs = [_kv(key, data[key]) for key in data.islice(low, stop)] if low < stop else []
        return kvs, stop < high

    def count(self, prefix: str = "") -> int:
        low, high = self._prefix_bounds(prefix)
        return max(0, high - low)

    def __len__(self) -> int:
        return len(self._data)

    def _prefix_bounds(self, prefix: str) -> tuple[int, int]:
        """Index range of the keys starting with ``prefix``."""
        data = self._data
        if not prefix:
            return 0, len(data)
        successor = _prefix_successor(prefix)
        high = len(data) if successor is None else data.bisect_left(successor)
        return data.bisect_left(prefix), high

    # ---- snapshots --------------------------------------------------------

    def snapshot(self) -> bytes:
        return snapshot_format.encode(self._revision, self._data.items(), self._idempotency.items())

    def restore(self, data: bytes) -> None:
        """Replace all state with ``data``; on ValueError nothing changed."""
        contents = snapshot_format.decode(data)
        records = SortedDict(contents.records)
        self._idempotency.replace(contents.idempotency)
        self._data = records
        self._revision = contents.revision


def _is_invalid(result: Result) -> bool:
    error = result.get("error")
    return error is not None and error["code"] == INVALID_COMMAND


def _without_command_values(command: commands.Command, result: Result) -> Result:
    """``result`` as the idempotency table keeps it: without the values the
    command itself carried (put values), which an identical retry carries
    again. So only values a write read count against the table's byte bound."""
    return _swap_command_values(command, result, keep=False)


def _with_command_values(command: commands.Command, kept: Result) -> Result:
    """A kept result with the command's values back: the first answer."""
    return _swap_command_values(command, kept, keep=True)


def _swap_command_values(command: commands.Command, result: Result, keep: bool) -> Result:
    op = command["op"]
    if op == "put" and "kv" in result:
        return {**result, "kv": _kv_value(result["kv"], command["value"] if keep else None)}
    if op != "txn" or "results" not in result:
        return result
    branch = command.get("success" if result["succeeded"] else "failure", [])
    items = []
    for txn_op, item in zip(branch, result["results"]):
        if txn_op["op"] == "put":
            item = {**item, "kv": _kv_value(item["kv"], txn_op["value"] if keep else None)}
        items.append(item)
    return {**result, "results": items}


def _kv_value(kv: KV, value: bytes | None) -> KV:
    """``kv`` with ``value`` (None: without a value), fields in _kv's order."""
    if value is None:
        return {name: field for name, field in kv.items() if name != "value"}
    return {"key": kv["key"], "value": value, **kv}


def _kv(key: str, record: Record) -> KV:
    return {
        "key": key,
        "value": record[0],
        "create_revision": record[1],
        "mod_revision": record[2],
        "version": record[3],
    }


def _prefix_successor(prefix: str) -> str | None:
    """The smallest string above every string that starts with ``prefix``
    (None when no such string exists)."""
    stripped = prefix.rstrip(chr(_MAX_CODE_POINT))
    if not stripped:
        return None
    return stripped[:-1] + chr(ord(stripped[-1]) + 1)


def _quote(key: str) -> str:
    shown = key if len(key) <= 200 else key[:200] + "..."
    return json.dumps(shown, ensure_ascii=False)
