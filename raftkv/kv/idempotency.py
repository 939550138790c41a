"""The table of applied idempotency keys and their first results.

It is replicated state: every replica records the same keys in the same log
order, so eviction is by count (oldest first) and never by time.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator
from typing import Any

Result = dict[str, Any]


class IdempotencyTable:
    def __init__(self, max_keys: int) -> None:
        if max_keys < 0:
            raise ValueError(f"max_idempotency_keys must be >= 0, got {max_keys}")
        self._max_keys = max_keys
        # OrderedDict because popping its oldest entry is O(1); a plain dict
        # degrades when entries are repeatedly removed from the front.
        self._results: OrderedDict[str, Result] = OrderedDict()

    @property
    def max_keys(self) -> int:
        return self._max_keys

    def get(self, idem: str) -> Result | None:
        return self._results.get(idem)

    def record(self, idem: str, result: Result) -> None:
        self._results[idem] = result
        while len(self._results) > self._max_keys:
            self._results.popitem(last=False)

    def replace(self, entries: Iterable[tuple[str, Result]]) -> None:
        """Forget everything and record ``entries``, oldest first."""
        self._results.clear()
        for idem, result in entries:
            self.record(idem, result)

    def items(self) -> Iterator[tuple[str, Result]]:
        """Entries oldest first, the order eviction follows."""
        return iter(self._results.items())

    def __len__(self) -> int:
        return len(self._results)
