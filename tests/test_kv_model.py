"""Model-based test: KVStateMachine against an obviously-correct reference.

The reference below keeps a plain dict and a list, copies the whole store to
run a txn, and scans linearly; it shares no code with the real state machine.
Hypothesis drives both with random command sequences (including idempotency
keys reused for other commands and exact retries, malformed commands and snapshot/restore mid-sequence) and checks every
result and every read agree, and that a second replica fed the same log bytes
stays byte-identical.
"""

from __future__ import annotations

import re
from typing import Any

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from raftkv.kv import commands
from raftkv.kv.state_machine import KVStateMachine

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_IDEMPOTENCY_KEYS = 3


class ReferenceKV:
    def __init__(self, max_idempotency_keys: int) -> None:
        self.store: dict[str, dict[str, Any]] = {}  # key -> KV dict
        self.revision = 0
        # (key, the command first sent with it, its result), oldest first
        self.idempotency: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
        self.max_idempotency_keys = max_idempotency_keys

    def apply(self, command: dict[str, Any], malformed: bool = False) -> dict[str, Any]:
        """``malformed`` says the caller built the command broken on purpose;
        the reference does not re-implement every structural check."""
        idem = command.get("idem")
        for seen, first, result in self.idempotency:
            if seen == idem:
                if first != command:
                    return {"ok": False, "revision": self.revision,
                            "error": {"code": "idempotency_key_reused"}}
                return {**result, "replayed": True}
        if malformed:
            return {"ok": False, "revision": self.revision, "error": {"code": "invalid_command"}}
        result = self._apply(command)
        if idem is not None:
            self.idempotency.append((idem, command, result))
            while len(self.idempotency) > self.max_idempotency_keys:
                self.idempotency.pop(0)
        return result

    def _apply(self, command: dict[str, Any]) -> dict[str, Any]:
        op = command.get("op")
        if op == "noop":
            return {"ok": True, "revision": self.revision}
        if op == "txn":
            return self._txn(command)
        staged = dict(self.store)
        outcome, changed = self._op(staged, command, self.revision + 1)
        if changed:
            self.store, self.revision = staged, self.revision + 1
        return {"ok": True, "revision": self.revision, **outcome}

    def _txn(self, command: dict[str, Any]) -> dict[str, Any]:
        succeeded = all(self._holds(cmp) for cmp in command["compare"])
        branch = command["success"] if succeeded else command["failure"]
        staged = dict(self.store)
        results, changed_any = [], False
        for op in branch:
            try:
                outcome, changed = self._op(staged, op, self.revision + 1)
            except ArithmeticError as failed:
                code = "out_of_range" if isinstance(failed, OverflowError) else "not_a_number"
                return {"ok": False, "revision": self.revision, "error": {"code": code}}
            results.append(outcome)
            changed_any = changed_any or changed
        if changed_any:
            self.store, self.revision = staged, self.revision + 1
        return {"ok": True, "succeeded": succeeded, "revision": self.revision, "results": results}

    def _op(self, store: dict[str, Any], op: dict[str, Any], revision: int) -> tuple[dict[str, Any], bool]:
        name = op["op"]
        if name == "get":
            return {"kv": store.get(op["key"])}, False
        if name == "delete":
            existed = store.pop(op["key"], None) is not None
            return {"deleted": int(existed)}, existed
        if name == "delete_prefix":
            doomed = [key for key in store if key.startswith(op["prefix"])]
            for key in doomed:
                del store[key]
            return {"deleted": len(doomed)}, bool(doomed)
        if name == "put":
            value = op["value"]
        else:  # add
            current = store.get(op["key"])
            number = 0 if current is None else parse_number(current["value"])
            if number is None:
                raise ArithmeticError
            total = number + op["delta"]
            if not INT64_MIN <= total <= INT64_MAX:
                raise OverflowError
            value = str(total).encode()
        old = store.get(op["key"])
        kv = {
            "key": op["key"],
            "value": value,
            "create_revision": revision if old is None else old["create_revision"],
            "mod_revision": revision,
            "version": 1 if old is None else old["version"] + 1,
        }
        store[op["key"]] = kv
        return {"kv": kv}, True

    def _holds(self, cmp: dict[str, Any]) -> bool:
        kv = self.store.get(cmp["key"])
        target = cmp["target"]
        if target in ("value", "number") and kv is None:
            return False
        if target == "number":
            actual = parse_number(kv["value"])  # type: ignore[index]
            if actual is None:
                return False
        elif target == "value":
            actual = kv["value"]  # type: ignore[index]
        else:
            actual = 0 if kv is None else kv[target]
        expected = cmp["value"]
        return {
            "==": actual == expected, "!=": actual != expected,
            "<": actual < expected, "<=": actual <= expected,
            ">": actual > expected, ">=": actual >= expected,
        }[cmp["cmp"]]

    def range(self, prefix: str, limit: int | None, start_after: str | None) -> tuple[list[Any], bool]:
        keys = sorted(k for k in self.store if k.startswith(prefix) and (start_after is None or k > start_after))
        shown = keys if limit is None else keys[:limit]
        return [self.store[k] for k in shown], len(shown) < len(keys)


def parse_number(value: bytes) -> int | None:
    if not re.fullmatch(rb"-?[0-9]+", value):
        return None
    number = int(value)
    return number if INT64_MIN <= number <= INT64_MAX else None


def without_messages(result: dict[str, Any]) -> dict[str, Any]:
    if "error" in result:
        return {**result, "error": {"code": result["error"]["code"]}}
    return result


KEYS = st.sampled_from(["a", "a/1", "a/2", "b", "\U0010ffff"])
PREFIXES = st.sampled_from(["", "a", "a/", "b", "c", "\U0010ffff"])
VALUES = st.sampled_from([b"", b"0", b"1", b"-3", b"42", b"x", b"\xff", b"9223372036854775807", b" 1"]) | st.binary(max_size=3)
DELTAS = st.sampled_from([INT64_MAX, INT64_MIN, 2**62]) | st.integers(-5, 5)
IDEMS = st.none() | st.sampled_from(["i1", "i2", "i3", "i4", "i5"])
INT_TARGETS = st.sampled_from(["version", "create_revision", "mod_revision", "number"])
CMPS = st.sampled_from(["==", "!=", "<", "<=", ">", ">="])

COMPARES = st.one_of(
    st.builds(lambda k, c, v: commands.compare(k, "value", c, v), KEYS, CMPS, VALUES),
    st.builds(lambda k, t, c, v: commands.compare(k, t, c, v), KEYS, INT_TARGETS, CMPS, st.integers(-1, 12)),
)
TXN_OPS = st.one_of(
    st.builds(lambda k: {"op": "get", "key": k}, KEYS),
    st.builds(lambda k, v: {"op": "put", "key": k, "value": v}, KEYS, VALUES),
    st.builds(lambda k: {"op": "delete", "key": k}, KEYS),
    st.builds(lambda p: {"op": "delete_prefix", "prefix": p}, PREFIXES),
    st.builds(lambda k, d: {"op": "add", "key": k, "delta": d}, KEYS, DELTAS),
)
MALFORMED = st.sampled_from([
    {"op": "put", "key": "a"},
    {"op": "put", "key": "", "value": b"1"},
    {"op": "bogus"},
    {"op": "delete", "key": 3},
    {"op": "txn", "success": [{"op": "put", "key": "a", "value": b"1"}, {"op": "add", "key": "a"}]},
    {"op": "txn", "compare": [{"key": "a", "target": "value", "cmp": "==", "value": 1}]},
])


class KVModelComparison(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.real = KVStateMachine(max_idempotency_keys=MAX_IDEMPOTENCY_KEYS)
        self.replica = KVStateMachine(max_idempotency_keys=MAX_IDEMPOTENCY_KEYS)
        self.model = ReferenceKV(MAX_IDEMPOTENCY_KEYS)
        # Commands sent with an idempotency key, to be retried as they were.
        self.keyed: list[tuple[dict[str, Any], bool]] = []

    def submit(self, command: dict[str, Any], malformed: bool = False) -> None:
        if command.get("idem") is not None:
            self.keyed.append((command, malformed))
        entry = commands.encode(command)
        result = self.real.apply(entry)
        assert self.replica.apply(entry) == result
        assert without_messages(result) == self.model.apply(command, malformed)

    @staticmethod
    def _idem(command: dict[str, Any], idem: str | None) -> dict[str, Any]:
        return command if idem is None else {**command, "idem": idem}

    @rule(key=KEYS, value=VALUES, idem=IDEMS)
    def put(self, key: str, value: bytes, idem: str | None) -> None:
        self.submit(commands.put(key, value, idem))

    @rule(key=KEYS, idem=IDEMS)
    def delete(self, key: str, idem: str | None) -> None:
        self.submit(commands.delete(key, idem))

    @rule(prefix=PREFIXES, idem=IDEMS)
    def delete_prefix(self, prefix: str, idem: str | None) -> None:
        self.submit(commands.delete_prefix(prefix, idem))

    @rule(compare=st.lists(COMPARES, max_size=3), success=st.lists(TXN_OPS, max_size=4),
          failure=st.lists(TXN_OPS, max_size=3), idem=IDEMS)
    def txn(self, compare: list[Any], success: list[Any], failure: list[Any], idem: str | None) -> None:
        self.submit(commands.txn(compare, success, failure, idem))

    @rule(key=KEYS, compared=INT_TARGETS, cmp=CMPS, offset=st.integers(-1, 1), value=VALUES)
    def guarded_put(self, key: str, compared: str, cmp: str, offset: int, value: bytes) -> None:
        """A compare guarding a write, as clients mostly use txns. The compared
        number sits next to the key's actual one, so each operator's edge
        cases come up often."""
        kv = self.model.store.get(key)
        if kv is None:
            actual = 0
        elif compared == "number":
            actual = parse_number(kv["value"]) or 0
        else:
            actual = kv[compared]
        guard = commands.compare(key, compared, cmp, actual + offset)
        self.submit(commands.txn([guard], [{"op": "put", "key": key, "value": value}], [{"op": "get", "key": key}]))

    @rule(command=st.just(commands.noop()) | MALFORMED, idem=IDEMS)
    def noop_or_malformed(self, command: dict[str, Any], idem: str | None) -> None:
        self.submit(self._idem(command, idem), malformed=command["op"] != "noop")

    @rule(pick=st.integers(0, 1000))
    def retry(self, pick: int) -> None:
        """A client resending a keyed command exactly (after a lost answer)."""
        if self.keyed:
            self.submit(*self.keyed[pick % len(self.keyed)])

    @rule(replica=st.booleans())
    def restore_from_snapshot(self, replica: bool) -> None:
        """Either the real machine restarts from its own snapshot, or the
        replica is replaced by a copy of the real one (a lagging follower
        catching up); both must then carry on identically."""
        restored = KVStateMachine(max_idempotency_keys=MAX_IDEMPOTENCY_KEYS)
        restored.restore(self.real.snapshot())
        if replica:
            self.replica = restored
        else:
            self.real = restored

    @rule(key=KEYS, prefix=PREFIXES, limit=st.none() | st.integers(1, 4), start_after=st.none() | KEYS)
    def read(self, key: str, prefix: str, limit: int | None, start_after: str | None) -> None:
        assert self.real.get(key) == self.model.store.get(key)
        assert self.real.range(prefix, limit, start_after) == self.model.range(prefix, limit, start_after)
        assert self.real.count(prefix) == len(self.model.range(prefix, None, None)[0])

    @invariant()
    def replicas_agree(self) -> None:
        assert self.real.revision == self.model.revision
        assert len(self.real) == len(self.model.store)
        assert self.replica.snapshot() == self.real.snapshot()


KVModelComparison.TestCase.settings = settings(max_examples=80, stateful_step_count=50, deadline=None)
TestKVModel = KVModelComparison.TestCase
