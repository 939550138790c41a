"""Figures and the table of a failover drill (pure functions)."""
from __future__ import annotations

import bisect
import statistics
from dataclasses import asdict, dataclass
from typing import Any, Sequence

from jepsen_style.report.stats import percentile


@dataclass(frozen=True, slots=True)
class RoundResult:
    round: int
    mode: str
    old_leader: str
    new_leader: str | None
    # Seconds from the fault until a node other than the old leader led.
    leader_s: float | None
    # Seconds from the fault until the first acknowledged write invoked after it.
    write_stall_s: float | None
    acknowledged: int = 0
    lost: int = 0
    error: str | None = None


def spread(values: Sequence[float | None]) -> dict[str, float | None]:
    """Median, nearest-rank p99 and worst of the measured values (None ignored)."""
    known = [v for v in values if v is not None]
    if not known:
        return {"median": None, "p99": None, "worst": None}
    return {"median": round(statistics.median(known), 4), "p99": round(percentile(known, 0.99) or 0, 4),
            "worst": round(max(known), 4)}


def round_of(moment: float, fault_times: Sequence[float]) -> int:
    """Which round a moment belongs to: 0 before the first fault, r from the
    r-th fault until the next."""
    return bisect.bisect_right(list(fault_times), moment)


def drill_json(rounds: Sequence[RoundResult], config: dict[str, Any], acknowledged: int, lost: list[str],
               lost_before_first_fault: int, harness_errors: list[str]) -> dict[str, Any]:
    return {
        "config": config,
        "rounds": [asdict(r) for r in rounds],
        "leader_s": spread([r.leader_s for r in rounds]),
        "write_stall_s": spread([r.write_stall_s for r in rounds]),
        "acknowledged_writes": acknowledged,
        "lost_writes": len(lost),
        "lost_before_first_fault": lost_before_first_fault,
        "lost_keys": lost[:100],
        "all_acknowledged_writes_survived": not lost,
        "rounds_failed": sum(1 for r in rounds if r.error),
        "harness_errors": harness_errors,
    }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}"


def format_table(result: dict[str, Any]) -> str:
    header = f"{'round':>5}  {'old':>4}  {'new':>4}  {'new leader ms':>13}  {'write stall ms':>14}  " \
             f"{'acked':>6}  {'lost':>4}  note"
    lines = [header, "-" * len(header)]
    for r in result["rounds"]:
        lines.append(f"{r['round']:>5}  {r['old_leader']:>4}  {r['new_leader'] or '-':>4}  "
                     f"{_ms(r['leader_s']):>13}  {_ms(r['write_stall_s']):>14}  {r['acknowledged']:>6}  "
                     f"{r['lost']:>4}  {r['error'] or ''}")
    lines.append("-" * len(header))
    for label in ("median", "p99", "worst"):
        lines.append(f"{label:>5}  {'':>4}  {'':>4}  {_ms(result['leader_s'][label]):>13}  "
                     f"{_ms(result['write_stall_s'][label]):>14}")
    survived = "yes" if result["all_acknowledged_writes_survived"] else \
        f"NO: {result['lost_writes']} lost"
    lines.append(f"acknowledged writes: {result['acknowledged_writes']}; all survived: {survived}")
    return "\n".join(lines)
