"""Set invariants: acknowledged adds survive, nothing appears from nowhere.

Workload per set (the history key, may be null): `add` (value: the element)
and a final `read` (ok value: the list of elements). Every add acknowledged
before the final read started must be in it; an element nobody tried to add,
or whose every add failed, must not be; adds with unknown outcome (or
overlapping the final read) may go either way.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any, Iterable

from jepsen_style.checker.invariants import InvariantResult, final_reads, settled_before
from jepsen_style.history import Call, HistoryEvent, HistoryFormatError, freeze, pair_calls

SET_FUNCTIONS = frozenset({"add", "read"})


def check_set(events: Iterable[HistoryEvent]) -> InvariantResult:
    """Check the set workload's history; raises `HistoryFormatError` for malformed events."""
    by_key: dict[Any, list[Call]] = defaultdict(list)
    for call in pair_calls(events):
        where = f"process {call.process} {call.f} at time {call.start:g}"
        if call.f not in SET_FUNCTIONS:
            raise HistoryFormatError(f"{where}: unknown function for the set workload (expected add or read)")
        if call.f == "read" and call.outcome == "ok" and not isinstance(call.result, list):
            raise HistoryFormatError(f"{where}: a read must return a list of elements, got {call.result!r}")
        by_key[call.key].append(call)
    anomalies: list[str] = []
    for key in sorted(by_key, key=repr):
        anomalies.extend(_check_one_set(key, by_key[key]))
    return InvariantResult(anomalies, checked=len(by_key))


def _check_one_set(key: Any, calls: list[Call]) -> list[str]:
    name = "the set" if key is None else f"set {key}"
    final = final_reads(calls).get(key)
    if final is None:
        return [f"{name}: no successful read, so its contents cannot be checked"]
    seen = Counter(freeze(element) for element in final.result)
    must_have: set[Any] = set()
    may_have: set[Any] = set()
    for call in calls:
        if call.f != "add" or call.outcome == "fail":
            continue
        element = freeze(call.argument)
        if call.outcome == "ok" and settled_before(call, final):
            must_have.add(element)
        elif call.start < final.end:
            may_have.add(element)
    attempted_in_vain = {freeze(c.argument) for c in calls if c.f == "add" and c.outcome == "fail"}
    anomalies = []
    for element in sorted(must_have - seen.keys(), key=repr):
        anomalies.append(f"{name}: element {element!r} was acknowledged but is missing from the final read (lost)")
    for element in sorted(seen.keys() - must_have - may_have, key=repr):
        reason = "whose add failed" if element in attempted_in_vain else "that nobody added"
        anomalies.append(f"{name}: the final read contains {element!r} {reason}")
    for element, count in sorted(seen.items(), key=lambda item: repr(item[0])):
        if count > 1:
            anomalies.append(f"{name}: the final read lists {element!r} {count} times")
    return anomalies
