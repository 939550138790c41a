"""`results.json`: the machine-readable outcome of a run."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from jepsen_style.history import HistoryEvent
from jepsen_style.report.stats import fault_intervals, latency_summary_ms, outcome_counts, timed_ops
from jepsen_style.workloads.base import CheckOutcome


def build_results(*, config: dict[str, Any], events: list[HistoryEvent], check: CheckOutcome | None,
                  harness_errors: list[str], exit_code: int, faults: int,
                  phases: dict[str, float]) -> dict[str, Any]:
    """`valid` is true, false, or null when nothing could be decided."""
    ops = timed_ops(events)
    end = max((e.time for e in events), default=0.0)
    if check is not None and check.verdict == "invalid":
        verdict = "invalid"
    elif harness_errors or check is None:
        verdict = "harness-error"
    else:
        verdict = check.verdict
    return {
        "valid": {"valid": True, "invalid": False}.get(verdict),
        "verdict": verdict,
        "exit_code": exit_code,
        "checked": check.scope if check else None,
        "anomalies": list(check.anomalies) if check else [],
        "failure": check.failure_text if check else None,
        "harness_errors": harness_errors,
        "counts": outcome_counts(ops),
        "latency_ms": latency_summary_ms(ops),
        "nemesis": {
            "faults": faults,
            "intervals": [{"kind": i.kind, "start": round(i.start, 3), "end": round(i.end, 3),
                           "detail": i.detail} for i in fault_intervals(events, end)],
        },
        "phases": {name: round(moment, 3) for name, moment in phases.items()},
        "config": config,
    }


def write_results(path: Path, results: dict[str, Any]) -> None:
    path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2) + b"\n")
