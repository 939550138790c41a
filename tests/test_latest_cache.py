"""The state machine's cache of keys' latest state (raftkv/kv/latest_cache.py)
never disagrees with the store: random puts, deletes, txns, leases, aborted
batches, snapshot restores and a tiny cache that evicts all the time, each
followed by a comparison of every key through the cache with a read that
bypasses it."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from raftkv.kv import commands as c
from raftkv.kv import leases
from raftkv.kv.latest_cache import LatestCache
from raftkv.kv.state_machine import KVStateMachine
from raftkv.kv.store import LmdbStore, MemoryStore

KEYS = [f"k{i}" for i in range(12)]


def uncached(sm: KVStateMachine, key: str) -> tuple[bytes, int, int, int, int] | None:
    saved, sm._latest = sm._latest, LatestCache()  # a cache that knows nothing
    try:
        kv = sm.get(key)
    finally:
        sm._latest = saved
    return None if kv is None else (kv["value"], kv["create_revision"], kv["mod_revision"], kv["version"], kv.get("lease", 0))


def cached(sm: KVStateMachine, key: str) -> tuple[bytes, int, int, int, int] | None:
    kv = sm.get(key)
    return None if kv is None else (kv["value"], kv["create_revision"], kv["mod_revision"], kv["version"], kv.get("lease", 0))


def random_command(rng: random.Random, lease_ids: list[int]) -> dict:
    key = rng.choice(KEYS)
    kind = rng.randrange(9)
    lease = rng.choice(lease_ids) if lease_ids and rng.random() < 0.3 else 0
    if kind <= 2:
        return c.put(key, rng.randbytes(rng.randrange(1, 40)), lease=lease)
    if kind == 3:
        return c.delete(key)
    if kind == 4:
        return c.delete_prefix(key[:2])
    if kind == 5:
        return c.txn(
            [{"key": key, "target": "version", "cmp": ">", "value": rng.randrange(3)}],
            [c.txn_put(key, b"t", lease), c.txn_put(rng.choice(KEYS), b"u")],
            [{"op": "delete", "key": key}],
        )
    if kind == 6:
        lease_id = rng.randrange(1, 6)
        return leases.grant(lease_id, 10)
    if kind == 7 and lease_ids:
        return leases.revoke(rng.choice(lease_ids))
    return c.put(key, b"p")


@pytest.mark.parametrize("store_kind", ["memory", "lmdb"])
def test_cached_reads_always_match_the_store(store_kind: str, tmp_path: Path) -> None:
    rng = random.Random(7)
    store = MemoryStore() if store_kind == "memory" else LmdbStore(tmp_path / "kv", map_size=64 << 20)
    sm = KVStateMachine(store=store)
    sm._latest = LatestCache(max_entries=5, max_bytes=200)  # evicts all the time
    index = 0
    snapshot: bytes | None = None
    for step in range(1500):
        lease_ids = list(range(1, 6))  # puts naming a lease not granted are refused, which is fine
        sm.begin_batch()
        for _ in range(rng.randrange(1, 6)):
            sm.apply(c.encode(random_command(rng, lease_ids)))
            if rng.random() < 0.3:  # reads inside the open batch see its writes
                key = rng.choice(KEYS)
                assert cached(sm, key) == uncached(sm, key)
        if rng.random() < 0.1:
            sm.abort_batch()
        else:
            index += 1
            sm.commit_batch(index)
        if rng.random() < 0.02:
            snapshot = sm.snapshot()
        if snapshot is not None and rng.random() < 0.01:
            sm.begin_batch()
            sm.restore(snapshot, index)
            sm.commit_batch(index)
        for key in KEYS:
            assert cached(sm, key) == uncached(sm, key), (step, key)
    assert sm._latest.hits > 0 and sm._latest.misses > 0
    store.close()
