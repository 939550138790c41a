"""The lock workload's checker: no two holds of the lock overlap, and
fencing tokens grow in the order the lock was acquired.

A hold runs from its acquire's answer (`acquired`) to the earlier of the
invocation of its release (`release_invoked`) and `lease_safe_until`: the
last moment its lease was certainly alive (the invocation of the last
renewal the leader acknowledged, plus the TTL; the leader applies a renewal
after it was sent, so its deadline is no earlier). After that the holder
cannot know it still holds the lock, which is why fencing exists.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from jepsen_style.history import HistoryEvent

HOLDS_KEY = "holds"


@dataclass
class LockCheck:
    valid: bool | None  # None: no report of the holds to check
    anomalies: list[str] = field(default_factory=list)
    checked: int = 0


def hold_end(hold: dict[str, Any]) -> float:
    return float(min(hold["release_invoked"], hold["lease_safe_until"]))


def check_holds(holds: list[dict[str, Any]]) -> list[str]:
    anomalies: list[str] = []
    ordered = sorted(holds, key=lambda h: h["acquired"])
    # Any hold that started before an earlier one ended overlaps it; the
    # latest-ending earlier hold is the one to compare with.
    latest: dict[str, Any] | None = None
    for hold in ordered:
        if latest is not None and hold["acquired"] < hold_end(latest):
            anomalies.append(
                f"overlap: hold {hold['id']} (token {hold['token']}) acquired at {hold['acquired']:.3f} s while "
                f"hold {latest['id']} (token {latest['token']}) held the lock until {hold_end(latest):.3f} s"
            )
        if latest is None or hold_end(hold) > hold_end(latest):
            latest = hold
    for before, after in zip(ordered, ordered[1:]):
        if after["token"] <= before["token"]:
            anomalies.append(
                f"fencing: hold {after['id']} acquired at {after['acquired']:.3f} s got token {after['token']}, "
                f"not above token {before['token']} of hold {before['id']} acquired at {before['acquired']:.3f} s"
            )
    return anomalies


def check_locks(events: list[HistoryEvent]) -> LockCheck:
    reports = [e.value for e in events if e.f == "read" and e.key == HOLDS_KEY and e.type == "ok"]
    if not reports or not isinstance(reports[-1], list):
        return LockCheck(None, ["no report of the holds (the final read of 'holds' did not succeed)"])
    holds = reports[-1]
    return LockCheck(not (anomalies := check_holds(holds)), anomalies, len(holds))
