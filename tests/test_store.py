"""The two stores behind the state machine behave alike: MemoryStore and
LmdbStore (a real LMDB environment in a temporary directory)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from raftkv.kv.store import LmdbStore, MemoryStore, Store


@pytest.fixture(params=["memory", "lmdb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    made: Store = MemoryStore() if request.param == "memory" else LmdbStore(tmp_path / "kv", map_size=64 << 20)
    yield made
    made.close()


def fill(store: Store, items: dict[bytes, bytes], table: str = "latest") -> None:
    txn = store.write()
    for key, value in items.items():
        txn.put(table, key, value)
    txn.commit()


def test_scan_is_ordered_and_bounded(store: Store) -> None:
    fill(store, {b"b": b"2", b"a": b"1", b"c": b"3", b"a\x00": b"0"})
    txn = store.read()
    assert [k for k, _ in txn.scan("latest")] == [b"a", b"a\x00", b"b", b"c"]
    assert list(txn.scan("latest", b"a\x00", b"c")) == [(b"a\x00", b"0"), (b"b", b"2")]
    assert list(txn.scan("latest", b"d")) == []
    assert txn.count("latest") == 4 and txn.count("history") == 0
    txn.close()


def test_floor_finds_the_greatest_key_at_or_below(store: Store) -> None:
    fill(store, {b"b": b"2", b"d": b"4"})
    txn = store.read()
    assert txn.floor("latest", b"a") is None
    assert txn.floor("latest", b"b") == (b"b", b"2")
    assert txn.floor("latest", b"c") == (b"b", b"2")
    assert txn.floor("latest", b"z") == (b"d", b"4")
    assert txn.floor("history", b"z") is None
    txn.close()


def test_a_write_sees_its_own_writes_and_abort_undoes_them(store: Store) -> None:
    fill(store, {b"keep": b"1", b"gone": b"2"})
    txn = store.write()
    txn.put("latest", b"new", b"3")
    txn.delete("latest", b"gone")
    txn.put("latest", b"keep", b"changed")
    assert txn.get("latest", b"new") == b"3" and txn.get("latest", b"gone") is None
    txn.abort()
    view = store.read()
    assert list(view.scan("latest")) == [(b"gone", b"2"), (b"keep", b"1")]
    view.close()
    txn = store.write()
    assert txn.count("latest") == 2  # counts are remembered within a transaction...
    txn.put("latest", b"more", b"4")
    assert txn.count("latest") == 3  # ...until a write to their table
    txn.put("history", b"h", b"")
    assert (txn.count("latest"), txn.count("history")) == (3, 1)
    txn.delete("latest", b"more")
    assert txn.count("latest") == 2
    txn.clear("latest")
    assert txn.count("latest") == 0
    txn.put("latest", b"after", b"5")
    assert txn.count("latest") == 1
    txn.abort()
    view = store.read()
    assert view.count("latest") == 2
    view.close()


def test_frozen_view_does_not_see_later_commits_from_another_thread(store: Store) -> None:
    fill(store, {b"a": b"1"})
    frozen = store.frozen()
    fill(store, {b"a": b"2", b"b": b"3"})
    seen: list[object] = []
    reader = threading.Thread(target=lambda: seen.append(list(frozen.scan("latest"))))
    reader.start()
    reader.join()
    frozen.close()
    assert seen == [[(b"a", b"1")]]


def test_lmdb_keeps_committed_data_across_reopening(tmp_path: Path) -> None:
    store = LmdbStore(tmp_path / "kv", map_size=64 << 20)
    fill(store, {b"a": b"1"}, table="meta")
    txn = store.write()
    txn.put("meta", b"b", b"never committed")
    txn.abort()
    store.close()
    again = LmdbStore(tmp_path / "kv", map_size=64 << 20)
    view = again.read()
    assert view.get("meta", b"a") == b"1" and view.get("meta", b"b") is None
    view.close()
    again.close()


def test_lmdb_after_a_reboot_without_a_clean_close_starts_empty(tmp_path: Path) -> None:
    """An unsynced LMDB file cannot be trusted after a machine crash: the
    store empties itself, so the engine rebuilds it from snapshot and WAL."""
    store = LmdbStore(tmp_path / "kv", map_size=64 << 20, boot_id=b"boot-1")
    fill(store, {b"applied_index": b"\x00" * 7 + b"\x09"}, table="meta")
    store._env.close()  # not close(): the process died without marking it clean
    # The same boot trusts the file...
    same_boot = LmdbStore(tmp_path / "kv", map_size=64 << 20, boot_id=b"boot-1")
    assert not same_boot.rebuilt
    view = same_boot.read()
    assert view.get("meta", b"applied_index") == b"\x00" * 7 + b"\x09"
    view.close()
    same_boot._env.close()  # dies again, without a clean close
    # ...another boot does not.
    rebooted = LmdbStore(tmp_path / "kv", map_size=64 << 20, boot_id=b"boot-2")
    view = rebooted.read()
    assert rebooted.rebuilt and view.get("meta", b"applied_index") is None
    view.close()
    fill(rebooted, {b"applied_index": b"\x01"}, table="meta")
    rebooted.close()  # clean: synced, so a later boot trusts it
    after_clean_close = LmdbStore(tmp_path / "kv", map_size=64 << 20, boot_id=b"boot-3")
    view = after_clean_close.read()
    assert not after_clean_close.rebuilt and view.get("meta", b"applied_index") == b"\x01"
    view.close()
    after_clean_close.close()
