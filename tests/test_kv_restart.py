"""Restart on the state machine's own store: the store's applied index
decides what the WAL replays (raftkv.engines.native.recovery), and a kill -9
of every node mid-load loses no acknowledged write and applies none twice
(real `raftkv serve` processes, LMDB in their data dirs)."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import pytest

from raftkv.engines.native.recovery import RecoveryError, recover
from raftkv.local_cluster import LocalCluster
from raftkv.raft.types import ConfState, SnapshotMeta
from raftkv.storage.records import HardState as StoredHardState
from raftkv.storage.records import LogRecord
from raftkv.storage.wal import RecoveredLog
from tests.http import call, call_json


def wal_log(entries: list[tuple[int, int]], commit: int = 0, compacted: int = 0) -> RecoveredLog:
    records = [LogRecord(index, term, 0, b"x") for index, term in entries]
    last = records[-1].index if records else compacted
    return RecoveredLog(
        hard_state=StoredHardState(1, None, commit),
        entries=records,
        first_index=records[0].index if records else last + 1,
        last_index=last,
        truncated_tail_bytes=0,
        compacted_index=compacted,
    )


SNAP = SnapshotMeta(10, 1, ConfState(("n1",), ()))


def test_the_store_applied_index_is_not_replayed_and_counts_as_committed() -> None:
    log = wal_log([(i, 1) for i in range(11, 21)], commit=12, compacted=10)
    rec = recover(SNAP, log, store_applied=15)
    assert (rec.applied, rec.restore_snapshot) == (15, False)
    # It applied 15, so 15 was committed even if the hard state had not said so yet.
    assert rec.restored.hard_state.commit == 15
    assert [e.index for e in rec.restored.entries][0] == 11  # the log stays whole


def test_a_store_behind_the_snapshot_is_restored_from_it() -> None:
    rec = recover(SNAP, wal_log([(11, 1)], compacted=10), store_applied=0)
    assert (rec.applied, rec.restore_snapshot) == (10, True)


def test_a_store_ahead_of_the_kept_log_goes_back_to_the_snapshot() -> None:
    # A leader's snapshot at 10 (term 2) over our old log: the entries after
    # it are dropped as another log's, so the store must not be past 10.
    rec = recover(SnapshotMeta(10, 2, ConfState(("n1",), ())), wal_log([(10, 1), (11, 1)]), store_applied=11)
    assert (rec.applied, rec.restore_snapshot) == (10, True)


def test_a_store_ahead_of_a_wal_without_snapshot_starts_over_from_the_empty_state() -> None:
    # A leader applied entries its own WAL write had not finished (kill -9).
    rec = recover(None, wal_log([(1, 1), (2, 1)]), store_applied=9)
    assert (rec.applied, rec.restore_snapshot) == (0, True)
    assert [e.index for e in rec.restored.entries] == [1, 2]


def test_a_compacted_wal_without_its_snapshot_still_refuses_to_start() -> None:
    with pytest.raises(RecoveryError):
        recover(None, wal_log([(11, 1)], compacted=10), store_applied=11)


def test_kill_9_of_every_node_mid_load_loses_no_ack_and_applies_nothing_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Snapshots (and WAL compaction) every 150 entries happen during the load.
    monkeypatch.setenv("RAFTKV_SNAPSHOT_EVERY", "150")
    with LocalCluster(tmp_path, engine="native") as c:
        c.wait_ready()
        urls = [n.url for n in c.nodes]
        acked: set[str] = set()
        attempted: set[str] = set()
        stop = threading.Event()
        lock = threading.Lock()

        def writer(w: int) -> None:
            rng = random.Random(w)
            i = 0
            while not stop.is_set():
                key = f"w/{w}/{i}"
                i += 1
                body = {
                    "success": [
                        {"op": "put", "key": key, "value": "x"},
                        {"op": "add", "key": "counter", "delta": 1},
                    ]
                }
                with lock:
                    attempted.add(key)
                try:
                    answer = call_json("POST", f"{rng.choice(urls)}/v1/txn?timeout=2", body)
                except OSError:
                    continue
                if answer.status == 200:
                    with lock:
                        acked.add(key)

        writers = [threading.Thread(target=writer, args=(w,)) for w in range(6)]
        for t in writers:
            t.start()
        deadline = time.monotonic() + 20
        while len(acked) < 600 and time.monotonic() < deadline:
            time.sleep(0.05)
        for node in c.nodes:  # every node, mid-load
            c.kill(node.node_id)
        stop.set()
        for t in writers:
            t.join(15)
        assert len(acked) >= 600, f"only {len(acked)} writes acknowledged before the kill"
        for node in c.nodes:
            c.start_node(node.node_id)
        leader = c.wait_ready(timeout=60)
        url = c.node(leader).url
        present: dict[str, int] = {}
        start_after = None
        while True:
            query = "prefix=w/" + ("" if start_after is None else f"&start_after={start_after}")
            page = call("GET", f"{url}/v1/kv?{query}&keys_only=true").json()
            for kv in page["kvs"]:
                present[kv["key"]] = kv["version"]
            if not page["more"]:
                break
            start_after = page["kvs"][-1]["key"]
        counter = int(call("GET", f"{url}/v1/kv/counter").body)
    missing = acked - present.keys()
    assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {sorted(missing)[:3]}"
    assert present.keys() <= attempted
    # A second application of an entry would put its key again (version 2)
    # and add to the counter once more.
    twice = [key for key, version in present.items() if version != 1]
    assert not twice, f"applied twice: {twice[:3]}"
    assert counter == len(present)
