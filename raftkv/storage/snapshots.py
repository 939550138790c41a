"""Atomically written, checksummed snapshot files; the newest two are kept.

File layout (big endian)::

    magic "RKVSNAP1" | header_crc u32 | meta_len u32 | data_len u64 | data_crc u32 | meta (JSON) | data

``header_crc`` covers everything from ``meta_len`` to the end of the meta, so
the metadata can be trusted without reading the data; ``data_crc`` covers
the data.
"""

from __future__ import annotations

import logging
import os
import re
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from raftkv.storage.errors import SnapshotCorruptError
from raftkv.storage.snapshot_stream import PART_SUFFIX, FileSnapshotData, SnapshotBytes, crc32_of, write_data
from raftkv.storage.wal import fsync_dir

log = logging.getLogger(__name__)

MAGIC = b"RKVSNAP1"
HEADER = struct.Struct(">8sIIQI")  # magic, header_crc, meta_len, data_len, data_crc
SNAPSHOT_NAME = re.compile(r"^snapshot-(\d{20})-(\d{20})\.snap$")
TMP_SUFFIX = ".tmp"
CORRUPT_SUFFIX = ".corrupt"
KEEP = 2
MAX_META_BYTES = 16 << 20


def snapshot_name(index: int, term: int) -> str:
    return f"snapshot-{index:020d}-{term:020d}.snap"


def encode_head(meta_json: bytes, data: bytes) -> bytes:
    """Everything in a snapshot file before the data."""
    return encode_head_for(meta_json, len(data), zlib.crc32(data))


def encode_head_for(meta_json: bytes, data_len: int, data_crc: int) -> bytes:
    """The head of a snapshot file whose data has this length and CRC."""
    covered = struct.pack(">IQI", len(meta_json), data_len, data_crc) + meta_json
    return HEADER.pack(MAGIC, zlib.crc32(covered), len(meta_json), data_len, data_crc) + meta_json


def decode_meta(head: bytes, file_size: int) -> tuple[dict[str, Any], int, int] | str:
    """(meta, data_offset, data_crc) from the start of a snapshot file, or why it is bad."""
    if len(head) < HEADER.size:
        return f"file too short for a header ({len(head)} bytes)"
    magic, header_crc, meta_len, data_len, data_crc = HEADER.unpack_from(head)
    if magic != MAGIC:
        return "bad magic"
    if meta_len > MAX_META_BYTES:
        return f"implausible metadata length {meta_len}"
    meta_end = HEADER.size + meta_len
    if len(head) < meta_end:
        return "file too short for its metadata"
    if zlib.crc32(head[12:meta_end]) != header_crc:
        return "header checksum mismatch"
    if file_size != meta_end + data_len:
        return f"size {file_size} does not match the {meta_end + data_len} bytes the header declares"
    try:
        meta = orjson.loads(head[HEADER.size : meta_end])
    except orjson.JSONDecodeError as exc:
        return f"metadata is not JSON: {exc}"
    if not isinstance(meta, dict):
        return "metadata is not a JSON object"
    return meta, meta_end, data_crc


def validate_meta(meta: dict[str, Any]) -> bytes:
    if not isinstance(meta, dict):
        raise ValueError(f"snapshot meta must be a dict, got {type(meta).__name__}")
    for key in ("index", "term"):
        value = meta.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"snapshot meta needs a non-negative integer {key!r}, got {value!r}")
    try:
        return orjson.dumps(meta)
    except TypeError as exc:
        raise ValueError(f"snapshot meta is not JSON-serialisable: {exc}") from exc


class SnapshotStore:
    """Snapshots in one directory. Not thread-safe; one writer at a time."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        # Problems met by the last load_latest(): (file, reason) per skipped snapshot.
        self.last_load_skipped: list[tuple[Path, str]] = []
        for leftover in [*self.directory.glob(f"*{TMP_SUFFIX}"), *self.directory.glob(f"*{PART_SUFFIX}")]:
            # An interrupted save (the rename never happened) or receive:
            # nothing refers to it.
            leftover.unlink()

    def _snapshot_files(self) -> list[tuple[int, int, Path]]:
        found = []
        for path in self.directory.iterdir():
            match = SNAPSHOT_NAME.match(path.name)
            if match:
                found.append((int(match.group(1)), int(match.group(2)), path))
        found.sort()
        return found

    def save(self, meta: dict[str, Any], data: SnapshotBytes) -> Path:
        """Write a snapshot atomically and durably; keeps the newest two.

        ``data`` is bytes, or a FileSnapshotData copied in pieces (a
        snapshot received into a file, never loaded whole)."""
        return self.save_stream(meta, lambda out: write_data(out, data))

    def save_stream(self, meta: dict[str, Any], produce: Callable[[BinaryIO], None]) -> Path:
        """Like save, with the data written by ``produce(file)`` (positioned
        after the head); the data's length and CRC are filled in after it,
        by reading the data back in pieces, so it is never held in memory."""
        meta_json = validate_meta(meta)
        index, term = meta["index"], meta["term"]
        existing = self._snapshot_files()
        if existing and index < existing[-1][0]:
            raise ValueError(
                f"snapshot at index {index} is older than the newest stored one ({existing[-1][0]})"
            )
        final = self.directory / snapshot_name(index, term)
        tmp = final.with_name(final.name + TMP_SUFFIX)
        head_len = HEADER.size + len(meta_json)
        try:
            with open(tmp, "w+b") as f:
                f.write(bytes(head_len))
                produce(f)
                f.flush()
                data_len = f.tell() - head_len
                crc = crc32_of(FileSnapshotData(tmp, head_len, data_len))
                f.seek(0)
                f.write(encode_head_for(meta_json, data_len, crc))
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, final)
        fsync_dir(self.directory)
        self._prune()
        return final

    def _prune(self) -> None:
        files = self._snapshot_files()
        for _, _, path in files[:-KEEP]:
            path.unlink()
        if len(files) > KEEP:
            fsync_dir(self.directory)

    def load_latest(self) -> tuple[dict[str, Any], bytes] | None:
        """The newest snapshot that verifies, or None if there are none.

        A corrupt snapshot is renamed to ``*.corrupt`` (kept for inspection),
        logged, listed in ``last_load_skipped``, and the previous one is used.
        Raises SnapshotCorruptError when snapshots exist but none verifies:
        starting empty would silently lose the state they held.
        """
        self.last_load_skipped = []
        files = self._snapshot_files()
        for _, _, path in reversed(files):
            loaded = self._read_verified(path)
            if not isinstance(loaded, str):
                if self.last_load_skipped:
                    log.warning("falling back to snapshot %s", path)
                return loaded
            log.error("snapshot %s is corrupt (%s); setting it aside", path, loaded)
            self.last_load_skipped.append((path, loaded))
            os.replace(path, path.with_name(path.name + CORRUPT_SUFFIX))
        if files:
            fsync_dir(self.directory)
            details = "; ".join(f"{p.name}: {reason}" for p, reason in self.last_load_skipped)
            raise SnapshotCorruptError(f"no snapshot in {self.directory} verifies ({details})")
        return None

    def load_latest_file(self) -> tuple[dict[str, Any], FileSnapshotData] | None:
        """Like load_latest, with the data left in its file (verified in
        pieces): a snapshot of any size costs no memory to load."""
        self.last_load_skipped = []
        files = self._snapshot_files()
        for _, _, path in reversed(files):
            loaded = self._verified_file(path)
            if not isinstance(loaded, str):
                if self.last_load_skipped:
                    log.warning("falling back to snapshot %s", path)
                return loaded
            log.error("snapshot %s is corrupt (%s); setting it aside", path, loaded)
            self.last_load_skipped.append((path, loaded))
            os.replace(path, path.with_name(path.name + CORRUPT_SUFFIX))
        if files:
            fsync_dir(self.directory)
            details = "; ".join(f"{p.name}: {reason}" for p, reason in self.last_load_skipped)
            raise SnapshotCorruptError(f"no snapshot in {self.directory} verifies ({details})")
        return None

    def _verified_file(self, path: Path) -> tuple[dict[str, Any], FileSnapshotData] | str:
        with open(path, "rb") as f:
            decoded = _read_head(f)
        if isinstance(decoded, str):
            return decoded
        meta, data_offset, data_crc = decoded
        data = FileSnapshotData(path, data_offset)
        if crc32_of(data) != data_crc:
            data.close()
            return "data checksum mismatch"
        return meta, data

    def data_of(self, path: Path) -> FileSnapshotData:
        """The data of a snapshot file this store just saved (not verified again)."""
        with open(path, "rb") as f:
            decoded = _read_head(f)
        if isinstance(decoded, str):
            raise SnapshotCorruptError(f"{path}: {decoded}")
        return FileSnapshotData(path, decoded[1])

    def latest_meta(self) -> dict[str, Any] | None:
        """Metadata of the newest snapshot whose header verifies (the data is not read)."""
        for _, _, path in reversed(self._snapshot_files()):
            with open(path, "rb") as f:
                decoded = _read_head(f)
            if not isinstance(decoded, str):
                return decoded[0]
            log.warning("snapshot %s has a bad header (%s); skipping it", path, decoded)
        return None

    def _read_verified(self, path: Path) -> tuple[dict[str, Any], bytes] | str:
        with open(path, "rb") as f:
            decoded = _read_head(f)
            if isinstance(decoded, str):
                return decoded
            meta, _, data_crc = decoded
            data = f.read()
        if zlib.crc32(data) != data_crc:
            return "data checksum mismatch"
        return meta, data


def _read_head(f: BinaryIO) -> tuple[dict[str, Any], int, int] | str:
    """Read and verify the header and metadata; leaves ``f`` at the start of the data."""
    head = f.read(HEADER.size)
    if len(head) == HEADER.size:
        head += f.read(min(HEADER.unpack_from(head)[2], MAX_META_BYTES))
    return decode_meta(head, os.fstat(f.fileno()).st_size)
