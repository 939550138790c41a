"""Idempotency keys that cannot lie: same key + same request replays, same
key + another request is refused, a key still in flight is refused, and the
retention bounds behave as docs/api.md says, at their real default sizes."""

from __future__ import annotations

from typing import Any

from raftkv.kv import commands as c
from raftkv.kv.idempotency import DEFAULT_MAX_BYTES, DEFAULT_MAX_KEYS
from raftkv.kv.state_machine import KVStateMachine

MIB = 1024 * 1024


def run(sm: KVStateMachine, command: dict[str, Any]) -> dict[str, Any]:
    return sm.apply(c.encode(command))


def test_default_bounds_are_the_documented_ones() -> None:
    sm = KVStateMachine()
    assert (sm.max_idempotency_keys, sm.max_idempotency_bytes) == (100_000, 64 * MIB)
    assert (DEFAULT_MAX_KEYS, DEFAULT_MAX_BYTES) == (100_000, 64 * MIB)


def test_300_puts_of_1_mib_keep_every_key_replayable() -> None:
    """The bug found on `make dev`: with put results counted against 64 MiB,
    the first key of 300 1 MiB puts was forgotten and its retry applied twice."""
    sm = KVStateMachine()
    value = b"v" * MIB
    first = run(sm, c.put("big", value, idem="put-0"))
    for i in range(1, 300):
        run(sm, c.put("big", value, idem=f"put-{i}"))
    revision = sm.revision
    again = run(sm, c.put("big", value, idem="put-0"))
    assert again == {**first, "replayed": True}
    assert sm.revision == revision == 300 and sm.idempotency_keys == 300


def test_txn_reads_beyond_64_mib_expire_the_oldest_result_not_its_key() -> None:
    """Results of txn gets hold the values they read; past 64 MiB of those the
    oldest result is dropped. Its retry is told so (applied once, answer
    gone) and is not applied again."""
    sm = KVStateMachine()
    run(sm, c.put("big", b"r" * MIB))
    read_and_count = [c.txn_get("big"), c.txn_add("reads", 1)]
    for i in range(65):  # 65 MiB read
        result = run(sm, c.txn([], read_and_count, [], idem=f"read-{i}"))
        assert result["ok"]
    assert sm.get("reads")["value"] == b"65"  # type: ignore[index]
    expired = run(sm, c.txn([], read_and_count, [], idem="read-0"))
    assert expired["ok"] is False and expired["error"]["code"] == "idempotency_result_expired"
    assert "applied once" in expired["error"]["message"]
    # the add results' few value bytes put 64 MiB of reads over the bound too
    assert run(sm, c.txn([], read_and_count, [], idem="read-1"))["error"]["code"] == "idempotency_result_expired"
    assert run(sm, c.txn([], read_and_count, [], idem="read-2"))["replayed"] is True
    assert sm.get("reads")["value"] == b"65"  # type: ignore[index]
    assert sm.idempotency_keys == 65


def test_beyond_the_key_count_the_oldest_key_is_forgotten_and_applies_again() -> None:
    sm = KVStateMachine()
    for i in range(DEFAULT_MAX_KEYS + 1):
        run(sm, c.put("n", b"", idem=f"k{i}"))
    assert sm.idempotency_keys == DEFAULT_MAX_KEYS
    revision = sm.revision
    assert run(sm, c.put("n", b"", idem="k1"))["replayed"] is True
    assert "replayed" not in run(sm, c.put("n", b"", idem="k0"))
    assert sm.revision == revision + 1
