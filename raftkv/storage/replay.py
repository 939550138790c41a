"""Rebuilding the log from WAL records, and the index rules appends obey.

Pure logic: recovery feeds it decoded records in WAL order; the WAL uses
``check_append`` before writing anything so the log on disk can always be
replayed by these same rules.
"""

from __future__ import annotations

from raftkv.storage.records import HardState, LogRecord


def check_append(last_index: int, compacted_index: int, first_new_index: int) -> bool:
    """Validate where a batch may start; True when it first truncates the log.

    Raises ValueError for a batch that would leave a gap or rewrite entries a
    snapshot already covers.
    """
    if first_new_index <= compacted_index:
        raise ValueError(
            f"cannot write log index {first_new_index}: entries up to {compacted_index} "
            "are compacted into a snapshot"
        )
    if first_new_index > last_index + 1:
        raise ValueError(
            f"log gap: last index is {last_index} but the batch starts at {first_new_index}; "
            "after installing a snapshot call compact(snapshot_index) first"
        )
    return first_new_index <= last_index


def check_contiguous(entries: list[LogRecord]) -> None:
    expected = entries[0].index
    for entry in entries:
        if entry.index != expected:
            raise ValueError(f"batch is not index-contiguous: expected index {expected}, got {entry.index}")
        expected += 1


class LogReplay:
    """The log as it stands after the records seen so far.

    ``expected_next`` is the index the next entry must have while the log
    holds no entries.
    """

    def __init__(self, expected_next: int) -> None:
        self.entries: list[LogRecord] = []
        self.compacted_index = 0
        self.hard_state: HardState | None = None
        self.expected_next = expected_next

    @property
    def last_index(self) -> int:
        if self.entries:
            return self.entries[-1].index
        return max(self.expected_next - 1, self.compacted_index)

    @property
    def first_index(self) -> int:
        return self.entries[0].index if self.entries else self.last_index + 1

    def on_entry(self, entry: LogRecord) -> str | None:
        """Apply one entry; returns why it is inconsistent, or None."""
        if entry.index <= self.compacted_index:
            return f"entry {entry.index} at or below compacted index {self.compacted_index}"
        expected = self.entries[-1].index + 1 if self.entries else self.expected_next
        if entry.index != expected:
            return f"entry index {entry.index} where {expected} was expected"
        self.entries.append(entry)
        return None

    def on_truncate(self, index: int) -> str | None:
        if index <= self.compacted_index:
            return f"truncation at {index} at or below compacted index {self.compacted_index}"
        if self.entries:
            first = self.entries[0].index
            if index > self.entries[-1].index + 1:
                return f"truncation at {index} beyond last index {self.entries[-1].index}"
            if index <= first:
                self.entries.clear()
            else:
                del self.entries[index - first :]
        elif index > self.expected_next:
            return f"truncation at {index} beyond next index {self.expected_next}"
        self.expected_next = index
        return None

    def on_compact(self, index: int) -> None:
        last = self.last_index
        if index > self.compacted_index:
            self.compacted_index = index
        if self.entries and self.entries[0].index <= index:
            keep_from = index + 1 - self.entries[0].index
            del self.entries[:keep_from]
        if not self.entries:
            self.expected_next = max(last, self.compacted_index) + 1

    def on_hard_state(self, state: HardState) -> None:
        self.hard_state = state
