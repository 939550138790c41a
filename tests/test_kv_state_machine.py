"""Unit tests for raftkv.kv.state_machine: every rule, one small case each."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from raftkv.kv import commands as c
from raftkv.kv.integers import INT64_MAX, INT64_MIN, parse_int64
from raftkv.kv.snapshot_format import FORMAT_VERSION
from raftkv.kv.state_machine import KVStateMachine
from raftkv.kv.store import LmdbStore, MemoryStore


def run(sm: KVStateMachine, command: dict[str, Any]) -> dict[str, Any]:
    """Apply through the log path (msgpack bytes), as engines do."""
    return sm.apply(c.encode(command))


def kv(key: str, value: bytes, create: int, mod: int, version: int) -> dict[str, Any]:
    return {"key": key, "value": value, "create_revision": create, "mod_revision": mod, "version": version}


def get(key: str) -> dict[str, Any]:
    return {"op": "get", "key": key}


def put(key: str, value: bytes) -> dict[str, Any]:
    return {"op": "put", "key": key, "value": value}


def add(key: str, delta: int) -> dict[str, Any]:
    return {"op": "add", "key": key, "delta": delta}


@pytest.fixture(params=["memory", "lmdb"])
def sm(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KVStateMachine]:
    """Every rule holds on both stores: in memory, and LMDB on disk."""
    store = MemoryStore() if request.param == "memory" else LmdbStore(tmp_path / "kv", map_size=256 << 20)
    machine = KVStateMachine(store=store)
    yield machine
    store.close()


# ---- revisions and versions -------------------------------------------------


def test_put_creates_then_updates_with_revision_and_version(sm: KVStateMachine) -> None:
    assert sm.revision == 0
    assert run(sm, c.put("a", b"1")) == {"ok": True, "revision": 1, "kv": kv("a", b"1", 1, 1, 1)}
    assert run(sm, c.put("b", b"x")) == {"ok": True, "revision": 2, "kv": kv("b", b"x", 2, 2, 1)}
    assert run(sm, c.put("a", b"2")) == {"ok": True, "revision": 3, "kv": kv("a", b"2", 1, 3, 2)}
    assert sm.get("a") == kv("a", b"2", 1, 3, 2)
    assert sm.revision == 3 and len(sm) == 2


def test_put_of_same_value_still_bumps_revision_and_version(sm: KVStateMachine) -> None:
    run(sm, c.put("a", b"1"))
    assert run(sm, c.put("a", b"1"))["kv"] == kv("a", b"1", 1, 2, 2)


def test_delete_forgets_key_and_recreate_starts_at_version_one(sm: KVStateMachine) -> None:
    run(sm, c.put("a", b"1"))
    run(sm, c.put("a", b"2"))
    assert run(sm, c.delete("a")) == {"ok": True, "revision": 3, "deleted": 1}
    assert sm.get("a") is None
    assert run(sm, c.put("a", b"3"))["kv"] == kv("a", b"3", 4, 4, 1)


def test_delete_of_absent_key_does_not_bump_revision(sm: KVStateMachine) -> None:
    run(sm, c.put("a", b"1"))
    assert run(sm, c.delete("zzz")) == {"ok": True, "revision": 1, "deleted": 0}
    assert sm.revision == 1


def test_noop_changes_nothing_and_reports_revision(sm: KVStateMachine) -> None:
    run(sm, c.put("a", b"1"))
    before = sm.snapshot()
    assert run(sm, c.noop()) == {"ok": True, "revision": 1}
    assert sm.snapshot() == before


def test_values_are_arbitrary_bytes_and_keys_unicode(sm: KVStateMachine) -> None:
    run(sm, c.put("dir/ü/ключ", b"\x00\xff\xfe"))
    assert sm.get("dir/ü/ключ")["value"] == b"\x00\xff\xfe"  # type: ignore[index]


# ---- delete_prefix, range, count ---------------------------------------------


def fill(sm: KVStateMachine, keys: list[str]) -> None:
    for key in keys:
        run(sm, c.put(key, key.encode()))


def test_delete_prefix_removes_only_matching_keys_in_one_revision(sm: KVStateMachine) -> None:
    fill(sm, ["a", "a/1", "a/2", "a0", "b/1"])
    assert run(sm, c.delete_prefix("a/")) == {"ok": True, "revision": 6, "deleted": 2}
    assert [k["key"] for k in sm.range("")[0]] == ["a", "a0", "b/1"]


def test_delete_prefix_with_no_match_does_not_bump(sm: KVStateMachine) -> None:
    fill(sm, ["a"])
    assert run(sm, c.delete_prefix("x")) == {"ok": True, "revision": 1, "deleted": 0}


def test_delete_prefix_empty_deletes_everything(sm: KVStateMachine) -> None:
    fill(sm, ["a", "b", "c"])
    assert run(sm, c.delete_prefix("")) == {"ok": True, "revision": 4, "deleted": 3}
    assert len(sm) == 0 and sm.revision == 4


def test_range_is_sorted_and_limited_to_prefix(sm: KVStateMachine) -> None:
    fill(sm, ["b/2", "a", "b/1", "b/10", "b", "c/1", "b0"])
    kvs, more = sm.range("b/")
    assert [k["key"] for k in kvs] == ["b/1", "b/10", "b/2"] and more is False
    assert kvs[0] == kv("b/1", b"b/1", 3, 3, 1)
    assert [k["key"] for k in sm.range("")[0]] == ["a", "b", "b/1", "b/10", "b/2", "b0", "c/1"]
    assert sm.range("zz") == ([], False)


def test_range_limit_and_start_after_paginate(sm: KVStateMachine) -> None:
    fill(sm, ["p/a", "p/b", "p/c", "p/d", "q"])
    page, more = sm.range("p/", limit=2)
    assert [k["key"] for k in page] == ["p/a", "p/b"] and more
    page, more = sm.range("p/", limit=2, start_after="p/b")
    assert [k["key"] for k in page] == ["p/c", "p/d"] and not more
    page, more = sm.range("p/", limit=2, start_after="p/d")
    assert page == [] and not more
    # start_after need not be an existing key, and may sort before the prefix
    assert [k["key"] for k in sm.range("p/", start_after="p/bb")[0]] == ["p/c", "p/d"]
    assert [k["key"] for k in sm.range("p/", limit=1, start_after="a")[0]] == ["p/a"]
    assert sm.range("p/", limit=4) == (sm.range("p/")[0], False)


def test_range_rejects_non_positive_limit(sm: KVStateMachine) -> None:
    with pytest.raises(ValueError, match="limit"):
        sm.range("", limit=0)


def test_count(sm: KVStateMachine) -> None:
    fill(sm, ["a", "a/1", "a/2", "b"])
    assert sm.count("a/") == 2 and sm.count("") == 4 and sm.count("a") == 3 and sm.count("c") == 0


def test_prefix_ending_in_highest_code_point(sm: KVStateMachine) -> None:
    top = chr(0x10FFFF)
    fill(sm, ["a" + top, "a" + top + "x", "b", top, top + "z"])
    assert [k["key"] for k in sm.range("a" + top)[0]] == ["a" + top, "a" + top + "x"]
    assert sm.count(top) == 2


# ---- txn compares --------------------------------------------------------------


def compare_holds(sm: KVStateMachine, key: str, target: str, cmp: str, value: Any) -> bool:
    result = run(sm, c.txn([c.compare(key, target, cmp, value)], [], []))
    assert result["ok"], result
    return result["succeeded"]


@pytest.mark.parametrize(
    ("cmp", "expected"), [("==", [False, True, False]), ("!=", [True, False, True]),
                          ("<", [True, False, False]), ("<=", [True, True, False]),
                          (">", [False, False, True]), (">=", [False, True, True])],
)
def test_every_operator_on_every_int_target(sm: KVStateMachine, cmp: str, expected: list[bool]) -> None:
    run(sm, c.put("other", b"x"))   # rev 1
    run(sm, c.put("k", b"5"))       # rev 2: create 2
    run(sm, c.put("k", b"5"))       # rev 3: mod 3, version 2
    actual = {"version": 2, "create_revision": 2, "mod_revision": 3, "number": 5}
    for target, value in actual.items():
        got = [compare_holds(sm, "k", target, cmp, value + delta) for delta in (1, 0, -1)]
        assert got == expected, (target, cmp)


@pytest.mark.parametrize(
    ("cmp", "expected"), [("==", [False, True, False]), ("!=", [True, False, True]),
                          ("<", [True, False, False]), ("<=", [True, True, False]),
                          (">", [False, False, True]), (">=", [False, True, True])],
)
def test_every_operator_on_value_compares_bytes(sm: KVStateMachine, cmp: str, expected: list[bool]) -> None:
    run(sm, c.put("k", b"m"))
    got = [compare_holds(sm, "k", "value", cmp, probe) for probe in (b"n", b"m", b"l")]
    assert got == expected


def test_absent_key_compares_as_zero_for_metadata(sm: KVStateMachine) -> None:
    for target in ("version", "create_revision", "mod_revision"):
        assert compare_holds(sm, "nope", target, "==", 0)
        assert not compare_holds(sm, "nope", target, ">", 0)


def test_value_and_number_compares_on_absent_key_are_false_for_every_operator(sm: KVStateMachine) -> None:
    for cmp in ("==", "!=", "<", "<=", ">", ">="):
        assert not compare_holds(sm, "nope", "value", cmp, b"")
        assert not compare_holds(sm, "nope", "number", cmp, 0)


def test_number_compare_is_false_on_non_integer_values(sm: KVStateMachine) -> None:
    for raw in (b"abc", b"", b"1.5", b" 1", b"+1", b"1_0", b"99999999999999999999"):
        run(sm, c.put("k", raw))
        for cmp in ("==", "!=", "<", ">"):
            assert not compare_holds(sm, "k", "number", cmp, 1), (raw, cmp)
    run(sm, c.put("k", b"-12"))
    assert compare_holds(sm, "k", "number", "<", -11)
    run(sm, c.put("k", b"007"))
    assert compare_holds(sm, "k", "number", "==", 7)


def test_all_compares_must_hold(sm: KVStateMachine) -> None:
    run(sm, c.put("a", b"1"))
    both = [c.compare("a", "value", "==", b"1"), c.compare("a", "version", "==", 2)]
    result = run(sm, c.txn(both, [put("x", b"s")], [get("a")]))
    assert result == {"ok": True, "succeeded": False, "revision": 1,
                      "results": [{"kv": kv("a", b"1", 1, 1, 1)}]}
    assert sm.get("x") is None


def test_empty_compare_list_runs_success(sm: KVStateMachine) -> None:
    assert run(sm, c.txn([], [put("a", b"1")], []))["succeeded"] is True


# ---- txn ops and revisions ---------------------------------------------------


def test_txn_writes_share_one_revision_and_see_earlier_ops(sm: KVStateMachine) -> None:
    run(sm, c.put("old/1", b"x"))
    result = run(sm, c.txn([], [put("a", b"1"), get("a"), put("a", b"2"), {"op": "delete", "key": "nope"},
                                {"op": "delete_prefix", "prefix": "old/"}, get("old/1"), add("n", 2)], []))
    assert result == {"ok": True, "succeeded": True, "revision": 2, "results": [
        {"kv": kv("a", b"1", 2, 2, 1)},
        {"kv": kv("a", b"1", 2, 2, 1)},
        {"kv": kv("a", b"2", 2, 2, 2)},
        {"deleted": 0},
        {"deleted": 1},
        {"kv": None},
        {"kv": kv("n", b"2", 2, 2, 1)},
    ]}
    assert sm.revision == 2


def test_read_only_txn_does_not_bump(sm: KVStateMachine) -> None:
    run(sm, c.put("a", b"1"))
    assert run(sm, c.txn([], [get("a"), get("b"), {"op": "delete", "key": "b"}], []))["revision"] == 1
    assert run(sm, c.txn([c.compare("a", "version", "==", 9)], [put("a", b"2")], [get("a")]))["revision"] == 1
    assert sm.revision == 1


def test_failure_branch_writes(sm: KVStateMachine) -> None:
    result = run(sm, c.txn([c.compare("a", "version", ">", 0)], [], [put("a", b"init")]))
    assert result["succeeded"] is False and result["revision"] == 1
    assert sm.get("a") == kv("a", b"init", 1, 1, 1)


def test_guarded_decrement_pattern(sm: KVStateMachine) -> None:
    run(sm, c.put("stock", b"2"))
    guarded = c.txn([c.compare("stock", "number", ">=", 1)], [add("stock", -1)], [get("stock")])
    assert run(sm, guarded)["results"] == [{"kv": kv("stock", b"1", 1, 2, 2)}]
    assert run(sm, guarded)["results"] == [{"kv": kv("stock", b"0", 1, 3, 3)}]
    assert run(sm, guarded) == {"ok": True, "succeeded": False, "revision": 3,
                                "results": [{"kv": kv("stock", b"0", 1, 3, 3)}]}


def test_add_on_absent_key_creates_it_from_zero(sm: KVStateMachine) -> None:
    assert run(sm, c.txn([], [add("n", -5)], []))["results"] == [{"kv": kv("n", b"-5", 1, 1, 1)}]


def test_add_reaches_int64_bounds(sm: KVStateMachine) -> None:
    run(sm, c.put("n", str(INT64_MAX - 1).encode()))
    assert run(sm, c.txn([], [add("n", 1)], []))["results"][0]["kv"]["value"] == str(INT64_MAX).encode()
    run(sm, c.put("m", str(INT64_MIN).encode()))
    assert run(sm, c.txn([], [add("m", 0)], []))["ok"]


def assert_txn_error_changed_nothing(sm: KVStateMachine, ops: list[dict[str, Any]], code: str, text: str) -> None:
    before, revision = sm.snapshot(), sm.revision
    result = run(sm, c.txn([], ops, []))
    assert result["ok"] is False and result["revision"] == revision
    assert result["error"]["code"] == code
    assert text in result["error"]["message"]
    assert sm.snapshot() == before


def test_add_on_non_integer_fails_whole_txn(sm: KVStateMachine) -> None:
    fill(sm, ["keep/1", "keep/2"])
    run(sm, c.put("text", b"hello"))
    run(sm, c.put("n", b"1"))
    ops = [put("n", b"7"), put("fresh", b"x"), {"op": "delete", "key": "keep/1"},
           {"op": "delete_prefix", "prefix": "keep/"}, add("n", 1), add("text", 1)]
    assert_txn_error_changed_nothing(sm, ops, "not_a_number", '"text"')


def test_add_overflow_and_underflow_fail_whole_txn(sm: KVStateMachine) -> None:
    run(sm, c.put("n", str(INT64_MAX).encode()))
    assert_txn_error_changed_nothing(sm, [put("a", b"1"), add("n", 1)], "out_of_range", '"n"')
    run(sm, c.put("m", str(INT64_MIN).encode()))
    assert_txn_error_changed_nothing(sm, [add("m", -1)], "out_of_range", '"m"')


def test_failed_txn_rolls_back_a_key_created_then_deleted(sm: KVStateMachine) -> None:
    run(sm, c.put("bad", b"x"))
    ops = [put("new", b"1"), {"op": "delete", "key": "new"}, put("new", b"2"), add("bad", 1)]
    assert_txn_error_changed_nothing(sm, ops, "not_a_number", "bad")
    assert sm.get("new") is None


def test_parse_int64_rules() -> None:
    assert parse_int64(b"0") == 0 and parse_int64(b"-0") == 0 and parse_int64(b"-42") == -42
    assert parse_int64(str(INT64_MAX).encode()) == INT64_MAX
    assert parse_int64(str(INT64_MIN).encode()) == INT64_MIN
    for bad in (b"", b"-", b"+1", b" 1", b"1 ", b"1_000", b"0x10", b"\xd9\xa3",
                str(INT64_MAX + 1).encode(), str(INT64_MIN - 1).encode(), b"1" * 5000):
        assert parse_int64(bad) is None, bad


# ---- malformed commands never raise and change nothing ------------------------


MALFORMED: list[Any] = [
    b"",
    b"\xc1",  # never-used msgpack byte
    msgpack.packb([1, 2]),
    msgpack.packb({"op": "frobnicate"}),
    msgpack.packb({"op": ["put"]}),
    msgpack.packb({"key": "a"}),
    msgpack.packb({"op": "put", "key": "a"}),
    msgpack.packb({"op": "put", "key": "a", "value": "text, not bytes"}),
    msgpack.packb({"op": "put", "key": "", "value": b"x"}),
    msgpack.packb({"op": "put", "key": 5, "value": b"x"}),
    msgpack.packb({"op": "put", "key": "a", "value": b"x", "idem": 5}),
    msgpack.packb({"op": "put", "key": "a", "value": b"x", "idem": ""}),
    msgpack.packb({"op": "delete"}),
    msgpack.packb({"op": "delete_prefix", "prefix": None}),
    msgpack.packb({"op": "txn", "compare": "nope"}),
    msgpack.packb({"op": "txn", "compare": [{"key": "a", "target": "size", "cmp": "==", "value": 1}]}),
    msgpack.packb({"op": "txn", "compare": [{"key": "a", "target": ["x"], "cmp": "==", "value": 1}]}),
    msgpack.packb({"op": "txn", "compare": [{"key": "a", "target": "version", "cmp": "=", "value": 1}]}),
    msgpack.packb({"op": "txn", "compare": [{"key": "a", "target": "version", "cmp": "==", "value": True}]}),
    msgpack.packb({"op": "txn", "compare": [{"key": "a", "target": "value", "cmp": "==", "value": 1}]}),
    msgpack.packb({"op": "txn", "compare": [{"key": "a", "target": "version", "cmp": "==", "value": b"1"}]}),
    msgpack.packb({"op": "txn", "compare": [7]}),
    msgpack.packb({"op": "txn", "success": [{"op": "add", "key": "a", "delta": "1"}]}),
    msgpack.packb({"op": "txn", "success": [{"op": "add", "key": "a", "delta": False}]}),
    msgpack.packb({"op": "txn", "success": [{"op": "noop"}]}),
    msgpack.packb({"op": "txn", "success": [{"op": {"x": 1}}]}),
    msgpack.packb({"op": "txn", "success": [None]}),
    # a valid first op must not be applied when a later op is malformed
    msgpack.packb({"op": "txn", "success": [{"op": "put", "key": "a", "value": b"2"}, {"op": "get"}]}),
    msgpack.packb({"op": "txn", "failure": [{"op": "put", "key": "a", "value": b"2"}, {"op": "put"}]}),
    msgpack.packb({"op": "txn", "success": [], "failure": {"op": "get", "key": "a"}}),
    msgpack.packb({"op": "put", "key": "a", "value": b"x"}) + b"trailing",
]


@pytest.mark.parametrize("data", MALFORMED)
def test_malformed_command_is_an_error_result_and_changes_nothing(sm: KVStateMachine, data: bytes) -> None:
    run(sm, c.put("a", b"1"))
    before = sm.snapshot()
    result = sm.apply(data)
    assert result["ok"] is False and result["revision"] == 1
    assert result["error"]["code"] == "invalid_command"
    assert result["error"]["message"]
    assert sm.snapshot() == before


def test_apply_command_with_non_dict_is_an_error_result(sm: KVStateMachine) -> None:
    assert sm.apply_command(["op", "put"])["error"]["code"] == "invalid_command"  # type: ignore[arg-type]


def test_unknown_fields_in_commands_are_ignored(sm: KVStateMachine) -> None:
    assert run(sm, {"op": "put", "key": "a", "value": b"1", "future": 1})["ok"]


# ---- idempotency ---------------------------------------------------------------


def test_idempotent_write_applies_once_and_replays_first_result(sm: KVStateMachine) -> None:
    first = run(sm, c.put("a", b"1", idem="req-1"))
    run(sm, c.put("a", b"2"))
    again = run(sm, c.put("a", b"1", idem="req-1"))
    assert again == {**first, "replayed": True}
    assert sm.get("a")["value"] == b"2" and sm.revision == 2  # type: ignore[index]


def test_a_key_reused_for_another_request_is_refused_and_applies_nothing(sm: KVStateMachine) -> None:
    run(sm, c.put("x1", b"1"))
    first = run(sm, c.delete_prefix("x", idem="k"))
    before = sm.snapshot()
    for other in (
        c.put("a", b"1", idem="k"),  # another operation
        c.delete_prefix("y", idem="k"),  # same operation, another target
        c.txn([], [c.txn_delete_prefix("x")], [], idem="k"),  # same effect, another command
    ):
        result = run(sm, other)
        assert result["ok"] is False and result["error"]["code"] == "idempotency_key_reused"
        assert result["revision"] == first["revision"]
    assert sm.snapshot() == before
    assert run(sm, c.delete_prefix("x", idem="k")) == {**first, "replayed": True}


def test_idempotent_txn_and_its_error_result_are_replayed(sm: KVStateMachine) -> None:
    run(sm, c.put("t", b"text"))
    failing = c.txn([], [add("t", 1)], [], idem="add-1")
    first = run(sm, failing)
    assert first["error"]["code"] == "not_a_number"
    run(sm, c.put("t", b"5"))
    assert run(sm, failing) == {**first, "replayed": True}
    assert sm.get("t")["value"] == b"5"  # type: ignore[index]
    guarded = c.txn([], [add("t", 1)], [], idem="add-2")
    assert run(sm, guarded)["results"][0]["kv"]["value"] == b"6"
    assert run(sm, guarded)["replayed"] is True
    assert sm.get("t")["value"] == b"6"  # type: ignore[index]


def test_replay_gives_back_the_values_of_the_first_answer(sm: KVStateMachine) -> None:
    """The table keeps put results without the value the command carried; a
    replay must still be the first answer, value included."""
    first_put = run(sm, c.put("a", b"one", idem="p"))
    tx = c.txn([c.compare("a", "version", ">", 0)], [put("b", b"two"), get("a")], [get("a")], idem="t")
    first_txn = run(sm, tx)
    run(sm, c.put("a", b"changed"))
    assert run(sm, c.put("a", b"one", idem="p")) == {**first_put, "replayed": True}
    assert run(sm, tx) == {**first_txn, "replayed": True}
    assert first_txn["results"][1]["kv"]["value"] == b"one"


def test_invalid_command_does_not_consume_its_idempotency_key(sm: KVStateMachine) -> None:
    assert run(sm, {"op": "put", "key": "a", "idem": "k"})["ok"] is False
    assert run(sm, c.put("a", b"1", idem="k")) == {"ok": True, "revision": 1, "kv": kv("a", b"1", 1, 1, 1)}


def test_idempotency_table_forgets_the_oldest_key_beyond_its_count() -> None:
    sm = KVStateMachine(max_idempotency_keys=2)
    for i in range(3):
        run(sm, c.put("a", str(i).encode(), idem=f"k{i}"))
    # k0 was forgotten: its retry is a new request and applies again
    assert "replayed" not in run(sm, c.put("a", b"0", idem="k0"))
    assert sm.revision == 4
    assert run(sm, c.put("a", b"2", idem="k2"))["replayed"] is True
    # recording k0 again made k1 the oldest, and it went
    assert "replayed" not in run(sm, c.put("a", b"1", idem="k1"))


def test_zero_sized_idempotency_table_remembers_nothing() -> None:
    sm = KVStateMachine(max_idempotency_keys=0)
    run(sm, c.put("a", b"1", idem="k"))
    assert "replayed" not in run(sm, c.put("a", b"1", idem="k"))
    with pytest.raises(ValueError):
        KVStateMachine(max_idempotency_keys=-1)


def test_put_values_do_not_count_against_the_byte_bound() -> None:
    sm = KVStateMachine(max_idempotency_bytes=10)
    for i in range(5):
        run(sm, c.put("a", b"x" * 100, idem=f"k{i}"))
    assert sm.idempotency_keys == 5
    assert run(sm, c.put("a", b"x" * 100, idem="k0"))["replayed"] is True


def test_beyond_the_byte_bound_the_oldest_result_expires_but_its_key_stays() -> None:
    sm = KVStateMachine(max_idempotency_bytes=10)
    run(sm, c.put("big", b"123456"))
    read_big = [get("big")]
    run(sm, c.txn([], read_big, [], idem="k1"))
    run(sm, c.txn([], read_big, [], idem="k2"))  # 12 value bytes read > 10: k1's result goes
    assert sm.idempotency_keys == 2
    assert run(sm, c.txn([], read_big, [], idem="k2"))["replayed"] is True
    revision = sm.revision
    expired = run(sm, c.txn([], read_big, [], idem="k1"))
    assert expired["ok"] is False and expired["error"]["code"] == "idempotency_result_expired"
    assert sm.revision == revision
    # the fingerprint outlives the result: another request is still a reuse
    assert run(sm, c.put("z", b"1", idem="k1"))["error"]["code"] == "idempotency_key_reused"


def test_result_larger_than_the_byte_bound_expires_at_once() -> None:
    sm = KVStateMachine(max_idempotency_bytes=4)
    run(sm, c.put("a", b"12345"))
    run(sm, c.txn([], [get("a")], [], idem="k"))
    assert sm.idempotency_keys == 1
    assert run(sm, c.txn([], [get("a")], [], idem="k"))["error"]["code"] == "idempotency_result_expired"
    with pytest.raises(ValueError):
        KVStateMachine(max_idempotency_bytes=-1)


# ---- snapshots -------------------------------------------------------------------


def build_history(sm: KVStateMachine) -> None:
    fill(sm, ["a", "b/1", "b/2", "c"])
    run(sm, c.put("bin", b"\xff\x00", idem="i1"))
    run(sm, c.delete("b/1", idem="i2"))
    run(sm, c.txn([c.compare("a", "version", "==", 1)], [add("n", 3), get("a")], [], idem="i3"))
    run(sm, c.put("a", b"new"))


def test_snapshot_restore_round_trip_is_identical(sm: KVStateMachine) -> None:
    build_history(sm)
    image = sm.snapshot()
    other = KVStateMachine()
    other.restore(image)
    assert other.snapshot() == image
    assert other.revision == sm.revision and len(other) == len(sm)
    assert other.range("") == sm.range("")
    # the idempotency table came along, fingerprints and all
    retry = c.txn([c.compare("a", "version", "==", 1)], [add("n", 3), get("a")], [], idem="i3")
    assert run(other, retry) == run(sm, retry)
    assert run(other, retry)["replayed"] is True
    assert run(other, c.put("x", b"1", idem="i3")) == run(sm, c.put("x", b"1", idem="i3"))
    assert run(other, c.put("x", b"1", idem="i3"))["error"]["code"] == "idempotency_key_reused"
    # and both keep evolving identically
    run(sm, c.put("z", b"1"))
    run(other, c.put("z", b"1"))
    assert other.snapshot() == sm.snapshot()


def test_restore_replaces_everything(sm: KVStateMachine) -> None:
    source = KVStateMachine()
    run(source, c.put("only", b"1"))
    build_history(sm)
    sm.restore(source.snapshot())
    assert sm.range("") == ([kv("only", b"1", 1, 1, 1)], False) and sm.revision == 1
    assert "replayed" not in run(sm, c.put("bin", b"\xff\x00", idem="i1"))


def test_restore_keeps_newest_entries_when_table_is_smaller() -> None:
    big = KVStateMachine()
    for i in range(5):
        run(big, c.put("a", b"x", idem=f"k{i}"))
    small = KVStateMachine(max_idempotency_keys=2)
    small.restore(big.snapshot())
    assert run(small, c.put("a", b"x", idem="k4"))["replayed"] is True
    assert run(small, c.put("a", b"x", idem="k3"))["replayed"] is True
    assert "replayed" not in run(small, c.put("a", b"x", idem="k2"))


def test_restore_accepts_results_of_any_map_shape(sm: KVStateMachine) -> None:
    odd = [{"kv": 5}, {"kv": {"value": "text"}}, {"results": [None, {"kv": None}, {"kv": {"value": b"ab"}}]}, {}, None]
    fingerprint = b"f" * 16
    flat = [x for i, r in enumerate(odd) for x in (f"k{i}", fingerprint, r)]
    image = msgpack.packb([FORMAT_VERSION, 0, 0, [], flat, {}], use_bin_type=True)
    sm.restore(image)
    assert sm.idempotency_keys == 5 and sm.snapshot() == image


def test_format_1_snapshot_is_read_and_its_keys_are_never_matched(sm: KVStateMachine) -> None:
    """Format 1 kept no fingerprints: its keys still stop a second
    application, and refuse (rather than guess) a retry."""
    first = {"ok": True, "revision": 1, "kv": kv("a", b"1", 1, 1, 1)}
    image = msgpack.packb([1, 1, ["a", b"1", 1, 1, 1], ["old", first]], use_bin_type=True)
    sm.restore(image)
    assert sm.get("a") == kv("a", b"1", 1, 1, 1) and sm.idempotency_keys == 1
    again = run(sm, c.put("a", b"1", idem="old"))
    assert again["error"]["code"] == "idempotency_key_reused" and sm.revision == 1
    assert msgpack.unpackb(sm.snapshot())[0] == FORMAT_VERSION


def test_snapshot_starts_with_format_version(sm: KVStateMachine) -> None:
    build_history(sm)
    assert msgpack.unpackb(sm.snapshot())[0] == FORMAT_VERSION


def good_snapshot_fields() -> list[Any]:
    sm = KVStateMachine()
    build_history(sm)
    return msgpack.unpackb(sm.snapshot(), raw=False)


def corrupt(mutate: Any) -> bytes:
    fields = good_snapshot_fields()
    mutate(fields)
    return msgpack.packb(fields, use_bin_type=True)


def _set(index: int, value: Any) -> Any:
    return lambda f: f.__setitem__(index, value)


def _set_record(index: int, value: Any) -> Any:
    """Set field ``index`` of the flat history (6 fields a write)."""
    return lambda f: f[3].__setitem__(index, value)


BAD_SNAPSHOTS: dict[str, bytes] = {
    "garbage": b"\x00not msgpack at all\xc1",
    "empty": b"",
    "truncated": msgpack.packb([FORMAT_VERSION, 1, 0, [], [], {}])[:-1],
    "not a list": msgpack.packb({"format": 1}),
    "empty list": msgpack.packb([]),
    "future format": corrupt(_set(0, FORMAT_VERSION + 1)),
    "bool format": corrupt(_set(0, True)),
    "missing field": msgpack.packb([FORMAT_VERSION, 0, 0, [], []]),
    "side tables not a map": corrupt(_set(5, [])),
    "unknown side table": corrupt(_set(5, {"nope": []})),
    "side table keys out of order": corrupt(_set(5, {"lease": [b"b", b"1", b"a", b"2"]})),
    "side table value not bytes": corrupt(_set(5, {"auth": [b"a", "text"]})),
    "negative revision": corrupt(_set(1, -1)),
    "compact revision above revision": corrupt(_set(2, 10_000)),
    "compact revision not an int": corrupt(_set(2, "1")),
    "history not a list": corrupt(_set(3, {"a": 1})),
    "history fields not a multiple of 6": corrupt(lambda f: f[3].pop()),
    "revision zero": corrupt(_set_record(0, 0)),
    "revision above store revision": corrupt(_set_record(0, 10_000)),
    "revisions out of order": corrupt(_set_record(6, 5)),
    "sub negative": corrupt(_set_record(1, -1)),
    "key not a string": corrupt(_set_record(2, 1)),
    "empty key": corrupt(_set_record(2, "")),
    "value not bytes": corrupt(_set_record(3, "text")),
    "create revision above its write": corrupt(_set_record(4, 10_000)),
    "version zero": corrupt(_set_record(5, 0)),
    "tombstone with a version": corrupt(lambda f: f[3].__setitem__(slice(3, 6), [None, 0, 1])),
    "idempotency not triples": corrupt(lambda f: f[4].pop()),
    "idempotency fingerprint missing": corrupt(lambda f: f[4].__setitem__(1, None)),
    "idempotency fingerprint short": corrupt(lambda f: f[4].__setitem__(1, b"x")),
    "idempotency result not a map": corrupt(lambda f: f[4].__setitem__(2, 5)),
    "duplicate idempotency key": corrupt(lambda f: f[4].extend(f[4][:3])),
    "format 2 record fields not a multiple of 5": msgpack.packb([2, 1, ["a", b"1", 1, 1], []]),
    "format 2 keys out of order": msgpack.packb([2, 2, ["b", b"1", 1, 1, 1, "a", b"1", 2, 2, 1], []]),
    "format 1 idempotency not pairs": msgpack.packb([1, 0, [], ["k"]]),
}


@pytest.mark.parametrize("name", BAD_SNAPSHOTS)
def test_restore_rejects_bad_snapshot_and_keeps_state(sm: KVStateMachine, name: str) -> None:
    run(sm, c.put("keep", b"me", idem="mine"))
    before = sm.snapshot()
    with pytest.raises(ValueError):
        sm.restore(BAD_SNAPSHOTS[name])
    assert sm.snapshot() == before


def test_unknown_format_error_names_the_version(sm: KVStateMachine) -> None:
    with pytest.raises(ValueError, match="unsupported snapshot format 99"):
        sm.restore(msgpack.packb([99, 0, 0, [], []]))


# ---- command wire format ------------------------------------------------------------


def test_commands_round_trip_through_msgpack() -> None:
    cmd = c.txn([c.compare("k", "value", "==", b"\xff")], [put("k", b"v")], [get("k")], idem="r")
    assert c.decode(c.encode(cmd)) == cmd


@pytest.mark.parametrize("data", [b"", b"\xc1", msgpack.packb([1]), msgpack.packb("put")])
def test_decode_rejects_what_is_not_a_command_map(data: bytes) -> None:
    with pytest.raises(c.InvalidCommand):
        c.decode(data)


def test_change_listeners_hear_each_committed_batch_in_order() -> None:
    from raftkv.kv.state_machine import KVStateMachine

    machine = KVStateMachine()
    heard: list[object] = []
    machine.add_change_listener(heard.append)
    machine.apply_command({"op": "put", "key": "a", "value": b"1"})
    machine.begin_batch()
    machine.apply_command({"op": "put", "key": "b", "value": b"2"})
    machine.apply_command({"op": "delete", "key": "a"})
    assert len(heard) == 1  # nothing is told before the batch commits
    machine.commit_batch(7)
    assert heard[1] == [(2, 0, "b", (b"2", 2, 2, 1)), (3, 0, "a", None)]
    machine.begin_batch()
    machine.apply_command({"op": "put", "key": "c", "value": b"3"})
    machine.abort_batch()
    assert len(heard) == 2  # an aborted batch is not told
    machine.restore(machine.snapshot(), 9)
    assert heard[2] is None  # a restore replaces everything


def test_side_tables_travel_in_snapshots_byte_for_byte() -> None:
    from raftkv.kv.state_machine import KVStateMachine

    machine = KVStateMachine()
    machine.apply_command({"op": "put", "key": "a", "value": b"1"})
    txn = machine.store.write()
    txn.put("lease", b"\x00\x01", b"lease one")
    txn.put("auth", b"enabled", b"\xc3")  # msgpack true: a record auth_state reads
    txn.commit()
    other = KVStateMachine()
    other.restore(machine.snapshot(), 3)
    view = other.store.read()
    assert list(view.scan("lease")) == [(b"\x00\x01", b"lease one")]
    assert list(view.scan("auth")) == [(b"enabled", b"\xc3")]
    view.close()
    assert other.snapshot() == machine.snapshot()
    assert other.get("a")["value"] == b"1"
    assert other.auth.enabled
