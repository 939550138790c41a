"""Figures a report shows, computed from a history (pure functions)."""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from jepsen_style.history import HistoryEvent


@dataclass(frozen=True, slots=True)
class TimedOp:
    process: int
    f: str
    key: str | None
    type: str  # ok, fail, info, or "open" if the history ended first
    start: float
    end: float  # when the completion was recorded (the start for "open")

    @property
    def latency(self) -> float:
        return self.end - self.start

    @property
    def outcome(self) -> str:
        """The type, except that a failed cas is "cas-false": its compare was false,
        a definite answer the checker uses (the register workload records a cas it
        does not know was applied as info, never as fail)."""
        return CAS_FALSE if self.f == "cas" and self.type == "fail" else self.type


CAS_FALSE = "cas-false"


@dataclass(frozen=True, slots=True)
class FaultInterval:
    kind: str
    start: float
    end: float
    detail: Any


def timed_ops(events: Iterable[HistoryEvent]) -> list[TimedOp]:
    """Client operations with start and completion times, in invocation order."""
    pending: dict[Any, HistoryEvent] = {}
    ops: list[tuple[float, TimedOp]] = []
    for event in events:
        if event.is_nemesis:
            continue
        if event.type == "invoke":
            pending[event.process] = event
            continue
        invoke = pending.pop(event.process, None)
        if invoke is not None:
            ops.append((invoke.time, TimedOp(int(event.process), invoke.f, invoke.key, event.type,
                                             invoke.time, event.time)))
    for invoke in pending.values():
        ops.append((invoke.time, TimedOp(int(invoke.process), invoke.f, invoke.key, "open",
                                         invoke.time, invoke.time)))
    return [op for _, op in sorted(ops, key=lambda item: item[0])]


def fault_intervals(events: Iterable[HistoryEvent], end_of_history: float) -> list[FaultInterval]:
    """Nemesis "start" events paired with the next "end" of the same kind;
    a fault never ended lasts until the end of the history."""
    open_faults: dict[str, list[HistoryEvent]] = {}
    intervals: list[FaultInterval] = []
    for event in events:
        if not event.is_nemesis:
            continue
        phase = event.extra.get("phase")
        if phase == "start":
            open_faults.setdefault(event.f, []).append(event)
        elif phase == "end" and open_faults.get(event.f):
            started = open_faults[event.f].pop(0)
            intervals.append(FaultInterval(event.f, started.time, event.time, started.value))
    for waiting in open_faults.values():
        for started in waiting:
            intervals.append(FaultInterval(started.f, started.time, end_of_history, started.value))
    return sorted(intervals, key=lambda interval: interval.start)


def outcome_counts(ops: Sequence[TimedOp]) -> dict[str, Any]:
    """Operations per outcome; "fail" excludes cas-false (a definite answer, not a failure)."""
    by_outcome = Counter(op.outcome for op in ops)
    by_function: dict[str, dict[str, int]] = {}
    for op in ops:
        counts = by_function.setdefault(op.f, {"ok": 0, "cas_false": 0, "fail": 0, "info": 0, "open": 0})
        counts["cas_false" if op.outcome == CAS_FALSE else op.type] += 1
    return {"operations": len(ops), "ok": by_outcome["ok"], "cas_false": by_outcome[CAS_FALSE],
            "fail": by_outcome["fail"], "info": by_outcome["info"], "open": by_outcome["open"],
            "by_function": by_function}


def register_check_coverage(ops: Sequence[TimedOp]) -> dict[str, int]:
    """How many recorded operations the register checker takes, and why the rest are left out.

    The rules of `jepsen_style.history.history_to_operations`: an ok operation and
    a cas-false are checked; a write or cas with unknown outcome (info, or open at
    the end) is checked as "may have happened"; a failed read or write certainly
    did nothing, and a read without an answer constrains nothing, so both are
    left out.
    """
    failed = sum(1 for op in ops if op.outcome == "fail")
    unanswered_reads = sum(1 for op in ops if op.f == "read" and op.type in ("info", "open"))
    return {"recorded": len(ops), "checked": len(ops) - failed - unanswered_reads,
            "left_out_failed": failed, "left_out_unanswered_reads": unanswered_reads}


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def latency_summary_ms(ops: Sequence[TimedOp]) -> dict[str, float | None]:
    """Latency of operations with a known outcome (ok, cas-false, fail; unknown ones ended by timeout)."""
    values = [op.latency * 1000 for op in ops if op.type in ("ok", "fail")]

    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 1)

    return {"p50": rounded(percentile(values, 0.5)), "p99": rounded(percentile(values, 0.99)),
            "max": rounded(max(values, default=None))}


def throughput(ops: Sequence[TimedOp], bucket_s: float = 1.0) -> dict[str, list[tuple[float, int]]]:
    """Completions per bucket, per outcome: {outcome: [(bucket start, count)]}."""
    if not ops:
        return {}
    last = max(op.end for op in ops)
    buckets = int(last // bucket_s) + 1
    series: dict[str, list[int]] = {}
    for op in ops:
        if op.type == "open":
            continue
        series.setdefault(op.outcome, [0] * buckets)[int(op.end // bucket_s)] += 1
    return {kind: [(i * bucket_s, count) for i, count in enumerate(counts)]
            for kind, counts in sorted(series.items())}
