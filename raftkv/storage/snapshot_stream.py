"""Snapshots as files: the pieces that let a snapshot of any size be made,
sent, received and installed without holding it in memory or pausing the
event loop (docs/storage.md, "Snapshots as files").

* A snapshot of the LMDB store is ``LMDB_MAGIC`` followed by a compacted
  copy of the LMDB file made from one read transaction (``env.copy(...,
  compact=True, txn=...)``, which runs in C with the GIL released).
* :class:`FileSnapshotData` stands for snapshot bytes that live in a file:
  ``len()`` and slicing (``data[a:b]`` is one ``pread``) are all the Raft
  core needs to send chunks, so a leader never loads a snapshot to send it.
* :class:`FileSnapshotSink` is where a follower's core puts the chunks it
  receives: straight into a file, one ``write`` per chunk.

Snapshots that are not LMDB files (format 4 msgpack, from the in-memory
store of the simulator, unit tests and the PySyncObj engine) keep working
as ``bytes`` through the same interfaces.
"""

from __future__ import annotations

import errno
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

# Marks snapshot data that is an LMDB file (format 4 msgpack starts with
# 0x96, an array header, so the two cannot be confused).
LMDB_MAGIC = b"RKVLMDB1"
# Bytes per read or write when copying snapshot files (a few ms of disk at
# most, and zlib/hashlib release the GIL for buffers this size).
COPY_CHUNK = 1 << 20
# A snapshot being received (FileSnapshotSink); the snapshot store deletes
# leftovers of an interrupted one when it is opened.
PART_SUFFIX = ".part"
# Snapshot copies are written back to disk in pieces of this size.
SYNC_EVERY = 8 << 20


class FileSnapshotData:
    """``length`` bytes of ``path`` from ``offset``, readable like ``bytes``.

    The file is opened once and kept open, so the bytes stay readable even
    after the file is replaced or deleted (the snapshot store prunes old
    files while a leader may still be sending one).
    """

    def __init__(self, path: Path, offset: int = 0, length: int | None = None) -> None:
        self.path = path
        self.offset = offset
        self._fd = os.open(path, os.O_RDONLY)
        size = os.fstat(self._fd).st_size
        self.length = size - offset if length is None else length
        if offset < 0 or self.length < 0 or offset + self.length > size:
            os.close(self._fd)
            raise ValueError(f"{path}: bytes {offset}..{offset + (length or 0)} are beyond its {size} bytes")

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: slice) -> bytes:
        if not isinstance(index, slice) or index.step not in (None, 1):
            raise TypeError("FileSnapshotData supports only contiguous slices")
        start, stop, _ = index.indices(self.length)
        if stop <= start:
            return b""
        return os.pread(self._fd, stop - start, self.offset + start)

    def startswith(self, prefix: bytes) -> bool:
        return self[: len(prefix)] == prefix

    def chunks(self, start: int = 0, size: int = COPY_CHUNK) -> Iterator[bytes]:
        for at in range(start, self.length, size):
            yield self[at : at + size]

    def read_all(self) -> bytes:
        """Every byte in memory (only for small snapshots: old formats, tests)."""
        return self[:]

    def copy_into(self, out: BinaryIO, start: int = 0) -> int:
        """Write the bytes from ``start`` on into ``out`` (a file, at its
        position); returns how many. The kernel copies file to file
        (copy_file_range) in one call with the GIL released: a Python loop
        of reads and writes would take the GIL back after every piece and
        make the event loop wait for it."""
        out.flush()
        done = copy_file_range_all(self._fd, self.offset + start, out.fileno(), self.length - start)
        out.seek(0, os.SEEK_CUR)  # the buffered file learns the position the kernel moved
        return done

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        self.close()

    def __eq__(self, other: object) -> bool:
        return self is other

    def __hash__(self) -> int:
        return id(self)

    def __repr__(self) -> str:
        return f"FileSnapshotData({str(self.path)!r}, offset={self.offset}, length={self.length})"


def copy_file_range_all(src_fd: int, src_offset: int, dst_fd: int, length: int) -> int:
    """Copy ``length`` bytes of ``src_fd`` from ``src_offset`` to ``dst_fd``
    at its position, in the kernel (falls back to pread/write pieces where
    copy_file_range is refused).

    The copy goes in pieces of ``SYNC_EVERY`` bytes, each written back
    (fdatasync) before the next: one fsync of a whole snapshot at the end
    (three nodes snapshot at the same index) kept the disk busy long
    enough that followers' WAL fsyncs stalled past the election timeout
    in the scale benchmark; small pieces let WAL syncs in between."""
    done = 0
    try:
        while done < length:
            n = os.copy_file_range(src_fd, dst_fd, min(SYNC_EVERY, length - done), src_offset + done)
            if n == 0:
                raise OSError(f"copy_file_range stopped after {done} of {length} bytes (the source is shorter)")
            done += n
            os.fdatasync(dst_fd)
        return done
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise
    while done < length:
        chunk = os.pread(src_fd, min(COPY_CHUNK, length - done), src_offset + done)
        if not chunk:
            raise OSError(f"the source ended after {done} of {length} bytes")
        os.write(dst_fd, chunk)
        done += len(chunk)
        if done % SYNC_EVERY < len(chunk):
            os.fdatasync(dst_fd)
    return done


SnapshotBytes = Any  # bytes, bytearray or FileSnapshotData: len() and slicing


def is_lmdb_snapshot(data: SnapshotBytes) -> bool:
    head = data[: len(LMDB_MAGIC)]
    return bytes(head) == LMDB_MAGIC


def crc32_of(data: SnapshotBytes) -> int:
    if isinstance(data, FileSnapshotData):
        crc = 0
        for chunk in data.chunks():
            crc = zlib.crc32(chunk, crc)
        return crc
    return zlib.crc32(data)


def write_data(out: BinaryIO, data: SnapshotBytes) -> None:
    if isinstance(data, FileSnapshotData):
        data.copy_into(out)
    else:
        out.write(data)


class FileSnapshotSink:
    """A follower's receive buffer for one snapshot, in a file.

    The Raft core calls ``extend`` with each chunk in order and ``len`` to
    know the offset; ``finish`` hands back the bytes as
    :class:`FileSnapshotData`. The file is not synced here: the driver saves
    the finished snapshot into the snapshot store (fsynced) before using it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "wb")
        self._size = 0

    def extend(self, chunk: bytes) -> None:
        self._file.write(chunk)
        self._size += len(chunk)

    def __len__(self) -> int:
        return self._size

    def finish(self) -> FileSnapshotData:
        self._file.flush()
        self._file.close()
        return FileSnapshotData(self.path, 0, self._size)

    def discard(self) -> None:
        self._file.close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
