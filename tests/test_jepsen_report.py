"""What a run's report says: which nemeses ran, compare-false cas apart from
failures, and what "checked N operations" counts. Histories are the example
histories shipped in examples/histories/ (recorded by real runs)."""
from __future__ import annotations

from pathlib import Path

from jepsen_style.history import history_to_operations, parse_history_lines, read_history
from jepsen_style.report.html import render_html
from jepsen_style.report.results import build_results
from jepsen_style.report.stats import CAS_FALSE, outcome_counts, register_check_coverage, timed_ops
from jepsen_style.workloads import make_workload

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "histories"

CAS_EVENTS = [
    '{"process":0,"type":"invoke","f":"cas","key":"k","value":[1,2],"time":0.1}',
    '{"error":"compare failed","process":0,"type":"fail","f":"cas","key":"k","value":[1,2],"time":0.2}',
    '{"process":1,"type":"invoke","f":"write","key":"k","value":3,"time":0.3}',
    '{"error":"no leader","process":1,"type":"fail","f":"write","key":"k","value":3,"time":0.4}',
    '{"process":2,"type":"invoke","f":"read","key":"k","value":null,"time":0.5}',
    '{"error":"timeout","process":2,"type":"info","f":"read","key":"k","value":null,"time":0.6}',
    '{"process":3,"type":"invoke","f":"cas","key":"k","value":[3,4],"time":0.7}',
    '{"error":"timeout","process":3,"type":"info","f":"cas","key":"k","value":[3,4],"time":0.8}',
]


def config(nemeses: list[str], time_s: float = 10.0) -> dict[str, object]:
    return {"workload": "register", "nemeses": nemeses, "engine": "native", "nodes": 3, "time_s": time_s,
            "concurrency": 2, "rate": 10.0, "seed": 1, "quiet_s": (2.0, 4.0), "fault_s": (2.0, 4.0)}


def test_a_cas_whose_compare_was_false_is_counted_apart_from_failures() -> None:
    ops = timed_ops(parse_history_lines(CAS_EVENTS, "t"))
    assert [op.outcome for op in ops] == [CAS_FALSE, "fail", "info", "info"]
    counts = outcome_counts(ops)
    assert (counts["cas_false"], counts["fail"], counts["info"]) == (1, 1, 2)
    assert counts["by_function"]["cas"] == {"ok": 0, "cas_false": 1, "fail": 0, "info": 1, "open": 0}


def test_compare_false_has_its_own_colour_in_the_charts() -> None:
    from jepsen_style.report.charts import OUTCOME_COLORS

    assert OUTCOME_COLORS[CAS_FALSE] not in (OUTCOME_COLORS["fail"], OUTCOME_COLORS["info"])


def test_check_coverage_counts_what_the_register_checker_takes() -> None:
    ops = timed_ops(parse_history_lines(CAS_EVENTS, "t"))
    # the cas-false and the unknown cas are checked; the failed write and the unanswered read are not
    assert register_check_coverage(ops) == {"recorded": 4, "checked": 2, "left_out_failed": 1,
                                            "left_out_unanswered_reads": 1}
    for name in ("register-valid.jsonl", "register-stale-reads.jsonl"):
        events = read_history(EXAMPLES / name)
        coverage = register_check_coverage(timed_ops(events))
        assert coverage["checked"] == len(history_to_operations(events)), name
        assert coverage["checked"] < coverage["recorded"], name
        scope = make_workload("register").check(events).scope
        assert scope.endswith(f"{coverage['checked']} operations"), (name, scope)


def test_the_report_says_which_requested_nemeses_ran_and_why_the_others_did_not() -> None:
    events = read_history(EXAMPLES / "register-stale-reads.jsonl")  # two partitions
    requested = ["kill", "pause", "partition"]
    results = build_results(config=config(requested, 6.0), events=events, check=None, harness_errors=[],
                            exit_code=2, faults=2, phases={}, planned=["partition", "partition"])
    nemesis = results["nemesis"]
    assert nemesis["requested"] == requested
    assert nemesis["ran"] == {"partition": 2}
    assert [n["kind"] for n in nemesis["not_run"]] == ["kill", "pause"]
    assert nemesis["not_run"][0]["reason"].startswith("no time left for it: the 6 s run had room for 2 faults")

    stopped = build_results(config=config(requested), events=events, check=None, harness_errors=[],
                            exit_code=2, faults=2, phases={}, planned=["partition", "kill", "partition"])
    assert stopped["nemesis"]["not_run"] == [
        {"kind": "kill", "reason": "scheduled, but the run stopped before its turn"},
        {"kind": "pause", "reason": stopped["nemesis"]["not_run"][1]["reason"]},
    ]

    page = render_html(results, [], has_failure_svg=False, logs=[])
    assert "<tr><th>nemeses that ran</th><td>partition (2x)</td></tr>" in page
    assert "Requested but not run" in page and "<b>kill, pause</b>: no time left for it" in page


def test_the_report_explains_the_checked_count_and_the_longest_order() -> None:
    events = read_history(EXAMPLES / "register-stale-reads.jsonl")
    check = make_workload("register").check(events)
    assert check.verdict == "invalid"
    results = build_results(config=config(["partition"], 15.0), events=events, check=check,
                            harness_errors=[], exit_code=1, faults=2, phases={}, planned=["partition"] * 2)
    coverage = results["check_coverage"]
    page = render_html(results, [], has_failure_svg=True, logs=[])
    assert f"The checker took {coverage['checked']} of the {coverage['recorded']} recorded operations" in page
    assert "the longest linearizable order found has N of M operations" in page.replace("&quot;", '"')
    assert "cas: compare false" in page
