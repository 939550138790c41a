"""Making and installing LMDB snapshots (snapshot_stream.py's format):
blocking file work meant for a worker thread, never the event loop.

Installing swaps directories, crash-safe at every step:

1. the snapshot's LMDB file is written to ``kv.next/`` and fsynced, its
   applied index set to the snapshot's, marked closed cleanly;
2. ``kv/`` is renamed to ``kv.old/`` and ``kv.next/`` to ``kv/``, and the
   data dir is fsynced; the old store stays open (and readable by the
   event loop) on its renamed directory until it is swapped out;
3. the caller opens ``kv/``, swaps it in, closes the old store and calls
   :func:`discard_install_leftovers`.

The snapshot itself was saved in the snapshot store before step 1. A crash
before the first rename leaves the old store (behind the snapshot, so the
restart restores the snapshot); between the renames, no ``kv/``: the
restart opens an empty store, which is behind the snapshot too; after the
second, the new store. Leftover ``kv.next``/``kv.old`` are deleted when the
engine starts.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path
from typing import BinaryIO

import lmdb

from raftkv.kv.mvcc import META_APPLIED_INDEX, int_bytes
from raftkv.kv.store import TABLES, LmdbStore, ReadTxn, mark_closed_clean
from raftkv.storage.snapshot_stream import LMDB_MAGIC, FileSnapshotData, SnapshotBytes, is_lmdb_snapshot
from raftkv.storage.wal import fsync_dir

_NEXT = ".next"
_OLD = ".old"
_COPY = ".copy"  # + a random part: copies may run at once (a snapshot, a backup)


def write_lmdb_snapshot(store: LmdbStore, view: ReadTxn, out: BinaryIO) -> None:
    """Snapshot data (``LMDB_MAGIC`` + a compacted LMDB file as ``view``
    sees it) into ``out``."""
    out.write(LMDB_MAGIC)
    scratch = store.path.with_name(f"{store.path.name}{_COPY}-{secrets.token_hex(4)}")
    store.copy_into(view, out, scratch)


def install_lmdb_snapshot(data: SnapshotBytes, kv_dir: Path, applied_index: int, map_size: int) -> LmdbStore:
    """Make ``kv_dir`` the LMDB file in ``data`` (steps 1 and 2 above) and
    open it; its applied index is ``applied_index``."""
    if not is_lmdb_snapshot(data):
        raise ValueError("not an LMDB snapshot")
    next_dir = kv_dir.with_name(kv_dir.name + _NEXT)
    shutil.rmtree(next_dir, ignore_errors=True)
    next_dir.mkdir(parents=True)
    with open(next_dir / "data.mdb", "wb") as out:
        if isinstance(data, FileSnapshotData):
            data.copy_into(out, len(LMDB_MAGIC))
        else:
            out.write(memoryview(data)[len(LMDB_MAGIC) :])
        out.flush()
        os.fsync(out.fileno())
    env = lmdb.open(str(next_dir), map_size=map_size, max_dbs=len(TABLES), sync=True)
    try:
        meta = env.open_db(b"meta")
        with env.begin(write=True) as txn:
            txn.put(META_APPLIED_INDEX, int_bytes(applied_index), db=meta)
            mark_closed_clean(txn, meta)
        env.sync(True)
    finally:
        env.close()
    fsync_dir(next_dir)
    old_dir = kv_dir.with_name(kv_dir.name + _OLD)
    shutil.rmtree(old_dir, ignore_errors=True)
    if kv_dir.exists():
        os.rename(kv_dir, old_dir)
    os.rename(next_dir, kv_dir)
    fsync_dir(kv_dir.parent)
    return LmdbStore(kv_dir, map_size)


def discard_install_leftovers(kv_dir: Path) -> None:
    """Delete what an install left beside ``kv_dir`` (see the module doc)."""
    for suffix in (_NEXT, _OLD):
        shutil.rmtree(kv_dir.with_name(kv_dir.name + suffix), ignore_errors=True)
    for scratch in kv_dir.parent.glob(f"{kv_dir.name}{_COPY}-*"):
        shutil.rmtree(scratch, ignore_errors=True)
    for backup in kv_dir.parent.glob("backup-*.tmp"):
        backup.unlink(missing_ok=True)
