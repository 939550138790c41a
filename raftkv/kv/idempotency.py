"""The table of applied idempotency keys and their first results.

It is replicated state: every replica records the same keys in the same log
order, so eviction depends only on what was recorded (oldest first, by count
and by retained value bytes) and never on time.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator
from typing import Any

Result = dict[str, Any]

DEFAULT_MAX_KEYS = 100_000
# Results of puts and txn gets hold values (up to 1 MiB each); without a byte
# bound 100k retained results could pin ~100 GiB after the keys are overwritten.
DEFAULT_MAX_BYTES = 64 * 1024 * 1024


class IdempotencyTable:
    def __init__(self, max_keys: int = DEFAULT_MAX_KEYS, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if type(max_keys) is not int or max_keys < 0:
            raise ValueError(f"max_idempotency_keys must be an integer >= 0, got {max_keys!r}")
        if type(max_bytes) is not int or max_bytes < 0:
            raise ValueError(f"max_idempotency_bytes must be an integer >= 0, got {max_bytes!r}")
        self._max_keys = max_keys
        self._max_bytes = max_bytes
        self._retained_bytes = 0
        # OrderedDict because popping its oldest entry is O(1); a plain dict
        # degrades when entries are repeatedly removed from the front.
        self._entries: OrderedDict[str, tuple[Result, int]] = OrderedDict()

    @property
    def max_keys(self) -> int:
        return self._max_keys

    @property
    def max_bytes(self) -> int:
        return self._max_bytes

    @property
    def retained_bytes(self) -> int:
        return self._retained_bytes

    def get(self, idem: str) -> Result | None:
        entry = self._entries.get(idem)
        return None if entry is None else entry[0]

    def record(self, idem: str, result: Result) -> None:
        """Remember ``result`` as the outcome of ``idem`` (a key not yet held)."""
        size = value_bytes(result)
        self._entries[idem] = (result, size)
        self._retained_bytes += size
        entries = self._entries
        while len(entries) > self._max_keys or self._retained_bytes > self._max_bytes:
            _, (_, evicted_size) = entries.popitem(last=False)
            self._retained_bytes -= evicted_size

    def replace(self, entries: Iterable[tuple[str, Result]]) -> None:
        """Forget everything and record ``entries``, oldest first."""
        self._entries.clear()
        self._retained_bytes = 0
        for idem, result in entries:
            self.record(idem, result)

    def items(self) -> Iterator[tuple[str, Result]]:
        """Entries oldest first, the order eviction follows."""
        return ((idem, entry[0]) for idem, entry in self._entries.items())

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
