"""Watch invariants: every watcher saw exactly the committed history.

Workload (see `workloads/watch_workload.py`): `put` (argument: [key, value],
values unique) and `delete` (argument: [key, null]) under one prefix; a
final `read` of key HISTORY_KEY whose result is the committed history
``{"revision": R, "changes": [[revision, key, value or null], ...]}`` (read
revision by revision after the run; with ``"inconsistent": why`` when the
store's history had a revision with no single change); and a final `read` of each watcher's
key (WATCHER_KEY_PREFIX + n) whose result is ``{"events": [[revision, key,
value or null], ...], "reached": revision, "reconnects": n}``: every event
the watcher received, in the order received, across all its connections.

Each watcher watched the prefix from revision 1, so up to R its events must
be the committed changes, in order: an event missing is a gap, one received
twice a duplicate, one out of revision order a reorder, one not in the
history a phantom. Independently, the history must hold every acknowledged
put, and only values someone tried to write.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Iterable

from jepsen_style.checker.invariants import InvariantResult, final_reads
from jepsen_style.history import Call, HistoryEvent, HistoryFormatError, pair_calls

HISTORY_KEY = "history"
WATCHER_KEY_PREFIX = "watcher/"
WATCH_FUNCTIONS = frozenset({"put", "delete", "read"})
# Findings of one kind listed per watcher before "and N more".
MAX_LISTED = 5

Change = tuple[int, str, Any]  # revision, key, value (None: deleted)


def check_watch(events: Iterable[HistoryEvent]) -> InvariantResult:
    """Check the watch workload's history; raises `HistoryFormatError` for malformed events."""
    calls = pair_calls(events)
    for call in calls:
        if call.f not in WATCH_FUNCTIONS:
            raise HistoryFormatError(f"process {call.process} {call.f}: unknown function for the watch workload")
    finals = final_reads(calls)
    history_read = finals.get(HISTORY_KEY)
    if history_read is None:
        return InvariantResult(["no successful read of the committed history, so nothing can be checked"])
    revision, history = _history(history_read)
    if history_read.result.get("inconsistent"):
        # The store's history itself does not add up: one change per revision.
        return InvariantResult([f"history: {history_read.result['inconsistent']}"])
    watchers = {key: call for key, call in finals.items() if isinstance(key, str) and key.startswith(WATCHER_KEY_PREFIX)}
    anomalies = _check_writes(calls, history)
    if not watchers:
        anomalies.append("no watcher reported its events, so no stream was checked")
    for key in sorted(watchers):
        anomalies.extend(check_stream(key, _events(watchers[key]), _reached(watchers[key]), history, revision))
    return InvariantResult(anomalies, checked=len(watchers))


def check_stream(name: str, received: list[Change], reached: int, history: list[Change], revision: int) -> list[str]:
    """What is wrong with one watcher's events, compared with the committed
    ``history`` up to ``revision`` (the watcher started at revision 1)."""
    anomalies: list[str] = []
    if reached < revision:
        anomalies.append(f"{name}: stopped at revision {reached}, before the final revision {revision}")
    upto = min(reached, revision)
    expected = [change for change in history if change[0] <= upto]
    got = [change for change in received if change[0] <= upto]
    if got == expected:
        return anomalies
    counts = Counter(got)
    duplicates = [change for change, n in counts.items() if n > 1]
    reorders = [(got[i - 1], got[i]) for i in range(1, len(got)) if got[i][0] < got[i - 1][0]]
    in_history = set(expected)
    missing = [change for change in expected if change not in counts]
    phantoms = [change for change in counts if change not in in_history]
    anomalies += _listed(name, "gap: never received the committed change", missing)
    anomalies += _listed(name, "duplicate: received more than once", duplicates)
    anomalies += _listed(name, "phantom: received a change that is not in the committed history", phantoms)
    anomalies += [
        f"{name}: reorder: received {_show(later)} after {_show(earlier)}"
        for earlier, later in reorders[:MAX_LISTED]
    ]
    if len(reorders) > MAX_LISTED:
        anomalies.append(f"{name}: ... and {len(reorders) - MAX_LISTED} more reorders")
    if not (missing or duplicates or phantoms or reorders):
        anomalies.append(f"{name}: the events differ from the committed history in order within a revision")
    return anomalies


def _check_writes(calls: list[Call], history: list[Change]) -> list[str]:
    """The history holds each acknowledged put and only attempted values."""
    put_values = {value for _revision, _key, value in history if value is not None}
    attempted = {call.argument[1] for call in calls if call.f == "put" and call.outcome != "fail"}
    anomalies = []
    lost = [call.argument for call in calls if call.f == "put" and call.outcome == "ok"
            and call.argument[1] not in put_values]
    anomalies += [f"history: the acknowledged put of {value!r} to {key!r} is not in it (lost)" for key, value in lost]
    from_nowhere = sorted(put_values - attempted)
    anomalies += [f"history: holds {value!r}, which no put that could have succeeded wrote" for value in from_nowhere]
    return anomalies


def _history(call: Call) -> tuple[int, list[Change]]:
    result = call.result
    try:
        revision = int(result["revision"])
        changes = [(int(r), str(k), v) for r, k, v in result["changes"]]
    except (TypeError, KeyError, ValueError) as error:
        raise HistoryFormatError(f"the history read's result is malformed: {error}") from None
    return revision, changes


def _events(call: Call) -> list[Change]:
    try:
        return [(int(r), str(k), v) for r, k, v in call.result["events"]]
    except (TypeError, KeyError, ValueError) as error:
        raise HistoryFormatError(f"{call.key}'s read is malformed: {error}") from None


def _reached(call: Call) -> int:
    try:
        return int(call.result["reached"])
    except (TypeError, KeyError, ValueError) as error:
        raise HistoryFormatError(f"{call.key}'s read is malformed: {error}") from None


def _listed(name: str, what: str, changes: list[Change]) -> list[str]:
    ordered = sorted(changes, key=lambda change: (change[0], change[1], repr(change[2])))
    lines = [f"{name}: {what} {_show(change)}" for change in ordered[:MAX_LISTED]]
    if len(changes) > MAX_LISTED:
        lines.append(f"{name}: ... and {len(changes) - MAX_LISTED} more ({what.split(':')[0]})")
    return lines


def _show(change: Change) -> str:
    revision, key, value = change
    return f"revision {revision} ({'delete' if value is None else 'put'} {key}" + (
        ")" if value is None else f" = {value!r})"
    )
