"""Where the state machine keeps its state: ordered bytes keys in a few
named tables, read through read transactions and changed through write
transactions that commit atomically.

Two implementations with the same behaviour:

* :class:`MemoryStore` -- sorted dicts in memory, for unit tests and the
  simulator;
* :class:`LmdbStore` -- an LMDB environment in a directory: a memory-mapped
  B+tree whose read transactions see one consistent committed state while
  writes go on (the design etcd's bbolt copies). docs/storage.md gives its
  sync policy.

The state machine is the only writer, and it runs on one thread; a read
transaction may be handed to another thread (snapshots are encoded off the
event loop) and sees the state as of its start.
"""

from __future__ import annotations

import abc
import errno
import os
import resource
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import lmdb
from sortedcontainers import SortedDict

from raftkv.storage.snapshot_stream import copy_file_range_all

# Side tables: state of features beside the key space (leases, users and
# roles, member addresses), owned by their modules; snapshots carry them
# byte for byte.
EXTRA_TABLES = ("lease", "auth", "members")
# Every table a store holds. docs/state-machine.md says what each one keeps.
TABLES = ("meta", "latest", "index", "history", "idem", *EXTRA_TABLES)


class ReadTxn(abc.ABC):
    """A consistent view of the store."""

    @abc.abstractmethod
    def get(self, table: str, key: bytes) -> bytes | None: ...

    @abc.abstractmethod
    def scan(self, table: str, start: bytes = b"", stop: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        """Items with ``start <= key < stop`` (no ``stop``: to the end), in key order."""

    @abc.abstractmethod
    def floor(self, table: str, key: bytes) -> tuple[bytes, bytes] | None:
        """The item with the greatest key ``<= key``, or None."""

    @abc.abstractmethod
    def count(self, table: str) -> int: ...

    def close(self) -> None:
        """Release the view (a no-op for stores that need none)."""


class WriteTxn(ReadTxn):
    """Reads see this transaction's own writes."""

    @abc.abstractmethod
    def put(self, table: str, key: bytes, value: bytes) -> None: ...

    @abc.abstractmethod
    def delete(self, table: str, key: bytes) -> None: ...

    @abc.abstractmethod
    def clear(self, table: str) -> None: ...

    @abc.abstractmethod
    def commit(self) -> None: ...

    @abc.abstractmethod
    def abort(self) -> None: ...


class Store(abc.ABC):
    @abc.abstractmethod
    def read(self) -> ReadTxn:
        """A view of the committed state; close it when done."""

    @abc.abstractmethod
    def frozen(self) -> ReadTxn:
        """A view of the committed state that later writes do not change,
        safe to read from another thread; close it when done."""

    @abc.abstractmethod
    def write(self) -> WriteTxn:
        """Begin the one write transaction (never two at once)."""

    def sync(self) -> None:
        """Make every committed transaction durable (a no-op in memory)."""

    def close(self) -> None:
        """Release files and memory maps."""

    def used_bytes(self) -> int | None:
        """Bytes the tables' pages take (what a space quota counts; pages
        freed by deletes and compaction are not counted); None where the
        store cannot tell (in memory)."""
        return None


# ---------------------------------------------------------------- in memory


class _MemoryView(ReadTxn):
    def __init__(self, tables: dict[str, SortedDict]) -> None:
        self._tables = tables

    def get(self, table: str, key: bytes) -> bytes | None:
        return self._tables[table].get(key)

    def scan(self, table: str, start: bytes = b"", stop: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        data = self._tables[table]
        # A list of keys first: the caller may write to the table while it iterates.
        for key in list(data.irange(start, stop, inclusive=(True, False))):
            value = data.get(key)
            if value is not None:
                yield key, value

    def floor(self, table: str, key: bytes) -> tuple[bytes, bytes] | None:
        data = self._tables[table]
        i = data.bisect_right(key)
        if i == 0:
            return None
        found = data.keys()[i - 1]
        return found, data[found]

    def count(self, table: str) -> int:
        return len(self._tables[table])


class _MemoryWrite(_MemoryView, WriteTxn):
    """Writes go straight into the tables; an undo journal makes abort work."""

    def __init__(self, store: MemoryStore) -> None:
        super().__init__(store._tables)
        self._store = store
        self._undo: dict[tuple[str, bytes], bytes | None] = {}
        self._cleared: dict[str, SortedDict] = {}

    def put(self, table: str, key: bytes, value: bytes) -> None:
        data = self._tables[table]
        if table not in self._cleared:
            self._undo.setdefault((table, key), data.get(key))
        data[key] = value

    def delete(self, table: str, key: bytes) -> None:
        data = self._tables[table]
        if table not in self._cleared:
            self._undo.setdefault((table, key), data.get(key))
        data.pop(key, None)

    def clear(self, table: str) -> None:
        if table not in self._cleared:
            self._cleared[table] = self._tables[table].copy()
        self._tables[table].clear()

    def commit(self) -> None:
        self._undo.clear()
        self._cleared.clear()
        self._store._writing = False

    def abort(self) -> None:
        for table, saved in self._cleared.items():
            self._tables[table] = saved
        for (table, key), old in self._undo.items():
            if table in self._cleared:
                continue
            if old is None:
                self._tables[table].pop(key, None)
            else:
                self._tables[table][key] = old
        self.commit()


class MemoryStore(Store):
    def __init__(self) -> None:
        self._tables: dict[str, SortedDict] = {name: SortedDict() for name in TABLES}
        self._writing = False

    def read(self) -> ReadTxn:
        """A live view: fine on the writer's thread between write
        transactions; use :meth:`frozen` for another thread."""
        return _MemoryView(self._tables)

    def frozen(self) -> ReadTxn:
        """A copy of the committed state, safe to read from any thread."""
        return _MemoryView({name: data.copy() for name, data in self._tables.items()})

    def write(self) -> WriteTxn:
        if self._writing:
            raise RuntimeError("a write transaction is already open")
        self._writing = True
        return _MemoryWrite(self)


# -------------------------------------------------------------------- LMDB

# The map is the most the file may grow to (address space, not memory).
DEFAULT_MAP_SIZE = 64 << 30


def map_size_for_quota(quota_bytes: int) -> int:
    """A map with room past a space quota (raftkv/server/quota.py): writes
    proposed just under the quota may take the store past it, and an apply
    must never fail for want of map space."""
    return max(DEFAULT_MAP_SIZE, 2 * quota_bytes)


def explain_write_failure(path: Path, exc: lmdb.Error) -> OSError | lmdb.Error:
    """The OS error behind a failed LMDB write, where it can be told.

    LMDB reports a short write (the disk filled up, or the file hit the
    process's file-size limit) as a bare EIO, which hides what an operator
    must fix; so look at the disk and the limit before passing it on.
    """
    if "Input/output error" not in str(exc):
        return exc
    data_file = path / "data.mdb"
    try:
        disk = os.statvfs(path)
        free = disk.f_bavail * disk.f_frsize
        size = data_file.stat().st_size
    except OSError:
        return exc
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY and size >= limit - (1 << 20):
        return OSError(
            errno.EFBIG,
            f"{os.strerror(errno.EFBIG)}: {data_file} is {size} bytes and this process "
            f"may not write files past {limit} bytes (ulimit -f); LMDB said: {exc}",
        )
    if free < (1 << 20):
        return OSError(
            errno.ENOSPC,
            f"{os.strerror(errno.ENOSPC)}: {free} bytes free on the disk holding {path}; LMDB said: {exc}",
        )
    return exc


class _LmdbTxn(WriteTxn):
    def __init__(
        self, env: lmdb.Environment, dbs: dict[str, lmdb._Database], write: bool, path: Path | None = None
    ) -> None:
        self._txn = env.begin(write=write, buffers=False)
        self._dbs = dbs
        self._path = path
        # Entry counts read in this transaction, forgotten on a write to their
        # table: every put asks whether the lease table is empty, and
        # stat() builds a dict each time.
        self._counts: dict[str, int] = {}

    def get(self, table: str, key: bytes) -> bytes | None:
        return self._txn.get(key, db=self._dbs[table])

    def scan(self, table: str, start: bytes = b"", stop: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        with self._txn.cursor(db=self._dbs[table]) as cursor:
            if not cursor.set_range(start):
                return
            while True:
                key = cursor.key()
                if stop is not None and key >= stop:
                    return
                yield key, cursor.value()
                if not cursor.next():
                    return

    def floor(self, table: str, key: bytes) -> tuple[bytes, bytes] | None:
        with self._txn.cursor(db=self._dbs[table]) as cursor:
            if cursor.set_range(key):
                if cursor.key() == key:
                    return key, cursor.value()
                if not cursor.prev():
                    return None
            elif not cursor.last():
                return None
            return cursor.key(), cursor.value()

    def count(self, table: str) -> int:
        count = self._counts.get(table)
        if count is None:
            count = self._counts[table] = int(self._txn.stat(self._dbs[table])["entries"])
        return count

    def put(self, table: str, key: bytes, value: bytes) -> None:
        self._counts.pop(table, None)
        self._txn.put(key, value, db=self._dbs[table])

    def delete(self, table: str, key: bytes) -> None:
        self._counts.pop(table, None)
        self._txn.delete(key, db=self._dbs[table])

    def clear(self, table: str) -> None:
        self._counts.pop(table, None)
        self._txn.drop(self._dbs[table], delete=False)

    def commit(self) -> None:
        try:
            self._txn.commit()
        except lmdb.Error as exc:
            if self._path is None:
                raise
            raise explain_write_failure(self._path, exc) from exc

    def abort(self) -> None:
        self._txn.abort()

    def close(self) -> None:
        self._txn.abort()  # a read transaction ends by aborting it


class _CountedView(_LmdbTxn):
    def __init__(self, store: LmdbStore, env: lmdb.Environment, dbs: dict[str, lmdb._Database]) -> None:
        super().__init__(env, dbs, write=False)
        self._store: LmdbStore | None = store

    def close(self) -> None:
        super().close()
        store, self._store = self._store, None
        if store is not None:
            store._view_closed()


# How long closing a store waits for other threads' views (a copy in progress).
_VIEW_CLOSE_WAIT_SECONDS = 120.0
_BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")
_META_BOOT_ID = b"store_boot_id"
_META_CLOSED_CLEAN = b"store_closed_clean"


def mark_closed_clean(txn: lmdb.Transaction, meta_db: lmdb._Database) -> None:
    """Mark a store as closed cleanly (synced) in its meta table: opened
    again it is trusted even after a reboot. An installed snapshot's file
    is written and synced whole, so it gets the mark."""
    txn.put(_META_CLOSED_CLEAN, b"1", db=meta_db)


def current_boot_id() -> bytes:
    """This boot of the machine (Linux); b"" where it cannot be told."""
    try:
        return _BOOT_ID_FILE.read_bytes().strip()
    except OSError:
        return b""


class LmdbStore(Store):
    """An LMDB environment in ``path`` (a directory).

    Commits do not sync (``sync=False``): the WAL is the durable truth, and
    a restart replays it from the applied index stored here. After a process
    crash the file is exactly as last committed (the kernel's page cache
    holds every write); after a machine crash unsynced pages may be lost in
    any order, which LMDB cannot detect. So the store records the boot it
    was opened in and whether it was closed cleanly (synced): opened after
    a reboot without a clean close, its contents are not trusted and it
    starts empty (``rebuilt``), and the engine restores the snapshot and
    replays the WAL after it. docs/storage.md argues this.
    """

    def __init__(self, path: Path, map_size: int = DEFAULT_MAP_SIZE, boot_id: bytes | None = None) -> None:
        """``boot_id`` overrides the machine's (tests simulate a reboot)."""
        os.makedirs(path, exist_ok=True)
        self.path = path
        self.map_size = map_size
        self._env = lmdb.open(
            str(path),
            map_size=map_size,
            max_dbs=len(TABLES),
            sync=False,
            metasync=False,
            # Readers hand transactions to a worker thread.
            lock=True,
            readahead=False,
            max_readers=64,
        )
        self._dbs = {name: self._env.open_db(name.encode()) for name in TABLES}
        self.rebuilt = False  # opened untrusted (see the class doc) and emptied
        self._closed = False
        self._open_views = 0
        self._views_closed = threading.Condition()
        boot = boot_id if boot_id is not None else current_boot_id()
        with self._env.begin(write=True) as txn:
            meta = self._dbs["meta"]
            stored_boot = txn.get(_META_BOOT_ID, db=meta)
            clean = txn.get(_META_CLOSED_CLEAN, db=meta) == b"1"
            empty = all(txn.stat(db)["entries"] == 0 for db in self._dbs.values())
            if not (empty or clean or (boot and stored_boot == boot)):
                for db in self._dbs.values():
                    txn.drop(db, delete=False)
                self.rebuilt = True
            txn.put(_META_BOOT_ID, boot, db=meta)
            txn.put(_META_CLOSED_CLEAN, b"0", db=meta)
        self._env.sync(True)

    def read(self) -> ReadTxn:
        return _LmdbTxn(self._env, self._dbs, write=False)

    def frozen(self) -> ReadTxn:
        """A read transaction (already a frozen view), counted: close()
        waits for the views other threads still read (a snapshot copy)."""
        with self._views_closed:
            self._open_views += 1
        return _CountedView(self, self._env, self._dbs)

    def _view_closed(self) -> None:
        with self._views_closed:
            self._open_views -= 1
            self._views_closed.notify_all()

    def copy_into(self, view: ReadTxn, out: BinaryIO, scratch: Path) -> None:
        """Write a compacted copy of the LMDB file as ``view`` (one of this
        store's frozen views) sees it into ``out``, by way of ``scratch``
        (a directory made and removed here). LMDB copies in C with the GIL
        released; the file is then moved over in pieces."""
        if not isinstance(view, _LmdbTxn):
            raise TypeError("copy_into needs a view of this store")
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        try:
            self._env.copy(str(scratch), compact=True, txn=view._txn)
            copied = scratch / "data.mdb"
            out.flush()
            fd = os.open(copied, os.O_RDONLY)
            try:
                # In the kernel, GIL released (see snapshot_stream.copy_file_range_all).
                copy_file_range_all(fd, 0, out.fileno(), os.fstat(fd).st_size)
            finally:
                os.close(fd)
            out.seek(0, os.SEEK_CUR)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def write(self) -> WriteTxn:
        return _LmdbTxn(self._env, self._dbs, write=True, path=self.path)

    def sync(self) -> None:
        try:
            self._env.sync(True)
        except lmdb.Error as exc:
            raise explain_write_failure(self.path, exc) from exc

    def close(self) -> None:
        """Sync, mark the store closed cleanly, and close it (after the
        frozen views other threads still read are closed)."""
        if self._closed:
            return
        self._closed = True
        with self._views_closed:
            self._views_closed.wait_for(lambda: self._open_views == 0, timeout=_VIEW_CLOSE_WAIT_SECONDS)
        with self._env.begin(write=True) as txn:
            txn.put(_META_CLOSED_CLEAN, b"1", db=self._dbs["meta"])
        self._env.sync(True)
        self._env.close()

    def file_bytes(self) -> int:
        return os.path.getsize(self.path / "data.mdb")

    def used_bytes(self) -> int:
        """Pages in use by every table (branch, leaf and overflow pages),
        in bytes. Unlike the file size, which never shrinks, this drops
        when deletes and compaction free pages (LMDB reuses them)."""
        env_stat = self._env.stat()
        pages = env_stat["branch_pages"] + env_stat["leaf_pages"] + env_stat["overflow_pages"]
        with self._env.begin() as txn:
            for db in self._dbs.values():
                stat = txn.stat(db)
                pages += stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"]
        return int(pages * env_stat["psize"])
