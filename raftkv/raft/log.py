"""The in-memory Raft log: entries after a compaction point.

Indexes are 1-based and contiguous. ``offset`` is the index just before the
first kept entry (the compaction point; 0 for a fresh log) and
``offset_term`` its term, so ``term(offset)`` stays answerable after
compaction -- the consistency check of the first append after a snapshot
needs it.
"""

from __future__ import annotations

from raftkv.raft.types import Entry


class LogInvariantError(AssertionError):
    """A peer asked us to do something Raft forbids (e.g. rewrite a committed
    entry). Only a bug or corrupted storage can cause this."""


class RaftLog:
    __slots__ = ("_entries", "offset", "offset_term", "unstable_from")

    def __init__(self, offset: int = 0, offset_term: int = 0, entries: list[Entry] | None = None) -> None:
        self._entries: list[Entry] = []
        self.offset = offset
        self.offset_term = offset_term
        if entries:
            if entries[0].index != offset + 1:
                raise ValueError(
                    f"restored entries must start at index {offset + 1} (right after the "
                    f"snapshot), got {entries[0].index}"
                )
            for prev, cur in zip(entries, entries[1:]):
                if cur.index != prev.index + 1:
                    raise ValueError(f"restored entries are not contiguous at index {cur.index}")
                if cur.term < prev.term:
                    raise ValueError(f"restored entry terms go backwards at index {cur.index}")
            if entries[0].term < offset_term:
                raise ValueError("restored entries have a term older than the snapshot")
            self._entries = list(entries)
        # First index the driver has not yet been told to persist.
        self.unstable_from = self.last_index() + 1

    # ---- queries -------------------------------------------------------
    def first_index(self) -> int:
        return self.offset + 1

    def last_index(self) -> int:
        return self.offset + len(self._entries)

    def last_term(self) -> int:
        return self._entries[-1].term if self._entries else self.offset_term

    def term(self, index: int) -> int | None:
        """Term of ``index``, or None if it was compacted away or does not exist yet."""
        if index == self.offset:
            return self.offset_term
        pos = index - self.offset - 1
        if pos < 0 or pos >= len(self._entries):
            return None
        return self._entries[pos].term

    def match_term(self, index: int, term: int) -> bool:
        return self.term(index) == term

    def entry(self, index: int) -> Entry:
        return self._entries[index - self.offset - 1]

    def slice(self, lo: int, hi: int) -> list[Entry]:
        """Entries with lo <= index <= hi (callers keep lo > offset)."""
        base = self.offset + 1
        return self._entries[lo - base : hi - base + 1]

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Is a log ending at (last_index, last_term) at least as current as ours?"""
        mine = self.last_term()
        return last_term > mine or (last_term == mine and last_index >= self.last_index())

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """Largest i <= index whose term is <= term, with that term.

        Both sides of a rejected append use this to skip whole terms at a
        time instead of one entry per round trip.
        """
        index = min(index, self.last_index())
        while index > self.offset:
            t = self._entries[index - self.offset - 1].term
            if t <= term:
                return index, t
            index -= 1
        return self.offset, self.offset_term

    # ---- mutation ------------------------------------------------------
    def append(self, entries: list[Entry]) -> None:
        """Append entries whose first index is at most last+1, dropping any
        existing entries from that index on."""
        if not entries:
            return
        first = entries[0].index
        last = self.last_index()
        if first == last + 1:
            self._entries.extend(entries)
        else:
            if first <= self.offset or first > last + 1:
                raise LogInvariantError(f"append at index {first} outside log ({self.offset}, {last}]")
            del self._entries[first - self.offset - 1 :]
            self._entries.extend(entries)
            if first < self.unstable_from:
                self.unstable_from = first

    def maybe_append(self, prev_index: int, prev_term: int, entries: list[Entry] | tuple[Entry, ...], commit: int) -> int | None:
        """Follower side of AppendEntries: returns the last index known to
        match the leader's log, or None if (prev_index, prev_term) does not match."""
        if not self.match_term(prev_index, prev_term):
            return None
        last_new = prev_index + len(entries)
        if entries:
            conflict = self._find_conflict(entries)
            if conflict:
                if conflict <= commit:
                    raise LogInvariantError(f"entry {conflict} conflicts with committed entry (commit={commit})")
                self.append(list(entries[conflict - entries[0].index :]))
        return last_new

    def _find_conflict(self, entries: list[Entry] | tuple[Entry, ...]) -> int:
        """Index of the first entry that is new or differs in term; 0 if all present."""
        last = self.last_index()
        # Fast path: the common case is a pure extension of our log.
        if entries[0].index > last:
            return entries[0].index
        for e in entries:
            if e.index > last or self.term(e.index) != e.term:
                return e.index
        return 0

    def unstable_entries(self) -> list[Entry]:
        if self.unstable_from > self.last_index():
            return []
        return self._entries[self.unstable_from - self.offset - 1 :]

    def stable_to(self, index: int, term: int) -> None:
        """The driver persisted entries up to (index, term). Ignored if the
        log was rewritten since, so rewritten entries get persisted again."""
        if self.term(index) == term and index >= self.unstable_from:
            self.unstable_from = index + 1

    def compact_to(self, index: int) -> None:
        """Forget entries up to and including ``index`` (must be persisted)."""
        if index <= self.offset:
            return
        if index > self.last_index():
            raise ValueError(f"cannot compact to {index}: last index is {self.last_index()}")
        term = self.term(index)
        assert term is not None
        del self._entries[: index - self.offset]
        self.offset = index
        self.offset_term = term

    def restore(self, index: int, term: int) -> None:
        """Replace the whole log by a snapshot ending at (index, term)."""
        self._entries = []
        self.offset = index
        self.offset_term = term
        self.unstable_from = index + 1
