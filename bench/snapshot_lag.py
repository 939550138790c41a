"""Event-loop pauses while a node makes, sends, receives and installs an
LMDB snapshot, in one process (no network, no other load).

    python bench/snapshot_lag.py --keys 200000 1000000

For each size: a store is filled through KVStateMachine (64-byte keys'
values, txn batches), then on a running asyncio loop with a 1 ms probe
task: the leader's snapshot (read transaction copied into a snapshot file
on a thread), reading it in 1 MiB chunks as the core does to send them,
writing them into a FileSnapshotSink as a follower's core does, saving
that into a snapshot store on a thread, and installing it by directory
swap on a thread with only the store swap on the loop. Prints seconds and
the longest loop pause of each phase as JSON lines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from raftkv.kv.state_machine import KVStateMachine
from raftkv.kv.store import LmdbStore
from raftkv.storage.snapshot_stream import FileSnapshotSink
from raftkv.storage.snapshot_stream_install import install_lmdb_snapshot, write_lmdb_snapshot
from raftkv.storage.snapshots import SnapshotStore


class Probe:
    def __init__(self) -> None:
        self.max_ms = 0.0

    async def run(self) -> None:
        while True:
            start = time.perf_counter()
            await asyncio.sleep(0.001)
            self.max_ms = max(self.max_ms, (time.perf_counter() - start - 0.001) * 1000)


def fill(path: Path, keys: int) -> KVStateMachine:
    machine = KVStateMachine(store=LmdbStore(path))
    value = b"v" * 64
    for start in range(0, keys, 10_000):
        machine.begin_batch()
        for i in range(start, min(start + 10_000, keys)):
            machine.apply_command({"op": "put", "key": f"key/{i:010d}", "value": value})
        machine.commit_batch(applied_index=start // 10_000 + 1)
    return machine


async def phases(machine: KVStateMachine, base: Path) -> dict[str, Any]:
    probe = Probe()
    task = asyncio.create_task(probe.run())
    await asyncio.sleep(0.05)
    figures: dict[str, Any] = {}

    async def phase(name: str, work: Any) -> Any:
        probe.max_ms = 0.0
        start = time.perf_counter()
        result = await work
        figures[name] = {"s": round(time.perf_counter() - start, 3), "max_pause_ms": round(probe.max_ms, 2)}
        return result

    store = machine.store
    assert isinstance(store, LmdbStore)
    leader_snapshots = SnapshotStore(base / "leader-snapshots")
    view = store.frozen()

    def make() -> Path:
        try:
            return leader_snapshots.save_stream({"index": 1, "term": 1}, lambda out: write_lmdb_snapshot(store, view, out))
        finally:
            view.close()

    path = await phase("make_snapshot", asyncio.to_thread(make))
    data = leader_snapshots.data_of(path)
    figures["snapshot_bytes"] = len(data)
    sink = FileSnapshotSink(base / "receiving.part")

    async def send_and_receive() -> Any:
        for at in range(0, len(data), 1 << 20):
            sink.extend(data[at : at + (1 << 20)])  # what the leader's core reads and the follower's core writes
            await asyncio.sleep(0)
        return sink.finish()

    received = await phase("send_and_receive_chunks", send_and_receive())
    follower_snapshots = SnapshotStore(base / "follower-snapshots")
    await phase("save_received", asyncio.to_thread(follower_snapshots.save, {"index": 1, "term": 1}, received))
    target = KVStateMachine(store=LmdbStore(base / "follower" / "kv"))
    old = target.store
    assert isinstance(old, LmdbStore)

    async def install() -> None:
        new_store = await asyncio.to_thread(install_lmdb_snapshot, received, old.path, 1, old.map_size)
        swapped = target.swap_store(new_store)
        await asyncio.to_thread(swapped.close)

    await phase("install", install())
    figures["keys_installed"] = target.count()
    task.cancel()
    target.close_store()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, nargs="+", default=[200_000])
    args = parser.parse_args()
    for keys in args.keys:
        with tempfile.TemporaryDirectory() as tmp:
            base = Path(tmp)
            start = time.perf_counter()
            machine = fill(base / "leader" / "kv", keys)
            filled = time.perf_counter() - start
            figures = asyncio.run(phases(machine, base))
            machine.close_store()
            print(json.dumps({"keys": keys, "fill_s": round(filled, 1), **figures}), flush=True)


if __name__ == "__main__":
    main()
