"""Rebuilding the Raft core's starting state from the newest snapshot, the
WAL and the state machine's own store. Pure: it takes what storage read and
decides what to keep.

The WAL, the snapshot store and the state machine's store are written
separately, so a crash can leave them out of step; each case below names
the window that produces it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from raftkv.raft.types import ConfState, Entry, HardState, RestoredState, SnapshotMeta
from raftkv.storage.errors import StorageError
from raftkv.storage.wal import RecoveredLog


class RecoveryError(StorageError):
    """The snapshot and the WAL do not fit together; starting could lose
    acknowledged writes, so the node refuses to start."""


@dataclass(frozen=True)
class Recovery:
    restored: RestoredState
    # The WAL should be told entries up to here live in the snapshot (0: nothing to do).
    compact_to: int
    # The WAL still holds entries after this snapshot index that belong to a
    # log the snapshot replaced; they must be overwritten by the next append
    # before the WAL may be compacted (None: no such entries).
    stale_after: int | None
    # The log index the state machine's store already holds: the core starts
    # with it applied and hands out only the entries after it.
    applied: int = 0
    # The store cannot be resumed (it is behind the snapshot, or ahead of
    # the log that was kept): restore it from the snapshot first (with no
    # snapshot: empty it).
    restore_snapshot: bool = False


def snapshot_meta_to_json(meta: SnapshotMeta) -> dict[str, Any]:
    return {
        "index": meta.index,
        "term": meta.term,
        "voters": list(meta.conf.voters),
        "learners": list(meta.conf.learners),
    }


def snapshot_meta_from_json(meta: dict[str, Any]) -> SnapshotMeta:
    try:
        index, term = meta["index"], meta["term"]
        voters, learners = meta["voters"], meta.get("learners", [])
    except KeyError as exc:
        raise RecoveryError(f"snapshot metadata lacks {exc.args[0]!r}: {meta!r}") from None
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (index, term)):
        raise RecoveryError(f"snapshot index and term must be non-negative integers: {meta!r}")
    if not isinstance(voters, list) or not isinstance(learners, list) or not all(
        isinstance(n, str) and n for n in voters + learners
    ):
        raise RecoveryError(f"snapshot voters and learners must be lists of node ids: {meta!r}")
    return SnapshotMeta(index, term, ConfState(tuple(voters), tuple(learners)))


def recover(snapshot: SnapshotMeta | None, wal: RecoveredLog, store_applied: int = 0) -> Recovery:
    """What the core starts from. ``store_applied`` is the log index the
    state machine's store says it holds (0 for a state machine kept in
    memory, which the snapshot restores)."""
    found = _recover_log(snapshot, wal)
    return _resume_store(found, store_applied)


def _resume_store(found: Recovery, store_applied: int) -> Recovery:
    restored = found.restored
    snapshot_index = restored.snapshot.index if restored.snapshot is not None else 0
    last = restored.entries[-1].index if restored.entries else snapshot_index
    if store_applied > last or store_applied < snapshot_index:
        # Behind the snapshot: a new or rebuilt store. Ahead of the log: the
        # entries it applied after the snapshot were dropped as another
        # log's (see the divergent-tail case); they come back from the
        # leader, so the store must go back to the snapshot to apply them once.
        # Without a snapshot the store goes back to the empty state (index
        # 0), and the WAL, never compacted then, replays from its start. A
        # leader can get here: it applies entries that followers' acks
        # committed while its own write of them was still under way, and a
        # kill -9 then loses them from its WAL but not from its store.
        return replace(found, applied=snapshot_index, restore_snapshot=True)
    hard = restored.hard_state
    if hard.commit < store_applied:
        # Applied entries were committed (a quorum had them) even when the
        # hard state that says so was not yet written.
        restored = replace(restored, hard_state=hard._replace(commit=store_applied))
    return replace(found, restored=restored, applied=store_applied)


def _recover_log(snapshot: SnapshotMeta | None, wal: RecoveredLog) -> Recovery:
    stored = wal.hard_state
    hard_state = HardState(stored.term, stored.vote, stored.commit) if stored is not None else HardState()
    entries = [Entry(e.index, e.term, e.kind, e.data) for e in wal.entries]
    if snapshot is None:
        if wal.compacted_index > 0:
            raise RecoveryError(
                f"the WAL says entries up to {wal.compacted_index} live in a snapshot, "
                "but there is no snapshot"
            )
        if entries and entries[0].index != 1:
            raise RecoveryError(f"the WAL starts at index {entries[0].index} with no snapshot before it")
        return Recovery(RestoredState(hard_state, None, entries), 0, None)

    index = snapshot.index
    if wal.compacted_index > index:
        # The snapshot the WAL was compacted against is gone (set aside as
        # corrupt?): the entries between the two are lost.
        raise RecoveryError(
            f"the WAL was compacted up to {wal.compacted_index} but the newest usable "
            f"snapshot ends at {index}: entries in between are missing"
        )
    kept = [e for e in entries if e.index > index]
    at_snapshot = next((e for e in entries if e.index == index), None)
    if at_snapshot is not None and at_snapshot.term != snapshot.term:
        # Crash after installing a leader's snapshot but before the next
        # append overwrote our old, divergent log: what follows is not ours.
        if kept:
            return Recovery(RestoredState(hard_state, snapshot, []), 0, index)
        return Recovery(RestoredState(hard_state, snapshot, []), index, None)
    if kept and kept[0].index != index + 1:
        raise RecoveryError(
            f"the WAL resumes at index {kept[0].index} but the snapshot ends at {index}: "
            "entries in between are missing"
        )
    compact_to = index if wal.compacted_index < index else 0
    return Recovery(RestoredState(hard_state, snapshot, kept), compact_to, None)
