"""Linearizability checking: does a history of operations have a legal
sequential order that respects real time?

`check` splits the history into independent parts with the model's
`partition`, searches each (see `search.py`), and describes the first
violation found so it can be drawn (`render.py`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from jepsen_style.checker.models import Model
from jepsen_style.checker.operation import Operation
from jepsen_style.checker.search import Deadline, PartOutcome, Verdict, search_part

__all__ = ["check", "check_partition", "CheckResult", "Failure", "Operation", "Verdict"]

# Upper bound on the operations kept in `Failure.excerpt` so a picture stays readable.
_EXCERPT_LIMIT = 20


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a partition is not linearizable.

    `linearized` is the longest sequence of operations the search could
    linearize, in linearization order; after it, `stuck` could not be placed,
    whatever was tried. When the violation is proven without a search (a
    value certainly overwritten before `stuck` began), `linearized` is empty
    and `excerpt` holds the operations of that proof. `reason` says which.
    `excerpt` is a small time-ordered selection for drawing.
    """

    partition_index: int
    partition: list[Operation]
    linearized: list[Operation]
    stuck: Operation | None
    excerpt: list[Operation]
    # Why `stuck` could not be placed, in plain words.
    reason: str = ""


@dataclass(frozen=True, slots=True)
class CheckResult:
    verdict: Verdict
    partitions: int
    failure: Failure | None = None
    # Partitions fully decided before the verdict was reached (for reports).
    partitions_checked: int = 0
    detail: str = field(default="")

    @property
    def linearizable(self) -> bool:
        return self.verdict == "linearizable"


def check(ops: list[Operation], model: Model, timeout: float | None = None) -> CheckResult:
    """Decide whether `ops` is linearizable with respect to `model`.

    `timeout` (seconds, for the whole history) turns a search that runs too
    long into verdict "unknown"; it never produces a wrong verdict.
    """
    if timeout is not None and timeout < 0:
        raise ValueError(f"timeout must be >= 0 seconds, got {timeout}")
    deadline = Deadline(timeout)
    partitions = [p for p in model.partition(list(ops)) if p]
    # Small parts first: a violation in a small part is found (and drawn) cheaply.
    order = sorted(range(len(partitions)), key=lambda i: len(partitions[i]))
    timed_out = False
    checked = 0
    for index in order:
        part = partitions[index]
        outcome = search_part(part, model, deadline)
        if outcome.verdict == "not-linearizable":
            return CheckResult(
                verdict="not-linearizable",
                partitions=len(partitions),
                failure=_describe_failure(index, part, outcome),
                partitions_checked=checked,
            )
        if outcome.verdict == "unknown":
            timed_out = True
            break
        checked += 1
    if timed_out:
        return CheckResult(
            verdict="unknown",
            partitions=len(partitions),
            partitions_checked=checked,
            detail=f"time limit of {timeout} s reached after {checked} of {len(partitions)} parts",
        )
    return CheckResult(verdict="linearizable", partitions=len(partitions), partitions_checked=checked)


def check_partition(ops: list[Operation], model: Model, timeout: float | None = None) -> CheckResult:
    """Check `ops` as one part, without splitting it with `model.partition`."""
    outcome = search_part(list(ops), model, Deadline(timeout))
    failure = _describe_failure(0, list(ops), outcome) if outcome.verdict == "not-linearizable" else None
    return CheckResult(verdict=outcome.verdict, partitions=1, failure=failure,
                       partitions_checked=int(outcome.verdict != "unknown"))


def _describe_failure(index: int, part: list[Operation], outcome: PartOutcome) -> Failure:
    linearized = [part[i] for i in outcome.linearized]
    stuck = part[outcome.stuck] if outcome.stuck is not None else None
    return Failure(
        partition_index=index,
        partition=part,
        linearized=linearized,
        stuck=stuck,
        excerpt=_excerpt(part, linearized, stuck, [part[i] for i in outcome.witnesses]),
        reason=outcome.reason,
    )


def _excerpt(part: list[Operation], linearized: list[Operation], stuck: Operation | None,
             witnesses: list[Operation]) -> list[Operation]:
    """Pick the operations a reader needs to see why `stuck` cannot be placed."""
    if witnesses and stuck is not None:
        chosen = {id(op): op for op in [stuck, *witnesses][:_EXCERPT_LIMIT]}
        return sorted(chosen.values(), key=lambda op: (op.call, op.ret))
    if stuck is None:
        chosen = list(linearized[-_EXCERPT_LIMIT:])
        return sorted(chosen, key=lambda op: (op.call, op.ret))
    # Operations that overlap the stuck one compete with it; the last few
    # linearized ones explain the state it saw.
    overlapping = [op for op in part if op is not stuck and op.call <= stuck.ret and op.ret >= stuck.call]
    # Completed operations first: unknown outcomes overlap everything after
    # their call and would crowd out the ones that matter.
    overlapping.sort(key=lambda op: (not op.outcome_known, abs(op.call - stuck.call)))
    recent = linearized[-6:]
    chosen_ids: dict[int, Operation] = {id(stuck): stuck}
    for op in overlapping:
        if len(chosen_ids) >= _EXCERPT_LIMIT - len(recent):
            break
        chosen_ids[id(op)] = op
    for op in recent:
        chosen_ids.setdefault(id(op), op)
    return sorted(chosen_ids.values(), key=lambda op: (op.call, op.ret))
