"""An exact in-memory cache of recently used keys' latest state, in front
of the store.

A current read of a key costs an LMDB read transaction, a ``latest``
lookup, a ``history`` lookup for the value and a ``lease`` lookup, with a
msgpack decode for each record; a put looks up the ``latest`` record for
the key's create revision and version. The state machine is the store's
only writer, so it can keep a copy of the latest state of the keys it
touched that is never stale: every write of a key goes through
``KVStateMachine._write``, which updates the entry in the same step, and
anything that changes the store another way (a batch aborted, a snapshot
restored, another store attached) clears the whole cache.

An entry is ``(record, lease)`` with ``record`` None for a key known not
to exist. Bounded by entries and by bytes (keys and values); the oldest
entries (by insertion or last write) go first. Reads that load an entry insert it, so
a read-mostly working set stays cached too.
"""

from __future__ import annotations

from typing import Any

# (value, create_revision, mod_revision, version), as the state machine's Record
Record = tuple[bytes, int, int, int]
Entry = tuple[Record | None, int]

DEFAULT_MAX_ENTRIES = 16_384
DEFAULT_MAX_BYTES = 64 << 20


class LatestCache:
    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_entries < 1 or max_bytes < 0:
            raise ValueError("max_entries must be at least 1 and max_bytes at least 0")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: dict[str, Entry] = {}
        self._bytes = 0  # keys' and values' lengths
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        return self._bytes

    def get(self, key: str) -> Entry | None:
        """The cached ``(record, lease)`` of ``key``, or None when not cached."""
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
        else:
            self.hits += 1
        return entry

    def put(self, key: str, record: Record | None, lease: int) -> None:
        """``key`` is now ``record`` (None: absent) attached to ``lease``."""
        entries = self._entries
        old = entries.pop(key, None)
        if old is not None:
            self._bytes -= _size(key, old[0])
        size = _size(key, record)
        if size > self.max_bytes:
            return  # bigger than the whole cache: not cached (and the old entry is gone)
        entries[key] = (record, lease)
        self._bytes += size
        if len(entries) > self.max_entries or self._bytes > self.max_bytes:
            self._evict()

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0

    def _evict(self) -> None:
        entries = self._entries
        while len(entries) > self.max_entries or self._bytes > self.max_bytes:
            oldest = next(iter(entries))
            record, _lease = entries.pop(oldest)
            self._bytes -= _size(oldest, record)

    def stats(self) -> dict[str, Any]:
        return {"entries": len(self._entries), "bytes": self._bytes, "hits": self.hits, "misses": self.misses}


def _size(key: str, record: Record | None) -> int:
    return len(key) + (0 if record is None else len(record[0]))
