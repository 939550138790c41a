"""Simulated durable storage: exactly what survives a crash.

A Ready becomes durable only when the simulated driver calls ``persist``
(its "fsync"); a crash before that loses all of it, as it would for the
real WAL.
"""

from __future__ import annotations

from raftkv.raft.ready import Ready
from raftkv.raft.types import Entry, HardState, RestoredState, Snapshot


class SimStorage:
    def __init__(self) -> None:
        self.hard_state = HardState()
        self.snapshot: Snapshot | None = None
        self.entries: list[Entry] = []

    def _base(self) -> int:
        return self.snapshot.meta.index if self.snapshot is not None else 0

    def persist(self, rd: Ready) -> None:
        if rd.snapshot is not None:
            self.snapshot = rd.snapshot
            self.entries = []
        if rd.entries:
            first = rd.entries[0].index
            base = self._base()
            if first <= base or first > base + len(self.entries) + 1:
                raise AssertionError(f"Ready entries start at {first}, storage holds ({base}, {base + len(self.entries)}]")
            del self.entries[first - base - 1 :]
            self.entries.extend(rd.entries)
        if rd.hard_state is not None:
            self.hard_state = rd.hard_state

    def compact(self, snapshot: Snapshot) -> None:
        base = self._base()
        upto = snapshot.meta.index
        if upto <= base:
            return
        del self.entries[: upto - base]
        self.snapshot = snapshot

    def last_index(self) -> int:
        return self._base() + len(self.entries)

    def term(self, index: int) -> int | None:
        base = self._base()
        if index == base:
            return self.snapshot.meta.term if self.snapshot is not None else 0
        if base < index <= base + len(self.entries):
            return self.entries[index - base - 1].term
        return None

    def restored(self) -> RestoredState:
        meta = self.snapshot.meta if self.snapshot is not None else None
        return RestoredState(self.hard_state, meta, list(self.entries))
