"""Snapshots as files on real clusters: a wiped follower is rebuilt from the
leader's LMDB snapshot (sent in chunks, received into a file, installed by
swapping directories off the event loop) while writes go on, and ends with
every key equal to the leader's."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from raftkv.kv.state_machine import KVStateMachine
from raftkv.kv.store import LmdbStore
from raftkv.local_cluster import LocalCluster
from raftkv.storage.snapshot_stream import LMDB_MAGIC, FileSnapshotData, FileSnapshotSink, is_lmdb_snapshot
from raftkv.storage.snapshot_stream_install import (
    discard_install_leftovers,
    install_lmdb_snapshot,
    write_lmdb_snapshot,
)
from raftkv.storage.snapshots import SnapshotStore
from tests.http import call
from tests.snapshot_helpers import all_keys, load_keys, wait_applied


def _rebuild_wiped_follower(
    tmp: Path, monkeypatch: pytest.MonkeyPatch, keys: int, snapshot_every: int = 50
) -> dict[str, float]:
    # Snapshots that keep almost no log: a wiped node can only be brought
    # back by a snapshot.
    monkeypatch.setenv("RAFTKV_SNAPSHOT_EVERY", str(snapshot_every))
    monkeypatch.setenv("RAFTKV_SNAPSHOT_RETAIN", "10")
    with LocalCluster(tmp) as cluster:
        leader = cluster.node(cluster.wait_ready())
        load_keys(leader.url, "k/", keys, per_txn=100, connections=8)
        follower = next(n for n in cluster.nodes if n is not leader)
        cluster.terminate(follower.node_id)
        shutil.rmtree(follower.data_dir)

        stop = threading.Event()
        written: list[int] = []

        def write_meanwhile() -> None:
            i = 0
            while not stop.is_set():
                if call("PUT", f"{leader.url}/v1/kv/during/{i:06d}", b"x" * 16).status == 200:
                    written.append(i)
                i += 1

        writer = threading.Thread(target=write_meanwhile)
        writer.start()
        try:
            started = time.monotonic()
            started_unix = time.time()
            cluster.start_node(follower.node_id)
            target = call("GET", f"{leader.url}/v1/status").json()["commit_index"]
            status = wait_applied(follower.url, target, timeout=120)
            rebuilt_in = time.monotonic() - started
            rebuilt_unix = time.time()
            # Read now: later reads of every key (pages of 5,000 on the loop) pause it too.
            lag = call("GET", f"{follower.url}/v1/status").json()["loop_lag"]
            leader_lag = call("GET", f"{leader.url}/v1/status").json()["loop_lag"]
            time.sleep(0.5)  # writes keep flowing to the rebuilt follower
        finally:
            stop.set()
            writer.join()
        assert written, "no write succeeded while the follower was rebuilt"
        leader_status = call("GET", f"{leader.url}/v1/status").json()
        wait_applied(follower.url, leader_status["commit_index"])
        assert all_keys(follower.url) == all_keys(leader.url)
        log_text = follower.log_path.read_text()
        assert "installed the leader's snapshot" in log_text and "off the event loop" in log_text, log_text[-3000:]
        assert list((follower.data_dir / "snapshots").glob("*.part")) == []
        # The leader never changed while the follower was rebuilt.
        assert leader_status["term"] == status["term"] and leader_status["leader_id"] == leader.node_id
        snapshot_bytes = max(p.stat().st_size for p in (follower.data_dir / "snapshots").glob("*.snap"))
        def pauses_during_rebuild(lag: dict) -> list:
            return [p for p in lag["recent"] if started_unix <= p[0] <= rebuilt_unix]

        return {
            "pauses_during_rebuild": {
                "follower": pauses_during_rebuild(lag), "leader": pauses_during_rebuild(leader_lag)
            },
            "keys": keys, "snapshot_bytes": snapshot_bytes, "rebuilt_in_s": round(rebuilt_in, 2),
            "writes_meanwhile": len(written), "follower_lag": lag, "leader_lag": leader_lag,
        }


def test_a_wiped_follower_is_rebuilt_from_a_snapshot_while_writes_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    figures = _rebuild_wiped_follower(tmp_path, monkeypatch, keys=3_000)
    print(figures)


def test_a_wiped_follower_gets_a_fresh_snapshot_not_one_with_megabytes_of_log_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The leader's last snapshot has 7.5 MiB of writes after it (more than
    # the engine's 4 MiB stale_snapshot_bytes): the wiped follower must get a
    # snapshot taken for it, which holds them, not that one plus the log.
    monkeypatch.setenv("RAFTKV_SNAPSHOT_EVERY", "40")
    monkeypatch.setenv("RAFTKV_SNAPSHOT_RETAIN", "0")
    with LocalCluster(tmp_path) as cluster:
        leader = cluster.node(cluster.wait_ready())
        follower = next(n for n in cluster.nodes if n is not leader)
        cluster.terminate(follower.node_id)
        shutil.rmtree(follower.data_dir)
        snapshots = leader.data_dir / "snapshots"
        i = 0
        while not list(snapshots.glob("*.snap")):
            assert call("PUT", f"{leader.url}/v1/kv/small/{i}", b"x").status == 200
            i += 1
        for j in range(30):  # 30 entries: fewer than the 40 to the next snapshot
            assert call("PUT", f"{leader.url}/v1/kv/big/{j}", bytes([65 + j % 26]) * (256 << 10)).status == 200
        stale = {p.name for p in snapshots.glob("*.snap")}
        last_write = call("GET", f"{leader.url}/v1/status").json()["commit_index"]
        cluster.start_node(follower.node_id)
        wait_applied(follower.url, last_write, timeout=60)
        installed = [
            int(line.split("snapshot at index ")[1].split()[0])
            for line in follower.log_path.read_text().splitlines()
            if "installed the leader's snapshot at index" in line
        ]
        assert len(installed) == 1 and installed[0] >= last_write, (installed, last_write, stale)
        assert all_keys(follower.url) == all_keys(leader.url)


@pytest.mark.slow
def test_a_wiped_follower_is_rebuilt_from_200k_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    figures = _rebuild_wiped_follower(tmp_path, monkeypatch, keys=200_000, snapshot_every=1_000)
    print(figures)


# ----------------------------------------------------- the pieces, in-process


def _machine_with_keys(path: Path, keys: int) -> KVStateMachine:
    machine = KVStateMachine(store=LmdbStore(path))
    machine.begin_batch()
    for i in range(keys):
        machine.apply_command({"op": "put", "key": f"key/{i:05d}", "value": b"v%d" % i})
    machine.commit_batch(applied_index=keys)
    return machine


def test_an_lmdb_snapshot_saved_loaded_and_installed_keeps_every_key(tmp_path: Path) -> None:
    source = _machine_with_keys(tmp_path / "a" / "kv", 500)
    store = source.store
    assert isinstance(store, LmdbStore)
    snapshots = SnapshotStore(tmp_path / "snapshots")
    view = store.frozen()
    path = snapshots.save_stream({"index": 500, "term": 2}, lambda out: write_lmdb_snapshot(store, view, out))
    view.close()
    loaded = snapshots.load_latest_file()
    assert loaded is not None
    meta, data = loaded
    assert meta == {"index": 500, "term": 2} and isinstance(data, FileSnapshotData)
    assert is_lmdb_snapshot(data) and data[: len(LMDB_MAGIC)] == LMDB_MAGIC
    assert len(data) == path.stat().st_size - data.offset

    target = _machine_with_keys(tmp_path / "b" / "kv", 3)
    old_store = target.store
    assert isinstance(old_store, LmdbStore)
    new_store = install_lmdb_snapshot(data, old_store.path, 777, old_store.map_size)
    target.swap_store(new_store).close()
    discard_install_leftovers(old_store.path)
    assert target.applied_index == 777
    assert target.range()[0] == source.range()[0]
    assert target.revision == source.revision
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["kv"]
    source.close_store()
    target.close_store()


def test_a_corrupt_lmdb_snapshot_file_is_set_aside(tmp_path: Path) -> None:
    source = _machine_with_keys(tmp_path / "kv", 50)
    store = source.store
    assert isinstance(store, LmdbStore)
    snapshots = SnapshotStore(tmp_path / "snapshots")
    view = store.frozen()
    path = snapshots.save_stream({"index": 50, "term": 1}, lambda out: write_lmdb_snapshot(store, view, out))
    view.close()
    with open(path, "r+b") as f:
        f.seek(-100, 2)
        f.write(b"\xff" * 10)
    with pytest.raises(Exception, match="data checksum mismatch"):
        snapshots.load_latest_file()
    source.close_store()


def test_a_sink_receives_chunks_into_a_file(tmp_path: Path) -> None:
    sink = FileSnapshotSink(tmp_path / "r.part")
    for chunk in (b"abc", b"", b"defg"):
        sink.extend(chunk)
    assert len(sink) == 7
    data = sink.finish()
    assert (len(data), data[:], data[2:5], data[5:100], data[9:]) == (7, b"abcdefg", b"cde", b"fg", b"")
    (tmp_path / "r.part").unlink()
    assert data[0:3] == b"abc"  # still readable: the file stays open


def test_closing_a_store_waits_for_a_copy_in_progress(tmp_path: Path) -> None:
    machine = _machine_with_keys(tmp_path / "kv", 10)
    store = machine.store
    assert isinstance(store, LmdbStore)
    view = store.frozen()
    closed = threading.Event()
    closer = threading.Thread(target=lambda: (store.close(), closed.set()))
    closer.start()
    assert not closed.wait(0.2)  # a thread still reads the view
    assert view.get("meta", b"nothing") is None
    view.close()
    assert closed.wait(5)
    closer.join()


@pytest.fixture(autouse=True)
def _no_leftover_threads() -> Iterator[None]:
    yield
