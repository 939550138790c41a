"""`report.html`: one page a person can read, pictures beside it as PNGs."""
from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Sequence

from jepsen_style.history import HistoryEvent
from jepsen_style.report.stats import fault_intervals, timed_ops
from jepsen_style.workloads.base import CheckOutcome

VERDICT_TEXT = {
    "valid": ("VALID", "#2e7d32", "No anomaly found: the history is consistent with the checked model."),
    "invalid": ("INVALID", "#c62828", "The checker found anomalies (listed below)."),
    "unknown": ("UNKNOWN", "#ef8f00", "The checker ran out of time; nothing was proven either way."),
    "harness-error": ("HARNESS FAILURE", "#6a1b9a",
                      "The harness could not complete the run; nothing was proven."),
}

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; max-width: 1200px; color: #222; }
h1 { margin-bottom: 0.2em; } .verdict { font-size: 1.6em; font-weight: bold; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; font-size: 0.9em; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
img { max-width: 100%; border: 1px solid #ddd; margin-bottom: 1em; }
.anomaly { color: #c62828; } .note { color: #555; font-size: 0.9em; max-width: 60em; }
"""

# What "N of M operations" in an anomaly counts.
LONGEST_ORDER_NOTE = (
    "In \"the longest linearizable order found has N of M operations\", M counts the checked "
    "operations on that key and N the most of them the checker could put in one order that respects "
    "real time and gives every operation its recorded answer; no order takes the rest, so some "
    "answer (typically a stale read) is impossible in a linearizable store."
)


def write_report(out: Path, results: dict[str, Any], events: Sequence[HistoryEvent],
                 check: CheckOutcome | None) -> Path:
    from jepsen_style.report.charts import latency_png, throughput_png, timeline_png  # slow import

    ops = timed_ops(events)
    end = max((e.time for e in events), default=0.0)
    faults = fault_intervals(events, end)
    pictures = []
    if ops:
        for name, draw in (("timeline.png", timeline_png), ("latency.png", latency_png),
                           ("throughput.png", throughput_png)):
            draw(out / name, ops, faults)
            pictures.append(name)
    page = render_html(results, pictures, has_failure_svg=bool(check and check.failure_svg),
                       logs=sorted(p.name for p in (out / "logs").glob("*.log")))
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


def _e(value: Any) -> str:
    return html.escape(str(value))


def _table(rows: list[tuple[str, Any]]) -> str:
    return "<table>" + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows) + "</table>"


def _ran_text(nemesis: dict[str, Any]) -> str:
    ran = nemesis.get("ran")
    if ran is None:  # results written before reports said which ran
        return "see the faults below"
    return ", ".join(f"{kind} ({count}x)" for kind, count in ran.items()) or "none"


def coverage_text(coverage: dict[str, int]) -> str:
    """What "Checked: N operations" counts, in words."""
    return (
        f"The checker took {coverage['checked']} of the {coverage['recorded']} recorded operations: "
        "the ok ones, every cas whose compare was false (a definite answer) and every write or cas "
        "with an unknown outcome (it may or may not have happened; the checker tries both). It left "
        f"out {coverage['left_out_failed']} failed reads and writes (they certainly did nothing) and "
        f"{coverage['left_out_unanswered_reads']} reads without an answer (they constrain nothing)."
    )


def _fault_target(detail: Any) -> str:
    """"n1 | n2 n3" for a partition, the node list otherwise."""
    if isinstance(detail, dict):
        if detail.get("partition"):
            return str(detail["partition"])
        if detail.get("nodes"):
            return " ".join(map(str, detail["nodes"]))
        return "all links"
    return str(detail)


def render_html(results: dict[str, Any], pictures: list[str], has_failure_svg: bool,
                logs: list[str]) -> str:
    config = results["config"]
    label, color, meaning = VERDICT_TEXT[results["verdict"]]
    counts = results["counts"]
    latency = results["latency_ms"]
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>raftkv jepsen run: {_e(label)}</title><style>{STYLE}</style></head><body>",
        f"<h1>raftkv {_e(config['workload'])} run</h1>",
        f"<p class='verdict' style='color:{color}'>{_e(label)} (exit {results['exit_code']})</p>",
        f"<p>{_e(meaning)}" + (f" Checked: {_e(results['checked'])}." if results.get("checked") else "")
        + "</p>",
    ]
    if results.get("check_coverage"):
        parts.append(f"<p class='note'>{_e(coverage_text(results['check_coverage']))}</p>")
    if results["harness_errors"]:
        parts.append("<h2>Harness errors</h2><ul>"
                     + "".join(f"<li class='anomaly'>{_e(e)}</li>" for e in results["harness_errors"])
                     + "</ul>")
    if results["anomalies"]:
        parts.append("<h2>Anomalies</h2><ul>"
                     + "".join(f"<li class='anomaly'>{_e(a)}</li>" for a in results["anomalies"])
                     + "</ul>")
    if results.get("failure") or has_failure_svg:
        parts.append("<h2>Smallest failing part of the history</h2>"
                     "<p>Bars are operations from invocation to completion; the checker could "
                     "linearize the numbered ones in that order and no order placed the next.</p>")
        if has_failure_svg:
            parts.append("<img src='failure.svg' alt='failing sub-history'>")
        if results.get("failure"):
            parts.append(f"<pre>{_e(results['failure'])}</pre>")
        parts.append(f"<p class='note'>{_e(LONGEST_ORDER_NOTE)}</p>")
    parts.append("<h2>Run</h2>" + _table([
        ("workload", config["workload"]),
        ("nemeses requested", ", ".join(config["nemeses"]) or "none"),
        ("nemeses that ran", _ran_text(results["nemesis"])),
        ("engine", config["engine"]), ("nodes", config["nodes"]), ("time (s)", config["time_s"]),
        ("concurrency", config["concurrency"]), ("rate (ops/s)", config["rate"]),
        ("seed", config["seed"]),
        ("serializable reads (unsafe)", config.get("unsafe_serializable_reads", False)),
    ]))
    parts.append("<h2>Operations</h2>" + _table([
        ("operations", counts["operations"]), ("ok (happened)", counts["ok"]),
        ("cas: compare false (a definite answer: the value differed, nothing written)",
         counts.get("cas_false", 0)),
        ("fail (certainly did not happen)", counts["fail"]),
        ("info (outcome unknown, e.g. timeout)", counts["info"]),
        ("open (no completion recorded)", counts["open"]),
        ("latency p50 / p99 / max (ms)", f"{latency['p50']} / {latency['p99']} / {latency['max']}"),
    ]))
    by_function = counts["by_function"]
    if by_function:
        parts.append("<table><tr><th>function</th><th>ok</th><th>cas: compare false</th><th>fail</th>"
                     "<th>info</th><th>open</th></tr>"
                     + "".join(f"<tr><td>{_e(f)}</td><td>{c['ok']}</td><td>{c.get('cas_false', 0)}</td>"
                               f"<td>{c['fail']}</td>"
                               f"<td>{c['info']}</td><td>{c['open']}</td></tr>"
                               for f, c in sorted(by_function.items()))
                     + "</table>")
    intervals = results["nemesis"]["intervals"]
    parts.append(f"<h2>Faults ({len(intervals)})</h2>")
    by_reason: dict[str, list[str]] = {}
    for skipped in results["nemesis"].get("not_run", []):
        by_reason.setdefault(skipped["reason"], []).append(skipped["kind"])
    if by_reason:
        parts.append("<p>Requested but not run:</p><ul>"
                     + "".join(f"<li><b>{_e(', '.join(kinds))}</b>: {_e(reason)}</li>"
                               for reason, kinds in by_reason.items())
                     + "</ul>")
    if intervals:
        parts.append("<table><tr><th>fault</th><th>from (s)</th><th>to (s)</th><th>target</th></tr>"
                     + "".join(f"<tr><td>{_e(i['kind'])}</td><td>{i['start']}</td><td>{i['end']}</td>"
                               f"<td>{_e(_fault_target(i['detail']))}</td></tr>" for i in intervals)
                     + "</table>")
    for name in pictures:
        parts.append(f"<img src='{_e(name)}' alt='{_e(name)}'>")
    parts.append("<h2>Files</h2><ul><li><a href='history.jsonl'>history.jsonl</a> (every event)</li>"
                 "<li><a href='results.json'>results.json</a></li>"
                 + "".join(f"<li><a href='logs/{_e(n)}'>logs/{_e(n)}</a></li>" for n in logs)
                 + "</ul></body></html>\n")
    return "\n".join(parts)
