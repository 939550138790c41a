"""SnapshotStore tests on real files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from raftkv.storage import SnapshotCorruptError
from raftkv.storage.snapshots import SnapshotStore


def meta(index: int, term: int = 1) -> dict:
    return {"index": index, "term": term, "conf": {"voters": ["n1", "n2", "n3"], "learners": []}}


def snap_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".snap"))


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_empty_store(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    assert store.load_latest() is None
    assert store.latest_meta() is None


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    data = os.urandom(100_000)
    path = store.save(meta(10, 2), data)
    assert path.exists() and path.parent == tmp_path
    assert not list(tmp_path.glob("*.tmp"))
    reopened = SnapshotStore(tmp_path)
    assert reopened.load_latest() == (meta(10, 2), data)
    assert reopened.latest_meta() == meta(10, 2)
    assert reopened.last_load_skipped == []


def test_empty_data_round_trips(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    store.save(meta(0, 0), b"")
    assert store.load_latest() == (meta(0, 0), b"")


def test_keeps_the_newest_two(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    for index in (5, 10, 15, 20):
        store.save(meta(index), f"state@{index}".encode())
    assert snap_files(tmp_path) == [
        "snapshot-00000000000000000015-00000000000000000001.snap",
        "snapshot-00000000000000000020-00000000000000000001.snap",
    ]
    assert store.load_latest() == (meta(20), b"state@20")


def test_corrupt_latest_falls_back_to_previous(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    store.save(meta(10), b"older state")
    newest = store.save(meta(20), b"newer state" * 100)
    flip_byte(newest, os.path.getsize(newest) - 5)  # inside the data
    loaded = store.load_latest()
    assert loaded == (meta(10), b"older state")
    assert store.last_load_skipped == [(newest, "data checksum mismatch")]
    assert not newest.exists()
    assert newest.with_name(newest.name + ".corrupt").exists()  # kept for inspection
    # The next save must not prune the only good snapshot away.
    store.save(meta(30), b"newest")
    assert store.load_latest() == (meta(30), b"newest")
    assert len(snap_files(tmp_path)) == 2


@pytest.mark.parametrize(
    "damage",
    ["magic", "header", "meta", "truncated", "data"],
)
def test_every_kind_of_damage_is_detected(tmp_path: Path, damage: str) -> None:
    store = SnapshotStore(tmp_path)
    store.save(meta(1), b"good")
    newest = store.save(meta(2), b"x" * 1000)
    if damage == "magic":
        flip_byte(newest, 0)
    elif damage == "header":
        flip_byte(newest, 14)  # meta length
    elif damage == "meta":
        flip_byte(newest, 30)
    elif damage == "truncated":
        with open(newest, "r+b") as f:
            f.truncate(os.path.getsize(newest) - 1)
    else:
        flip_byte(newest, os.path.getsize(newest) - 1)
    assert store.load_latest() == (meta(1), b"good")
    assert len(store.last_load_skipped) == 1


def test_latest_meta_skips_bad_header(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    store.save(meta(1), b"a")
    newest = store.save(meta(2), b"b")
    flip_byte(newest, 30)
    assert store.latest_meta() == meta(1)


def test_all_snapshots_corrupt_is_an_error_not_an_empty_start(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    for index in (1, 2):
        flip_byte(store.save(meta(index), b"state"), 0)
    with pytest.raises(SnapshotCorruptError, match="no snapshot"):
        store.load_latest()


def test_interrupted_save_leftover_is_removed(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    store.save(meta(1), b"good")
    (tmp_path / "snapshot-00000000000000000002-00000000000000000001.snap.tmp").write_bytes(b"half")
    reopened = SnapshotStore(tmp_path)
    assert not list(tmp_path.glob("*.tmp"))
    assert reopened.load_latest() == (meta(1), b"good")


@pytest.mark.parametrize(
    ("bad_meta", "message"),
    [
        ({"term": 1}, "index"),
        ({"index": -1, "term": 1}, "index"),
        ({"index": 1, "term": "2"}, "term"),
        ({"index": True, "term": 1}, "index"),
        ({"index": 1, "term": 1, "x": object()}, "JSON"),
        ([1, 2], "dict"),
    ],
)
def test_bad_meta_is_refused_and_nothing_written(tmp_path: Path, bad_meta: object, message: str) -> None:
    store = SnapshotStore(tmp_path)
    with pytest.raises(ValueError, match=message):
        store.save(bad_meta, b"data")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_older_snapshot_than_newest_is_refused(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    store.save(meta(10), b"ten")
    with pytest.raises(ValueError, match="older"):
        store.save(meta(5), b"five")
    assert store.load_latest() == (meta(10), b"ten")
