"""The report's pictures (matplotlib, written as PNG files)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from jepsen_style.report.stats import CAS_FALSE, FaultInterval, TimedOp, throughput  # noqa: E402

# A cas whose compare was false is a correct, definite answer: blue, not the
# red of operations that failed.
OUTCOME_COLORS = {"ok": "#2e7d32", CAS_FALSE: "#1e88e5", "fail": "#c62828", "info": "#ef8f00",
                  "open": "#7b1fa2"}
OUTCOME_LABELS = {"ok": "ok", CAS_FALSE: "cas: compare false", "fail": "fail", "info": "info (unknown)",
                  "open": "open"}
# One light colour per nemesis kind (there are ten).
FAULT_COLORS = ["#90caf9", "#f48fb1", "#ce93d8", "#a5d6a7", "#ffcc80", "#b0bec5",
                "#80deea", "#fff59d", "#bcaaa4", "#ef9a9a"]
WIDTH_IN, HEIGHT_IN, DPI = 11.0, 3.6, 100


def _shade_faults(axes: Axes, faults: Sequence[FaultInterval]) -> list[Patch]:
    colors: dict[str, str] = {}
    for fault in faults:
        color = colors.setdefault(fault.kind, FAULT_COLORS[len(colors) % len(FAULT_COLORS)])
        axes.axvspan(fault.start, fault.end, color=color, alpha=0.35, linewidth=0)
    return [Patch(color=color, alpha=0.35, label=kind) for kind, color in colors.items()]


def _outcome_handles(ops: Sequence[TimedOp]) -> list[Patch]:
    present = {op.outcome for op in ops}
    return [Patch(color=color, label=OUTCOME_LABELS[kind]) for kind, color in OUTCOME_COLORS.items()
            if kind in present]


def _save(figure: plt.Figure, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    plt.close(figure)


def timeline_png(path: Path, ops: Sequence[TimedOp], faults: Sequence[FaultInterval]) -> None:
    """One row per process, one bar per operation from invoke to completion."""
    processes = sorted({op.process for op in ops})
    row = {process: index for index, process in enumerate(processes)}
    height = max(HEIGHT_IN, min(12.0, 1.0 + 0.12 * len(processes)))
    figure, axes = plt.subplots(figsize=(WIDTH_IN, height))
    fault_handles = _shade_faults(axes, faults)
    segments = [[(op.start, row[op.process]), (max(op.end, op.start + 0.005), row[op.process])]
                for op in ops]
    colors = [OUTCOME_COLORS[op.outcome] for op in ops]
    axes.add_collection(LineCollection(segments, colors=colors, linewidths=4))
    axes.autoscale()
    axes.set_yticks(range(len(processes)))
    axes.set_yticklabels([str(p) for p in processes], fontsize=7)
    axes.set_ylim(-1, len(processes))
    axes.set_xlabel("time (s)")
    axes.set_ylabel("process")
    axes.set_title("Operations per process (invoke to completion)")
    axes.legend(handles=_outcome_handles(ops) + fault_handles, loc="upper left",
                bbox_to_anchor=(1.0, 1.0), fontsize=8)
    _save(figure, path)


def latency_png(path: Path, ops: Sequence[TimedOp], faults: Sequence[FaultInterval]) -> None:
    figure, axes = plt.subplots(figsize=(WIDTH_IN, HEIGHT_IN))
    fault_handles = _shade_faults(axes, faults)
    for kind, color in OUTCOME_COLORS.items():
        chosen = [op for op in ops if op.outcome == kind and kind != "open"]
        if chosen:
            axes.scatter([op.start for op in chosen], [max(op.latency * 1000, 0.1) for op in chosen],
                         s=6, color=color, label=OUTCOME_LABELS[kind])
    axes.set_yscale("log")
    axes.set_xlabel("time (s)")
    axes.set_ylabel("latency (ms)")
    axes.set_title("Latency by invocation time (shaded: faults)")
    handles = _outcome_handles([op for op in ops if op.type != "open"]) + fault_handles
    axes.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    _save(figure, path)


def throughput_png(path: Path, ops: Sequence[TimedOp], faults: Sequence[FaultInterval]) -> None:
    figure, axes = plt.subplots(figsize=(WIDTH_IN, HEIGHT_IN))
    fault_handles = _shade_faults(axes, faults)
    for kind, points in throughput(ops).items():
        axes.step([t for t, _ in points], [c for _, c in points], where="post",
                  color=OUTCOME_COLORS[kind], label=OUTCOME_LABELS[kind])
    axes.set_xlabel("time (s)")
    axes.set_ylabel("completions per second")
    axes.set_title("Throughput (shaded: faults)")
    axes.legend(handles=_outcome_handles([op for op in ops if op.type != "open"]) + fault_handles,
                loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    _save(figure, path)
