"""The backup file: what ``GET /v1/snapshot`` streams and ``raftkv snapshot
save`` writes (docs/operations.md, "Backups").

Layout::

    RKVBACKUP1\\n
    <header: one line of JSON>\\n
    <data: header["data_bytes"] bytes of snapshot data (LMDB_MAGIC + an LMDB file)>
    sha256 <64 hex digits>\\n

The trailer's SHA-256 covers every byte before it, so a truncated,
damaged or edited file is refused as a whole. The header says what the
backup holds (revision, keys, the applied index, where it came from); the
data is the snapshot a leader would send a follower.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from raftkv.storage.snapshot_stream import COPY_CHUNK, FileSnapshotData, is_lmdb_snapshot

BACKUP_MAGIC = b"RKVBACKUP1\n"
FORMAT = 1
_TRAILER_PREFIX = b"sha256 "
TRAILER_BYTES = len(_TRAILER_PREFIX) + 64 + 1
_MAX_HEADER_BYTES = 1 << 20


class BackupCorruptError(ValueError):
    """The file is not a complete, undamaged raftkv backup; the message says why."""


def head_bytes(header: dict[str, Any]) -> bytes:
    """Everything before the data."""
    return BACKUP_MAGIC + orjson.dumps({"format": FORMAT, **header}) + b"\n"


def trailer_bytes(sha256_hex: str) -> bytes:
    return _TRAILER_PREFIX + sha256_hex.encode() + b"\n"


def backup_pieces(header: dict[str, Any], data: FileSnapshotData) -> Iterator[bytes]:
    """The backup file in pieces, trailer included (``header`` must hold
    ``data_bytes``)."""
    digest = hashlib.sha256()
    head = head_bytes(header)
    digest.update(head)
    yield head
    for chunk in data.chunks():
        digest.update(chunk)
        yield chunk
    yield trailer_bytes(digest.hexdigest())


def sha256_of(header: dict[str, Any], data: FileSnapshotData) -> str:
    """The SHA-256 the backup of ``data`` under ``header`` ends with (blocking: a worker thread)."""
    digest = hashlib.sha256(head_bytes(header))
    for chunk in data.chunks():
        digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Backup:
    path: Path
    header: dict[str, Any]
    data: FileSnapshotData  # the snapshot data inside the file
    sha256: str
    size: int


def read_backup(path: Path) -> Backup:
    """Open and verify a backup file (every byte is read once for the
    checksum); raises BackupCorruptError saying what is wrong."""
    try:
        size = os.path.getsize(path)
        f = open(path, "rb")
    except OSError as exc:
        raise BackupCorruptError(f"cannot read {path}: {exc.strerror}") from None
    with f:
        magic = f.read(len(BACKUP_MAGIC))
        if magic != BACKUP_MAGIC:
            raise BackupCorruptError(f"{path} is not a raftkv backup (it does not start with {BACKUP_MAGIC!r})")
        line = f.readline(_MAX_HEADER_BYTES)
        if not line.endswith(b"\n"):
            raise BackupCorruptError(f"{path}: the header line is cut off or too long: the file is truncated or damaged")
        try:
            header = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise BackupCorruptError(f"{path}: the header is not JSON ({exc}): the file is damaged") from None
        data_bytes = header.get("data_bytes") if isinstance(header, dict) else None
        if type(data_bytes) is not int or data_bytes < 0:
            raise BackupCorruptError(f"{path}: the header has no valid data_bytes: the file is damaged")
        if header.get("format") != FORMAT:
            raise BackupCorruptError(f"{path}: backup format {header.get('format')!r} is not one this build reads ({FORMAT})")
        data_offset = len(BACKUP_MAGIC) + len(line)
        expected = data_offset + data_bytes + TRAILER_BYTES
        if size != expected:
            raise BackupCorruptError(
                f"{path} is {size} bytes but its header says {expected}: the file is truncated or damaged "
                "(an interrupted download?)"
            )
        digest = hashlib.sha256(magic + line)
        f.seek(data_offset)
        left = data_bytes
        while left:
            chunk = f.read(min(COPY_CHUNK, left))
            if not chunk:
                raise BackupCorruptError(f"{path} ended early: the file is truncated")
            digest.update(chunk)
            left -= len(chunk)
        trailer = f.read(TRAILER_BYTES)
    actual = digest.hexdigest()
    if not (trailer.startswith(_TRAILER_PREFIX) and trailer.endswith(b"\n")):
        raise BackupCorruptError(f"{path}: no checksum trailer at the end: the file is truncated or damaged")
    stated = trailer[len(_TRAILER_PREFIX) : -1].decode("ascii", "replace")
    if stated != actual:
        raise BackupCorruptError(
            f"{path}: checksum mismatch: the file says sha256 {stated}, its contents hash to {actual}: "
            "the file is damaged; do not restore it"
        )
    data = FileSnapshotData(path, data_offset, data_bytes)
    if not is_lmdb_snapshot(data):
        data.close()
        raise BackupCorruptError(f"{path}: the checksum holds but the data is not an LMDB snapshot")
    return Backup(path, header, data, actual, size)


def write_pieces(out: BinaryIO, pieces: Iterator[bytes]) -> int:
    written = 0
    for piece in pieces:
        out.write(piece)
        written += len(piece)
    return written
