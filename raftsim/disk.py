"""A simulated disk: the WAL and snapshot store RaftDriver uses, in memory,
with a power cut's semantics.

The WAL keeps the real record format (raftkv.storage.records) in one byte
buffer and rebuilds the log with the real replay rules
(raftkv.storage.replay.LogReplay), so recovery here cuts a torn tail exactly
as WAL.open does. What reaches the "platter":

* ``append``/``set_hard_state`` only buffer; ``sync`` and ``compact`` make
  the buffer durable (one "fsync");
* a crash loses what was buffered, except that a random prefix of the
  buffered records may have reached the disk (a sync cut short by the power
  cut), possibly followed by a torn partial record, which recovery cuts;
* a snapshot ``save`` is atomic (the real store renames a synced file).

The nemeses that break the durability contract on purpose -- a wiped data
directory, a disk that lies about fsync and loses a synced tail -- act on
SimDisk directly; raftsim.simulation decides when they may.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

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
from raftkv.storage.snapshots import validate_meta
from raftkv.storage.wal import DIRECT_BLOCK, RecoveredLog

KEEP_SNAPSHOTS = 2  # as SnapshotStore
# The WAL's bytes and its sync points, to undo a nemesis the rules forbid.
WalImage = tuple[bytes, list[tuple[int, tuple[int, "str | None"]]]]


class SimStorageError(AssertionError):
    """The simulated disk holds something the real WAL's recovery would refuse."""


class NodeCrashed(RuntimeError):
    """A call on the storage of a node incarnation that has crashed."""


def _replay(replay: LogReplay, rtype: RecordType, body: memoryview) -> str | None:
    if rtype is RecordType.ENTRY:
        return replay.on_entry(decode_entry(body))
    if rtype is RecordType.HARD_STATE:
        replay.on_hard_state(decode_hard_state(body))
        return None
    if rtype is RecordType.TRUNCATE:
        return replay.on_truncate(decode_index_marker(body))
    replay.on_compact(decode_index_marker(body))
    return None


class SimDisk:
    """One node's data directory: WAL bytes and snapshot files."""

    def __init__(self) -> None:
        self.wal = bytearray()
        # WAL length after each sync, with the (term, vote) durable then:
        # where a lying disk may cut back to.
        self.sync_points: list[tuple[int, tuple[int, str | None]]] = []
        self.snapshots: list[tuple[dict[str, Any], bytes]] = []  # oldest first
        self.durable = LogReplay(expected_next=1)
        self.torn_tails_cut = 0
        self._before_wipe: tuple[WalImage, list[tuple[dict[str, Any], bytes]]] = ((b"", []), [])

    # ------------------------------------------------------------ writes

    def write_synced(self, data: bytes) -> None:
        if not data:
            return
        scanned = scan_records(data)
        if scanned.problem is not None:
            raise SimStorageError(f"the WAL wrote a bad record: {scanned.problem}")
        for record in scanned.records:
            problem = _replay(self.durable, record.rtype, record.body)
            if problem is not None:
                raise SimStorageError(f"the WAL wrote an inconsistent record: {problem}")
        self.wal += data
        hard = self.durable.hard_state
        self.sync_points.append((len(self.wal), (hard.term, hard.vote) if hard is not None else (0, None)))

    def power_cut(self, pending: list[bytes], rng: random.Random) -> None:
        """Lose the unsynced records, but a random prefix of them may have
        reached the disk, and the record after that may be torn."""
        if not pending or rng.random() < 0.5:
            return
        data = b"".join(pending)
        # Record boundaries (the buffered parts are not one record each).
        ends = [r.offset for r in scan_records(data).records[1:]] + [len(data)]
        kept = rng.randint(0, len(ends))
        end = ends[kept - 1] if kept else 0
        self.write_synced(data[:end])
        if end < len(data) and rng.random() < 0.5:
            next_end = ends[kept]
            if next_end - end > 1:
                self.wal += data[end : rng.randint(end + 1, next_end - 1)]  # torn: recovery must cut it

    # --------------------------------------------------------- nemeses

    @property
    def durable_term_vote(self) -> tuple[int, str | None]:
        hard = self.durable.hard_state
        return (hard.term, hard.vote) if hard is not None else (0, None)

    def wipe(self) -> None:
        """The whole data directory is gone (a replaced disk, rm -rf)."""
        self._before_wipe = (self.saved_wal(), list(self.snapshots))
        self.wal = bytearray()
        self.sync_points = []
        self.snapshots = []
        self.durable = LogReplay(expected_next=1)

    def restore_wiped(self) -> None:
        """Call a wipe off: the data directory is back as it was."""
        wal, self.snapshots = self._before_wipe
        self.restore_wal(wal)

    def saved_wal(self) -> WalImage:
        return bytes(self.wal), list(self.sync_points)

    def restore_wal(self, image: WalImage) -> None:
        wal, sync_points = image
        self.wal = bytearray(wal)
        self.sync_points = list(sync_points)
        self._rebuild()

    def lose_tail(self, length: int) -> None:
        """Keep the first ``length`` bytes of the WAL: a disk that acknowledged
        an fsync it did not do loses everything written since."""
        self.wal = self.wal[:length]
        self.sync_points = [p for p in self.sync_points if p[0] <= length]
        self._rebuild()

    def _rebuild(self) -> None:
        self.durable = LogReplay(expected_next=1)
        scanned = scan_records(bytes(self.wal))
        for record in scanned.records:
            problem = _replay(self.durable, record.rtype, record.body)
            if problem is not None:
                raise SimStorageError(f"WAL record at {record.offset}: {problem}")

    # ---------------------------------------------------------- reading

    def recover(self) -> RecoveredLog:
        """What WAL.open recovers: replay, cutting a torn tail."""
        data = bytes(self.wal)
        scanned = scan_records(data)
        replay = LogReplay(expected_next=1)
        for record in scanned.records:
            problem = _replay(replay, record.rtype, record.body)
            if problem is not None:
                raise SimStorageError(f"WAL record at {record.offset}: {problem}")
        cut = 0
        if scanned.problem is not None:
            following = find_valid_record_after(data, scanned.valid_bytes)
            if following is not None:
                raise SimStorageError(f"{scanned.problem} followed by a valid record at {following}")
            cut = len(data) - scanned.valid_bytes
            del self.wal[scanned.valid_bytes :]
            self.torn_tails_cut += 1
        self._rebuild()
        return RecoveredLog(
            hard_state=replay.hard_state,
            entries=replay.entries,
            first_index=replay.first_index,
            last_index=replay.last_index,
            truncated_tail_bytes=cut,
            compacted_index=replay.compacted_index,
            tail_end=scanned.valid_bytes,
        )

    @property
    def snapshot_index(self) -> int:
        return self.snapshots[-1][0]["index"] if self.snapshots else 0

    def durable_term(self, index: int) -> int | None:
        """The term of the durable entry at ``index``, or None."""
        entries = self.durable.entries
        if not entries:
            return None
        first = entries[0].index
        if first <= index <= entries[-1].index:
            return entries[index - first].term
        return None


class SimWAL:
    """The part of raftkv.storage.WAL that RaftDriver and recovery use."""

    def __init__(
        self,
        disk: SimDisk,
        recovered: RecoveredLog,
        rng: random.Random,
        direct_io: bool,
        power_fails_in_sync: Callable[[], bool] = lambda: False,
    ) -> None:
        self._disk = disk
        # Asked at every sync: True cuts the power while the sync runs.
        self._power_fails_in_sync = power_fails_in_sync
        self._rng = rng
        self.recovered = recovered
        self._direct_io = direct_io
        self._pending: list[bytes] = []
        self._last_index = recovered.last_index
        self._compacted_index = recovered.compacted_index
        self._hard_state = recovered.hard_state
        self.crashed = False

    @classmethod
    def open(
        cls, disk: SimDisk, rng: random.Random, direct_io: bool, power_fails_in_sync: Callable[[], bool]
    ) -> SimWAL:
        return cls(disk, disk.recover(), rng, direct_io, power_fails_in_sync)

    @property
    def last_index(self) -> int:
        return self._last_index

    @property
    def compacted_index(self) -> int:
        return self._compacted_index

    @property
    def hard_state(self) -> HardState | None:
        return self._hard_state

    def _check(self) -> None:
        if self.crashed:
            raise NodeCrashed("this node incarnation crashed")

    def append(self, entries: list[LogRecord]) -> None:
        self._check()
        if not entries:
            return
        check_contiguous(entries)
        parts, _ = encode_entries(entries)
        first = entries[0].index
        if check_append(self._last_index, self._compacted_index, first):
            self._pending.append(encode_index_marker(RecordType.TRUNCATE, first))
        self._pending.extend(parts)
        self._last_index = entries[-1].index

    def set_hard_state(self, term: int, vote: str | None, commit: int) -> None:
        self._check()
        state = HardState(term, vote, commit)
        self._pending.append(encode_hard_state(state))
        self._hard_state = state

    def pending_bytes(self) -> int:
        return sum(map(len, self._pending))

    def next_sync_is_one_block(self) -> bool:
        if not self._direct_io:
            return False
        return len(self._disk.wal) % DIRECT_BLOCK + sum(map(len, self._pending)) <= DIRECT_BLOCK

    def sync(self) -> None:
        self._check()
        if self._pending and self._power_fails_in_sync():
            # Part of the write may land; the caller never returns.
            self.power_cut()
            raise NodeCrashed("the power failed during a sync")
        pending, self._pending = self._pending, []
        self._disk.write_synced(b"".join(pending))

    def compact(self, up_to_index: int) -> None:
        self._check()
        if up_to_index > self._compacted_index:
            self._pending.append(encode_index_marker(RecordType.COMPACT, up_to_index))
            self._compacted_index = up_to_index
            self._last_index = max(self._last_index, up_to_index)
        self.sync()

    def close(self) -> None:
        if not self.crashed:
            self.sync()
            self.crashed = True

    def power_cut(self) -> None:
        """The node lost power: what was not synced may be lost or torn."""
        if self.crashed:
            return
        self.crashed = True
        pending, self._pending = self._pending, []
        self._disk.power_cut(pending, self._rng)


class SimSnapshotStore:
    """The part of raftkv.storage.SnapshotStore that RaftDriver and start-up use."""

    def __init__(self, disk: SimDisk) -> None:
        self._disk = disk
        self.crashed = False
        self.saves = 0

    def save(self, meta: dict[str, Any], data: bytes) -> None:
        if self.crashed:
            raise NodeCrashed("this node incarnation crashed")
        validate_meta(meta)
        snapshots = self._disk.snapshots
        if snapshots and meta["index"] < snapshots[-1][0]["index"]:
            raise ValueError(
                f"snapshot at index {meta['index']} is older than the newest stored one ({snapshots[-1][0]['index']})"
            )
        snapshots.append((dict(meta), bytes(data)))
        del snapshots[:-KEEP_SNAPSHOTS]
        self.saves += 1

    def load_latest(self) -> tuple[dict[str, Any], bytes] | None:
        snapshots = self._disk.snapshots
        return snapshots[-1] if snapshots else None
