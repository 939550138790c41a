"""The keys a node serves most, by reads and by writes, over a sliding window.

Hot keys are what hurts a KV store first (one key's writes serialize on the
leader, one key's reads on whoever holds it), and the question an operator
asks is "which keys, lately". Counting every key exactly would grow with the
key space, so each kind of access is counted with the Space-Saving algorithm
(Metwally, Agrawal, El Abbadi 2005): at most ``capacity`` counters; a key
without one takes over the smallest, inheriting its count as its possible
overcount (``error``). Any key accessed more than N/capacity times in N
accesses is guaranteed to be counted, and counts are exact while fewer than
``capacity`` distinct keys are seen.

The window is ``slots`` summaries: ``rotate()`` drops the oldest and starts a
new one, and a query adds up all of them. This module keeps no clock: the
node's loop calls ``rotate()`` every ``rotate_interval`` seconds
(raftkv/node.py), so the answer covers the last window, give or take one
slot.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any


class _Bucket:
    """The keys that share one count, in a list of buckets sorted by count."""

    __slots__ = ("count", "keys", "prev", "next")

    def __init__(self, count: int) -> None:
        self.count = count
        self.keys: dict[str, None] = {}  # insertion-ordered set
        self.prev: _Bucket | None = None
        self.next: _Bucket | None = None


class SpaceSaving:
    """Approximate top-k counts in ``capacity`` counters (Stream-Summary: O(1) per access)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self.total = 0  # accesses counted, including those of evicted keys
        self._bucket_of: dict[str, _Bucket] = {}
        self._error: dict[str, int] = {}
        self._smallest: _Bucket | None = None

    def __len__(self) -> int:
        return len(self._bucket_of)

    @property
    def min_count(self) -> int:
        """The smallest count kept: an upper bound on any uncounted key's count once full."""
        smallest = self._smallest
        return smallest.count if smallest is not None and len(self._bucket_of) >= self.capacity else 0

    def add(self, key: str) -> None:
        self.total += 1
        bucket = self._bucket_of.get(key)
        if bucket is not None:
            self._move_up(key, bucket)
            return
        if len(self._bucket_of) < self.capacity:
            self._error[key] = 0
            self._insert_smallest(key)
            return
        # Full: the new key replaces one with the smallest count.
        smallest = self._smallest
        assert smallest is not None
        evicted = next(iter(smallest.keys))
        del smallest.keys[evicted]
        del self._bucket_of[evicted]
        del self._error[evicted]
        smallest.keys[key] = None
        self._bucket_of[key] = smallest
        self._error[key] = smallest.count
        self._move_up(key, smallest)

    def counts(self) -> dict[str, tuple[int, int]]:
        """key -> (count, error): the key was accessed between count - error and count times."""
        error = self._error
        return {key: (bucket.count, error[key]) for key, bucket in self._bucket_of.items()}

    def _insert_smallest(self, key: str) -> None:
        smallest = self._smallest
        if smallest is None or smallest.count != 1:
            bucket = _Bucket(1)
            bucket.next = smallest
            if smallest is not None:
                smallest.prev = bucket
            self._smallest = smallest = bucket
        smallest.keys[key] = None
        self._bucket_of[key] = smallest

    def _move_up(self, key: str, bucket: _Bucket) -> None:
        """Count one more access of ``key``, which is in ``bucket``."""
        count = bucket.count + 1
        following = bucket.next
        if following is None or following.count != count:
            if len(bucket.keys) == 1:
                bucket.count = count  # alone here: the bucket keeps its place
                return
            new = _Bucket(count)
            new.prev, new.next = bucket, following
            bucket.next = new
            if following is not None:
                following.prev = new
            following = new
        del bucket.keys[key]
        following.keys[key] = None
        self._bucket_of[key] = following
        if not bucket.keys:
            self._unlink(bucket)

    def _unlink(self, bucket: _Bucket) -> None:
        prev, following = bucket.prev, bucket.next
        if prev is None:
            self._smallest = following
        else:
            prev.next = following
        if following is not None:
            following.prev = prev


@dataclass(frozen=True)
class HotKey:
    key: str
    count: int  # accesses in the window, at most this many
    error: int  # at least count - error

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "count": self.count, "error": self.error}


class WindowedTopKeys:
    """Space-Saving summaries over the last ``slots`` rotations."""

    def __init__(self, capacity: int, slots: int) -> None:
        if slots < 1:
            raise ValueError(f"slots must be at least 1, got {slots}")
        self.capacity = capacity
        self.current = SpaceSaving(capacity)  # the slot accesses are counted in now
        self._slots: deque[SpaceSaving] = deque([self.current], maxlen=slots)

    def add(self, key: str) -> None:
        self.current.add(key)

    def rotate(self) -> None:
        """Start a new slot; the oldest one, once there are ``slots``, is dropped."""
        self.current = SpaceSaving(self.capacity)
        self._slots.append(self.current)

    @property
    def total(self) -> int:
        return sum(slot.total for slot in self._slots)

    def top(self, limit: int) -> list[HotKey]:
        """The ``limit`` keys with the highest counts, highest first (ties by key).

        A key's count is the sum over the slots; a full slot that does not
        hold the key adds its smallest count to both count and error (the
        key may have had that many accesses there before being evicted), so
        count stays an upper bound and count - error a lower one.
        """
        slots = [(slot.counts(), slot.min_count) for slot in self._slots]
        keys: set[str] = set()
        for counts, _ in slots:
            keys.update(counts)
        ranked: list[tuple[int, str, int]] = []
        for key in keys:
            count = error = 0
            for counts, unseen in slots:
                got = counts.get(key)
                if got is None:
                    count += unseen
                    error += unseen
                else:
                    count += got[0]
                    error += got[1]
            ranked.append((-count, key, error))
        ranked.sort()
        return [HotKey(key, -negative, error) for negative, key, error in ranked[:limit]]


class HotKeys:
    """Top keys by reads and by writes on this node over a sliding window."""

    def __init__(self, window_seconds: float = 60.0, slots: int = 6, capacity: int = 100) -> None:
        if window_seconds <= 0:
            raise ValueError(f"window_seconds must be positive, got {window_seconds}")
        self.window_seconds = window_seconds
        self.slots = slots
        self.capacity = capacity
        self.reads = WindowedTopKeys(capacity, slots)
        self.writes = WindowedTopKeys(capacity, slots)

    @property
    def rotate_interval(self) -> float:
        return self.window_seconds / self.slots

    def read(self, key: str) -> None:
        self.reads.current.add(key)

    def wrote(self, key: str) -> None:
        self.writes.current.add(key)

    def rotate(self) -> None:
        self.reads.rotate()
        self.writes.rotate()

    def to_json(self, limit: int) -> dict[str, Any]:
        return {
            "window_seconds": self.window_seconds,
            "reads": {"total": self.reads.total, "top": [k.to_json() for k in self.reads.top(limit)]},
            "writes": {"total": self.writes.total, "top": [k.to_json() for k in self.writes.top(limit)]},
        }

