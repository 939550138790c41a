"""The result type shared by the invariant checkers (inventory, set)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from jepsen_style.history import Call


@dataclass(frozen=True, slots=True)
class InvariantResult:
    """`anomalies` are plain-language findings; `valid` iff there are none."""

    anomalies: list[str] = field(default_factory=list)
    # How many independent things (SKUs, sets) were checked.
    checked: int = 0

    @property
    def valid(self) -> bool:
        return not self.anomalies


def final_reads(calls: list[Call], read_function: str = "read") -> dict[Any, Call]:
    """The last successful read of each key (by invocation time)."""
    finals: dict[Any, Call] = {}
    for call in calls:
        if call.f == read_function and call.outcome == "ok":
            current = finals.get(call.key)
            if current is None or call.start >= current.start:
                finals[call.key] = call
    return finals


def settled_before(call: Call, read: Call) -> bool:
    """True if `call` certainly completed before `read` started, so the read
    must reflect it; otherwise it may or may not have taken effect."""
    return call.outcome_known and call.end < read.start
