"""A segmented, checksummed write-ahead log for Raft entries and hard state.

Appends are buffered in memory and reach the disk in ``sync()``: one
durable write per call, however many records were buffered (group commit).
A sync that fits in one 4 KiB block is one ``O_DIRECT | O_DSYNC`` write of
that block where the filesystem allows it; anything larger (or without
direct I/O) is a ``write`` plus an ``fsync``. See docs/storage.md for the
format, the measurements behind this and the recovery rules.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import mmap
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

from raftkv.storage.errors import (
    WALClosedError,
    WALCorruptError,
    WALFailedError,
    WALLockedError,
)
from raftkv.storage.records import (
    HardState,
    LogRecord,
    RecordType,
    decode_entry,
    decode_hard_state,
    decode_index_marker,
    encode_entries,
    encode_hard_state,
    encode_index_marker,
    find_valid_record_after,
    scan_records,
)
from raftkv.storage.replay import LogReplay, check_append, check_contiguous

log = logging.getLogger(__name__)

SEGMENT_NAME = re.compile(r"^(\d{10})-(\d{20})\.wal$")
LOCK_FILE = "LOCK"
# Direct I/O writes whole blocks at block-aligned offsets from an aligned
# buffer; 4 KiB satisfies both 512-byte and 4 KiB sector devices.
DIRECT_BLOCK = 4096
# compact() starts a new segment when the one being written holds at least
# this much, so a restart reads little more than the log since the last
# snapshot (see compact).
ROLL_AT_COMPACT_BYTES = 1 << 20


def segment_name(seq: int, first_index: int) -> str:
    # The sequence number orders segments: after a truncation a newer segment
    # can start at a lower index than an older one.
    return f"{seq:010d}-{first_index:020d}.wal"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class RecoveredLog:
    hard_state: HardState | None
    entries: list[LogRecord]
    first_index: int
    last_index: int
    truncated_tail_bytes: int
    compacted_index: int = 0  # entries up to here were declared covered by a snapshot
    tail_end: int = 0  # where the last segment's records end (zero padding may follow)


@dataclass
class _Segment:
    seq: int
    first_index: int
    path: Path
    max_entry_index: int = 0  # highest entry index ever written into it


@dataclass
class _WalState:
    segments: list[_Segment] = field(default_factory=list)
    last_index: int = 0
    compacted_index: int = 0
    hard_state: HardState | None = None


class WAL:
    """Thread-safe; sync() may run in a worker thread while others append."""

    def __init__(
        self,
        directory: Path,
        segment_bytes: int,
        state: _WalState,
        recovered: RecoveredLog,
        lock_fd: int,
        direct_io: bool = True,
    ) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.recovered = recovered
        self._segments = state.segments
        self._last_index = state.last_index
        self._compacted_index = state.compacted_index
        self._hard_state = state.hard_state
        self._lock_fd = lock_fd
        # _lock guards the in-memory state and every write(); _sync_lock
        # serialises sync/compact/close so an fsync can run without _lock
        # while the caller keeps appending (pipelined group commit).
        # Lock order: _sync_lock, then _lock.
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()
        # Restate the hard state and compaction point in the segment we are
        # about to write: its head may have been torn off by the crash that
        # preceded this open, and compaction may later delete the older
        # segments that hold them. compact() syncs before deleting anything.
        self._pending: list[bytes] = self._head_records()
        self._pending_max_index = 0  # highest entry index in _pending
        self._written_last_index = state.last_index  # last_index as of the last write()
        self._failed: BaseException | None = None
        self._closed = False
        tail = self._segments[-1].path
        # Writes go to explicit offsets (pwrite): a direct write pads the
        # file to a block boundary, and the next records overwrite the padding.
        self._fd = os.open(tail, os.O_WRONLY)
        self._segment_size = recovered.tail_end
        # Direct I/O: a copy of the last, partial block, rewritten with the
        # new records on the next direct sync (its earlier bytes are
        # unchanged, so a torn write of it cannot damage durable records).
        self._direct_fd: int | None = None
        self._block_start = 0
        self._tail_block = b""
        self._direct_buf: mmap.mmap | None = None
        if direct_io:
            self._direct_fd = _open_direct(tail)
            if self._direct_fd is not None:
                self._direct_buf = mmap.mmap(-1, DIRECT_BLOCK)
                self._load_tail_block()

    # ----------------------------------------------------------------- open

    @property
    def direct_io(self) -> bool:
        """True if syncs are direct, synchronous block writes (no fsync)."""
        return self._direct_fd is not None

    def next_sync_is_one_block(self) -> bool:
        """True if the next sync() will be a single direct block write (cheap: no fsync)."""
        with self._lock:
            if self._direct_fd is None:
                return False
            return len(self._tail_block) + sum(map(len, self._pending)) <= DIRECT_BLOCK

    def pending_bytes(self) -> int:
        """Bytes the next sync() will write (records buffered since the last)."""
        with self._lock:
            return sum(map(len, self._pending))

    @property
    def tail_bytes(self) -> int:
        """Bytes of records in the segment being written (the file may be padded beyond)."""
        return self._segment_size

    @classmethod
    def open(cls, directory: Path, segment_bytes: int = 64 << 20, direct_io: bool = True) -> WAL:
        """Create or recover the WAL in ``directory``.

        ``direct_io`` asks for ``O_DIRECT | O_DSYNC`` writes (on this project's
        VM they made a durable append ~20% cheaper than write + fsync); a
        filesystem that refuses them (tmpfs, some overlays) gets
        write + fsync instead.
        """
        if segment_bytes < 4096:
            raise ValueError(f"segment_bytes must be at least 4096, got {segment_bytes}")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        lock_fd = _lock_directory(directory)
        try:
            state, recovered = _recover(directory)
            if not state.segments:
                first = _Segment(0, 1, directory / segment_name(0, 1))
                fd = os.open(first.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                os.fsync(fd)
                os.close(fd)
                fsync_dir(directory)
                state.segments.append(first)
            return cls(directory, segment_bytes, state, recovered, lock_fd, direct_io)
        except BaseException:
            os.close(lock_fd)
            raise

    # ---------------------------------------------------------------- write

    @property
    def last_index(self) -> int:
        return self._last_index

    @property
    def compacted_index(self) -> int:
        return self._compacted_index

    @property
    def hard_state(self) -> HardState | None:
        return self._hard_state

    def append(self, entries: list[LogRecord]) -> None:
        """Buffer ``entries``; an index <= last_index first truncates the log there."""
        if not entries:
            self._check_usable()
            return
        check_contiguous(entries)
        parts, _ = encode_entries(entries)  # validates every field before anything is buffered
        first_index = entries[0].index
        with self._lock:
            self._check_usable()
            if check_append(self._last_index, self._compacted_index, first_index):
                self._pending.append(encode_index_marker(RecordType.TRUNCATE, first_index))
            self._pending.extend(parts)
            self._last_index = entries[-1].index
            if self._last_index > self._pending_max_index:
                self._pending_max_index = self._last_index

    def set_hard_state(self, term: int, vote: str | None, commit: int) -> None:
        state = HardState(term, vote, commit)
        record = encode_hard_state(state)
        with self._lock:
            self._check_usable()
            self._pending.append(record)
            self._hard_state = state

    def sync(self) -> None:
        """Write everything buffered and fsync once; returns when it is durable.

        May run in a worker thread (e.g. ``asyncio.to_thread``) while the
        owning thread keeps calling append() and set_hard_state(): those
        land in the next sync.
        """
        with self._sync_lock:
            self._sync_locked()

    def compact(self, up_to_index: int) -> None:
        """Declare entries <= up_to_index covered by a snapshot; drop old segments.

        Durable on return. Only whole segments go, oldest first, and never the
        one being written, so the newest hard state (restated at the head of
        every segment) always survives.
        """
        with self._sync_lock:
            with self._lock:
                self._check_usable()
                if up_to_index > self._compacted_index:
                    self._pending.append(encode_index_marker(RecordType.COMPACT, up_to_index))
                    self._compacted_index = up_to_index
                    self._last_index = max(self._last_index, up_to_index)
            self._sync_locked()
            if self._segment_size >= ROLL_AT_COMPACT_BYTES:
                # Without this roll a busy segment holds up to segment_bytes of
                # entries the snapshot already covers, and every restart decodes
                # them all; rolled here, the next compaction deletes it. The
                # new segment's head records must be durable before any older
                # segment goes: the sync below writes them.
                with self._lock:
                    self._roll_segment()
                self._sync_locked()
            with self._lock:
                removed = False
                while len(self._segments) > 1 and self._segments[0].max_entry_index <= self._compacted_index:
                    doomed = self._segments.pop(0)
                    doomed.path.unlink()
                    removed = True
                if removed:
                    fsync_dir(self.directory)

    def close(self) -> None:
        """Sync what is buffered (unless the WAL failed) and release the directory."""
        with self._sync_lock:
            if self._closed:
                return
            try:
                if self._failed is None and self._pending:
                    self._sync_locked()
            finally:
                with self._lock:
                    self._closed = True
                    os.close(self._fd)
                    if self._direct_fd is not None:
                        os.close(self._direct_fd)
                    if self._direct_buf is not None:
                        try:
                            self._direct_buf.close()
                        except BufferError:
                            pass  # a failed write's traceback still holds a view: the GC frees it
                    os.close(self._lock_fd)

    def __enter__(self) -> WAL:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def segment_paths(self) -> list[Path]:
        with self._lock:
            return [segment.path for segment in self._segments]

    # -------------------------------------------------------------- helpers

    def _check_usable(self) -> None:
        if self._closed:
            raise WALClosedError(f"WAL in {self.directory} is closed")
        if self._failed is not None:
            raise WALFailedError(
                f"WAL in {self.directory} failed earlier ({self._failed!r}); reopen it to recover"
            )

    def _sync_locked(self) -> None:
        with self._lock:
            self._check_usable()
            if not self._pending:
                return
            data = b"".join(self._pending)
            self._pending.clear()
            segment = self._segments[-1]
            if self._pending_max_index > segment.max_entry_index:
                segment.max_entry_index = self._pending_max_index
            self._pending_max_index = 0
            self._written_last_index = self._last_index
        # Only this thread (under _sync_lock) touches the fields below.
        offset = self._segment_size
        try:
            if self._direct_fd is not None and len(self._tail_block) + len(data) <= DIRECT_BLOCK:
                # Measured here: a one-block direct write is ~20% cheaper
                # than write + fsync; several blocks at once are slower.
                self._write_direct_block(self._tail_block + data)
            else:
                view = memoryview(data)
                position = offset
                while view:
                    written = os.pwrite(self._fd, view, position)
                    view = view[written:]
                    position += written
                os.fsync(self._fd)
        except BaseException as exc:
            self._failed = exc
            raise
        end = offset + len(data)
        self._segment_size = end
        if self._direct_fd is not None:
            # The last partial block is the last ``keep`` bytes of what the
            # segment holds; slicing data first avoids copying a big batch.
            keep = end % DIRECT_BLOCK
            self._tail_block = (self._tail_block + data[-keep:])[-keep:] if keep else b""
            self._block_start = end - keep
        if self._segment_size > self.segment_bytes:
            with self._lock:
                self._roll_segment()

    def _write_direct_block(self, block: bytes) -> None:
        """Write the last block, zero-padded, durably (O_DIRECT | O_DSYNC)."""
        buf = self._direct_buf
        assert self._direct_fd is not None and buf is not None
        buf[: len(block)] = block
        buf[len(block) :] = bytes(DIRECT_BLOCK - len(block))
        with memoryview(buf) as view:
            if os.pwrite(self._direct_fd, view, self._block_start) != DIRECT_BLOCK:
                raise OSError(errno.EIO, f"short direct write to {self._segments[-1].path}")

    def _load_tail_block(self) -> None:
        end = self._segment_size
        self._block_start = end - end % DIRECT_BLOCK
        with open(self._segments[-1].path, "rb") as f:
            f.seek(self._block_start)
            self._tail_block = f.read(end - self._block_start)

    def _roll_segment(self) -> None:
        """Start the next segment; the current one was just fsynced (caller holds both locks)."""
        previous = self._segments[-1]
        seq, first_index = previous.seq + 1, self._written_last_index + 1
        segment = _Segment(seq, first_index, self.directory / segment_name(seq, first_index))
        fd = os.open(segment.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            fsync_dir(self.directory)
        except BaseException as exc:
            os.close(fd)
            self._failed = exc
            raise
        if self._direct_fd is not None:
            direct_fd = _open_direct(segment.path)
            if direct_fd is None:
                os.close(fd)
                self._failed = OSError(errno.EINVAL, f"direct I/O refused for {segment.path}")
                raise self._failed
            os.close(self._direct_fd)
            self._direct_fd = direct_fd
            self._block_start = 0
            self._tail_block = b""
        os.close(self._fd)
        self._fd = fd
        self._segment_size = 0
        self._segments.append(segment)
        # The head of every segment restates what older segments established,
        # so deleting them loses nothing. It goes ahead of whatever was
        # appended meanwhile; those records are newer.
        self._pending[:0] = self._head_records()

    def _head_records(self) -> list[bytes]:
        head = []
        if self._hard_state is not None:
            head.append(encode_hard_state(self._hard_state))
        if self._compacted_index:
            head.append(encode_index_marker(RecordType.COMPACT, self._compacted_index))
        return head


def _open_direct(path: Path) -> int | None:
    """A direct, synchronous write descriptor for ``path``, or None if the filesystem refuses one."""
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        return None
    try:
        return os.open(path, os.O_WRONLY | flag | os.O_DSYNC)
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):
            log.info("WAL %s: direct I/O not supported here (%s); using write + fsync", path, exc)
            return None
        raise


def _lock_directory(directory: Path) -> int:
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise WALLockedError(f"WAL directory {directory} is in use by another WAL instance") from None
    return fd


def _list_segments(directory: Path) -> list[_Segment]:
    segments = []
    for path in directory.iterdir():
        match = SEGMENT_NAME.match(path.name)
        if match:
            segments.append(_Segment(int(match.group(1)), int(match.group(2)), path))
        elif path.suffix == ".wal":
            log.warning("ignoring file with an unexpected name in WAL directory: %s", path)
    segments.sort(key=lambda s: s.seq)
    for before, after in zip(segments, segments[1:]):
        if after.seq != before.seq + 1:
            raise WALCorruptError(
                after.path, 0, f"segment sequence jumps from {before.seq} to {after.seq}: a segment is missing"
            )
    return segments


def _recover(directory: Path) -> tuple[_WalState, RecoveredLog]:
    segments = _list_segments(directory)
    # A segment is named after the index that followed the log when it was
    # created, so after compaction deleted older segments the log resumes there.
    replay = LogReplay(expected_next=segments[0].first_index if segments else 1)
    truncated_tail_bytes = 0
    tail_end = 0
    for position, segment in enumerate(segments):
        data = segment.path.read_bytes()
        scanned = scan_records(data)
        for record in scanned.records:
            problem = _replay_record(replay, segment, record.rtype, record.body)
            if problem is not None:
                raise WALCorruptError(segment.path, record.offset, problem)
        tail_end = scanned.valid_bytes
        if scanned.problem is None or data.count(0, scanned.valid_bytes) == len(data) - scanned.valid_bytes:
            continue  # the end, or the end and then the zero padding of a direct write
        is_last = position == len(segments) - 1
        if not is_last:
            raise WALCorruptError(
                segment.path, scanned.valid_bytes, f"{scanned.problem} in a segment that is not the last"
            )
        following = find_valid_record_after(data, scanned.valid_bytes)
        if following is not None:
            raise WALCorruptError(
                segment.path,
                scanned.valid_bytes,
                f"{scanned.problem}, followed by a valid record at offset {following}",
            )
        truncated_tail_bytes = len(data) - scanned.valid_bytes
        log.warning(
            "WAL %s: cutting %d bytes of torn tail at offset %d (%s)",
            segment.path,
            truncated_tail_bytes,
            scanned.valid_bytes,
            scanned.problem,
        )
        fd = os.open(segment.path, os.O_WRONLY)
        try:
            os.ftruncate(fd, scanned.valid_bytes)
            os.fsync(fd)
        finally:
            os.close(fd)
    state = _WalState(segments, replay.last_index, replay.compacted_index, replay.hard_state)
    recovered = RecoveredLog(
        hard_state=replay.hard_state,
        entries=replay.entries,
        first_index=replay.first_index,
        last_index=replay.last_index,
        truncated_tail_bytes=truncated_tail_bytes,
        compacted_index=replay.compacted_index,
        tail_end=tail_end,
    )
    return state, recovered


def _replay_record(replay: LogReplay, segment: _Segment, rtype: RecordType, body: memoryview) -> str | None:
    if rtype is RecordType.ENTRY:
        entry = decode_entry(body)
        if entry.index > segment.max_entry_index:
            segment.max_entry_index = entry.index
        return replay.on_entry(entry)
    if rtype is RecordType.HARD_STATE:
        try:
            replay.on_hard_state(decode_hard_state(body))
        except UnicodeDecodeError:
            return "hard state vote is not valid UTF-8"
        return None
    if rtype is RecordType.TRUNCATE:
        return replay.on_truncate(decode_index_marker(body))
    replay.on_compact(decode_index_marker(body))
    return None
