"""Appends history events as they happen, to memory and to `history.jsonl`."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from jepsen_style.history import NEMESIS, EventType, HistoryEvent, HistoryWriter


class HistoryRecorder:
    """Times are monotonic seconds since the recorder was made."""

    def __init__(self, path: Path) -> None:
        self.origin = time.monotonic()
        self.events: list[HistoryEvent] = []
        self._writer = HistoryWriter(path, mode="wb")

    def start_clock(self) -> None:
        """Make time 0 now (the workload's start); call before any event."""
        assert not self.events, "the clock must start before the first event"
        self.origin = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self.origin

    def record(self, process: int | str, type: EventType, f: str, key: str | None, value: Any,
               **extra: Any) -> HistoryEvent:
        event = HistoryEvent(process, type, f, key, value, round(self.now(), 6),
                             {name: item for name, item in extra.items() if item is not None})
        self.events.append(event)
        self._writer.append(event)
        return event

    def record_nemesis(self, f: str, value: Any, phase: str) -> None:
        self.record(NEMESIS, "info", f, None, value, phase=phase)

    def close(self) -> None:
        self._writer.close()
