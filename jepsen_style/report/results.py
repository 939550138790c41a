"""`results.json`: the machine-readable outcome of a run."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from jepsen_style.history import HistoryEvent
from jepsen_style.report.stats import (
    FaultInterval,
    fault_intervals,
    latency_summary_ms,
    outcome_counts,
    register_check_coverage,
    timed_ops,
)
from jepsen_style.workloads.base import CheckOutcome


def build_results(*, config: dict[str, Any], events: list[HistoryEvent], check: CheckOutcome | None,
                  harness_errors: list[str], exit_code: int, faults: int,
                  phases: dict[str, float], planned: list[str] | None = None) -> dict[str, Any]:
    """`valid` is true, false, or null when nothing could be decided.

    `planned`: the fault kinds the schedule had room for, in order (None: unknown).
    """
    ops = timed_ops(events)
    end = max((e.time for e in events), default=0.0)
    intervals = fault_intervals(events, end)
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
        "check_coverage": register_check_coverage(ops) if config.get("workload") == "register" else None,
        "anomalies": list(check.anomalies) if check else [],
        "failure": check.failure_text if check else None,
        "harness_errors": harness_errors,
        "counts": outcome_counts(ops),
        "latency_ms": latency_summary_ms(ops),
        "nemesis": {
            "faults": faults,
            "intervals": [{"kind": i.kind, "start": round(i.start, 3), "end": round(i.end, 3),
                           "detail": i.detail} for i in intervals],
            **nemeses_run(config, intervals, planned),
        },
        "phases": {name: round(moment, 3) for name, moment in phases.items()},
        "config": config,
    }


def nemeses_run(config: dict[str, Any], intervals: list[FaultInterval],
                planned: list[str] | None) -> dict[str, Any]:
    """Which requested nemeses ran (how often) and which did not, with the reason."""
    requested = list(config.get("nemeses", []))
    ran = {kind: sum(1 for i in intervals if i.kind == kind) for kind in requested}
    not_run = []
    for kind in requested:
        if ran[kind]:
            continue
        if planned is not None and kind not in planned:
            low, high = config.get("fault_s", (2.0, 4.0))
            quiet_low, quiet_high = config.get("quiet_s", (2.0, 4.0))
            room = f"{len(planned)} fault" + ("" if len(planned) == 1 else "s")
            reason = (f"no time left for it: the {config.get('time_s', 0):g} s run had room for "
                      f"{room} ({low:g}-{high:g} s each, {quiet_low:g}-{quiet_high:g} s "
                      f"quiet between); a longer --time runs every kind")
        elif planned is not None:
            reason = "scheduled, but the run stopped before its turn"
        else:
            reason = "unknown"
        not_run.append({"kind": kind, "reason": reason})
    return {"requested": requested, "ran": {k: n for k, n in ran.items() if n}, "not_run": not_run}


def write_results(path: Path, results: dict[str, Any]) -> None:
    path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2) + b"\n")
