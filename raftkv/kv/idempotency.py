"""The table of applied idempotency keys: each key's request fingerprint and
first result.

It is replicated state: every replica records the same keys in the same log
order, so what it forgets depends only on what was recorded, never on time.
Two bounds, both oldest first:

- ``max_keys``: beyond it the oldest key is forgotten entirely (a retry with
  it is a new request and applies again);
- ``max_bytes``: the value bytes that kept results may hold. Beyond it the
  oldest result that holds values is dropped but its key and fingerprint
  stay, so a retry is told the write was applied and its answer expired
  instead of applying it again.

The state machine stores results without the values their command carried
(it puts them back from the identical retry), so only values a write read
(txn ``get`` results) count against ``max_bytes``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

Result = dict[str, Any]

DEFAULT_MAX_KEYS = 100_000
# 100k results of txn gets of 1 MiB values could pin ~100 GiB; this caps the
# values that kept results hold.
DEFAULT_MAX_BYTES = 64 * 1024 * 1024


@dataclass(slots=True)
class Entry:
    # None: recorded before fingerprints were kept (a format-1 snapshot), so
    # no retry can be matched to it.
    fingerprint: bytes | None
    # None: dropped to stay within max_bytes; the write was applied.
    result: Result | None
    size: int  # value bytes ``result`` holds
    # Position in recording order; the state machine's store keys the
    # entry by it, so a restart reloads the table in the same order.
    seq: int = 0


# What changed in the table since the state machine last drained it: seq ->
# the entry to store under it, or None to delete it.
Changes = dict[int, tuple[str, bytes | None, "Result | None"] | None]


class IdempotencyTable:
    def __init__(self, max_keys: int = DEFAULT_MAX_KEYS, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if type(max_keys) is not int or max_keys < 0:
            raise ValueError(f"max_idempotency_keys must be an integer >= 0, got {max_keys!r}")
        if type(max_bytes) is not int or max_bytes < 0:
            raise ValueError(f"max_idempotency_bytes must be an integer >= 0, got {max_bytes!r}")
        self._max_keys = max_keys
        self._max_bytes = max_bytes
        self._retained_bytes = 0
        # OrderedDicts because popping the oldest entry is O(1); a plain dict
        # degrades when entries are repeatedly removed from the front.
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        # Keys whose result holds value bytes, oldest first: what max_bytes drops.
        self._sized: OrderedDict[str, None] = OrderedDict()
        self._next_seq = 1
        self._changes: Changes = {}

    @property
    def max_keys(self) -> int:
        return self._max_keys

    @property
    def max_bytes(self) -> int:
        return self._max_bytes

    @property
    def retained_bytes(self) -> int:
        return self._retained_bytes

    def get(self, idem: str) -> Entry | None:
        return self._entries.get(idem)

    def record(self, idem: str, fingerprint: bytes | None, result: Result | None) -> None:
        """Remember that ``idem`` was applied (a key not yet held)."""
        size = 0 if result is None else value_bytes(result)
        seq = self._next_seq
        self._next_seq = seq + 1
        self._entries[idem] = Entry(fingerprint, result, size, seq)
        self._changes[seq] = (idem, fingerprint, result)
        if size:
            self._sized[idem] = None
            self._retained_bytes += size
        entries = self._entries
        while len(entries) > self._max_keys:
            evicted, entry = entries.popitem(last=False)
            self._changes[entry.seq] = None
            if entry.size:
                del self._sized[evicted]
                self._retained_bytes -= entry.size
        while self._retained_bytes > self._max_bytes:
            expired, _ = self._sized.popitem(last=False)
            entry = entries[expired]
            self._retained_bytes -= entry.size
            entry.result, entry.size = None, 0
            self._changes[entry.seq] = (expired, entry.fingerprint, None)

    def replace(self, entries: Iterable[tuple[str, bytes | None, Result | None]]) -> None:
        """Forget everything and record ``entries``, oldest first."""
        self._entries.clear()
        self._sized.clear()
        self._retained_bytes = 0
        self._changes = {}
        for idem, fingerprint, result in entries:
            self.record(idem, fingerprint, result)

    def load(self, entries: Iterable[tuple[int, str, bytes | None, Result | None]]) -> None:
        """Forget everything and hold the ``(seq, key, fingerprint, result)``
        entries a store kept, oldest first, under their stored seqs."""
        self._entries.clear()
        self._sized.clear()
        self._retained_bytes = 0
        self._changes = {}
        for seq, idem, fingerprint, result in entries:
            size = 0 if result is None else value_bytes(result)
            self._entries[idem] = Entry(fingerprint, result, size, seq)
            if size:
                self._sized[idem] = None
                self._retained_bytes += size
            self._next_seq = max(self._next_seq, seq + 1)

    def drain_changes(self) -> Changes:
        """What changed since the last call, for the store."""
        changes, self._changes = self._changes, {}
        return changes

    def items(self) -> Iterator[tuple[str, bytes | None, Result | None]]:
        """Entries oldest first, the order eviction follows."""
        return ((idem, e.fingerprint, e.result) for idem, e in self._entries.items())

    def __len__(self) -> int:
        return len(self._entries)


def value_bytes(result: Result) -> int:
    """Bytes of stored values a result keeps alive.

    Tolerant of any shape, because results restored from a snapshot are only
    checked to be maps.
    """
    total = 0
    kv = result.get("kv")
    if type(kv) is dict and type(kv.get("value")) is bytes:
        total += len(kv["value"])
    items = result.get("results")
    if type(items) is list:
        for item in items:
            kv = item.get("kv") if type(item) is dict else None
            if type(kv) is dict and type(kv.get("value")) is bytes:
                total += len(kv["value"])
    return total
