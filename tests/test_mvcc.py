"""MVCC history in the state machine (etcd's model), on both stores: reads
at a past revision, compaction as a logged command, and snapshots that carry
the history so every replica answers the same past."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from raftkv.kv import commands as c
from raftkv.kv.state_machine import CompactedError, FutureRevisionError, KVStateMachine
from raftkv.kv.store import LmdbStore, MemoryStore


@pytest.fixture(params=["memory", "lmdb"])
def sm(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KVStateMachine]:
    store = MemoryStore() if request.param == "memory" else LmdbStore(tmp_path / "kv", map_size=256 << 20)
    machine = KVStateMachine(store=store)
    yield machine
    store.close()


def run(sm: KVStateMachine, command: dict[str, Any]) -> dict[str, Any]:
    return sm.apply(c.encode(command))


def value_at(sm: KVStateMachine, key: str, revision: int) -> bytes | None:
    kv = sm.get(key, revision)
    return None if kv is None else kv["value"]


def history(sm: KVStateMachine) -> None:
    """rev 1: a=1; 2: b=1; 3: a=2; 4: delete a; 5: txn a=3, c=1; 6: delete_prefix ''."""
    run(sm, c.put("a", b"1"))
    run(sm, c.put("b", b"1"))
    run(sm, c.put("a", b"2"))
    run(sm, c.delete("a"))
    run(sm, c.txn([], [c.txn_put("a", b"3"), c.txn_put("c", b"1")], []))
    run(sm, c.delete_prefix(""))


def test_every_revision_reads_as_it_was(sm: KVStateMachine) -> None:
    history(sm)
    assert sm.revision == 6 and sm.get("a") is None and len(sm) == 0
    assert [value_at(sm, "a", r) for r in range(1, 7)] == [b"1", b"1", b"2", None, b"3", None]
    assert sm.get("a", 3) == {"key": "a", "value": b"2", "create_revision": 1, "mod_revision": 3, "version": 2}
    # recreated after its deletion: a new incarnation
    assert sm.get("a", 5) == {"key": "a", "value": b"3", "create_revision": 5, "mod_revision": 5, "version": 1}
    assert [kv["key"] for kv in sm.range("", revision=5)[0]] == ["a", "b", "c"]
    assert [kv["key"] for kv in sm.range("", revision=4)[0]] == ["b"]
    assert sm.range("", revision=6) == ([], False)


def test_range_at_a_revision_pages_and_filters(sm: KVStateMachine) -> None:
    for i in range(6):
        run(sm, c.put(f"p/{i}", str(i).encode()))
    run(sm, c.put("q", b"x"))
    run(sm, c.delete("p/2"))
    for i in range(6):
        run(sm, c.put(f"p/{i}", b"new"))  # p/2 comes back later
    kvs, more = sm.range("p/", limit=2, start_after="p/1", revision=8)
    assert [kv["key"] for kv in kvs] == ["p/3", "p/4"] and more
    kvs, more = sm.range("p/", start_after="p/4", revision=8)
    assert [(kv["key"], kv["value"]) for kv in kvs] == [("p/5", b"5")] and not more


def test_keys_holding_nul_bytes_keep_their_own_history(sm: KVStateMachine) -> None:
    run(sm, c.put("a", b"1"))
    run(sm, c.put("a\x00b", b"2"))
    run(sm, c.put("a\x00", b"3"))
    run(sm, c.put("a", b"4"))
    assert [value_at(sm, k, 3) for k in ("a", "a\x00", "a\x00b")] == [b"1", b"3", b"2"]
    assert [kv["key"] for kv in sm.range("a", revision=3)[0]] == ["a", "a\x00", "a\x00b"]
    assert [kv["key"] for kv in sm.range("a\x00", revision=2)[0]] == ["a\x00b"]


def test_compaction_keeps_each_key_as_of_the_compact_revision(sm: KVStateMachine) -> None:
    history(sm)
    result = run(sm, c.compact(5))
    assert result == {"ok": True, "revision": 6, "compact_revision": 5}
    assert sm.compact_revision == 5 and sm.revision == 6
    assert [kv["key"] for kv in sm.range("", revision=5)[0]] == ["a", "b", "c"]
    assert value_at(sm, "a", 5) == b"3" and value_at(sm, "b", 5) == b"1"
    for revision in (1, 4):
        with pytest.raises(CompactedError) as info:
            sm.get("a", revision)
        assert (info.value.compact_revision, info.value.current_revision) == (5, 6)
        with pytest.raises(CompactedError):
            sm.range("", revision=revision)
    with pytest.raises(FutureRevisionError):
        sm.get("a", 7)


def test_compaction_frees_what_no_retained_revision_reads(sm: KVStateMachine) -> None:
    for i in range(10):
        run(sm, c.put("hot", str(i).encode()))
    run(sm, c.put("gone", b"x"))
    run(sm, c.delete("gone"))
    run(sm, c.compact(12))
    view = sm.store.read()
    # hot keeps its write as of 12 (rev 10); the deleted key leaves nothing
    assert view.count("history") == 1 and view.count("index") == 1
    view.close()
    assert sm.get("hot", 12)["value"] == b"9"


def test_compaction_refusals_change_nothing(sm: KVStateMachine) -> None:
    history(sm)
    assert run(sm, c.compact(7))["error"]["code"] == "future_revision"
    assert run(sm, c.compact(3))["ok"]
    again = run(sm, c.compact(3))
    assert again["error"]["code"] == "compacted" and again["compact_revision"] == 3
    assert run(sm, c.compact(True))["error"]["code"] == "invalid_command"  # type: ignore[arg-type]
    assert sm.compact_revision == 3 and sm.revision == 6


def test_a_snapshot_carries_history_and_compaction(sm: KVStateMachine) -> None:
    history(sm)
    run(sm, c.compact(2))
    image = sm.snapshot()
    other = KVStateMachine()
    other.restore(image)
    assert other.snapshot() == image
    assert other.compact_revision == 2
    assert [value_at(other, "a", r) for r in range(2, 7)] == [value_at(sm, "a", r) for r in range(2, 7)]
    with pytest.raises(CompactedError):
        other.get("a", 1)


def test_a_failed_txn_writes_no_history(sm: KVStateMachine) -> None:
    run(sm, c.put("n", b"text"))
    failed = run(sm, c.txn([], [c.txn_put("x", b"1"), c.txn_add("n", 1)], []))
    assert failed["error"]["code"] == "not_a_number" and sm.revision == 1
    view = sm.store.read()
    assert view.count("history") == 1
    view.close()


def test_the_applied_index_commits_with_its_batch(tmp_path: Path) -> None:
    store = LmdbStore(tmp_path / "kv", map_size=64 << 20)
    sm = KVStateMachine(store=store)
    sm.begin_batch()
    run(sm, c.put("a", b"1"))
    run(sm, c.put("a", b"2"))
    sm.commit_batch(7)
    sm.begin_batch()
    run(sm, c.put("a", b"3"))
    sm.abort_batch()  # as if the process died before the commit
    assert (sm.applied_index, sm.revision, sm.get("a")["value"]) == (7, 2, b"2")
    store.close()
    reopened = KVStateMachine(store=LmdbStore(tmp_path / "kv", map_size=64 << 20))
    assert (reopened.applied_index, reopened.revision, reopened.get("a", 1)["value"]) == (7, 2, b"1")
    reopened.close_store()


def test_keys_longer_than_lmdb_allows_keep_their_order_and_history(sm: KVStateMachine) -> None:
    """LMDB keys hold 511 bytes; raftkv keys up to 4 KiB (hashed table keys)."""
    base = "k" * 450
    keys = [base + suffix for suffix in ("z", "a", "m\x00x", "m")] + ["k" * 400, "k" * 399 + "l", base[:420]]
    for i, key in enumerate(keys):
        run(sm, c.put(key, str(i).encode()))
    run(sm, c.put(base + "a", b"new"))
    run(sm, c.delete(base + "z"))
    expected = sorted(keys)
    assert [kv["key"] for kv in sm.range("k")[0]] == [k for k in expected if k != base + "z"]
    assert [kv["key"] for kv in sm.range("", revision=7)[0]] == expected
    assert sm.get(base + "a")["value"] == b"new" and sm.get(base + "a", 7)["value"] == b"1"
    page, more = sm.range(base, limit=2, start_after=base + "a")
    assert [kv["key"] for kv in page] == [base + "m", base + "m\x00x"] and not more
    page, _ = sm.range(base, start_after=base + "a", revision=7)
    assert [kv["key"] for kv in page] == [base + "m", base + "m\x00x", base + "z"]
    assert sm.count(base + "m") == 2
    run(sm, c.compact(9))
    assert sm.get(base + "z", 9) is None and sm.get(base + "a", 9)["value"] == b"new"
    with pytest.raises(CompactedError):
        sm.get(base + "z", 8)

    assert run(sm, c.delete_prefix(base))["deleted"] == 3


def test_repeated_compactions_keep_every_retained_read_and_drop_the_rest(sm: KVStateMachine) -> None:
    """Random writes and compactions against a model of every revision."""
    import random

    rng = random.Random(7)
    states: list[dict[str, bytes]] = [{}]  # the keys and values at each revision
    compacted = 0
    for step in range(400):
        current = dict(states[-1])
        roll = rng.random()
        key = f"k{rng.randrange(12)}"
        if roll < 0.55:
            current[key] = str(step).encode()
            run(sm, c.put(key, current[key]))
        elif roll < 0.75:
            if key not in current:
                continue
            del current[key]
            run(sm, c.delete(key))
        elif roll < 0.8:
            doomed = [k for k in current if k.startswith("k1")]
            if not doomed:
                continue
            for k in doomed:
                del current[k]
            run(sm, c.delete_prefix("k1"))
        else:
            target = rng.randint(compacted, len(states) - 1)
            if target > compacted:
                assert run(sm, c.compact(target))["ok"]
                compacted = target
            continue
        states.append(current)
        assert sm.revision == len(states) - 1
    for revision in range(max(compacted, 1), len(states)):
        got = {kv["key"]: kv["value"] for kv in sm.range("", revision=revision)[0]}
        assert got == states[revision], revision
    # What is left: at most each key's write as of the compact revision, plus every later write.
    view = sm.store.read()
    later = sum(1 for rk, _ in view.scan("history") if int.from_bytes(rk[:8], "big") > compacted)
    assert view.count("history") - later <= len(states[compacted])
    view.close()
