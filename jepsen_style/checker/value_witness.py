"""A quick, complete-proof check for register-like histories: an operation
that needs a value which was certainly overwritten before it began.

For an operation R that needs the state to equal v (a read returning v, a
successful cas from v): if every operation P that can set v is followed, in
real time, by an operation W that surely sets another value (W starts after P
returns and returns before R starts), and likewise the initial state (if it is
v) is overwritten before R starts, then no linearization gives R the value v.
That is the classic stale read, and a read of a value nobody wrote. Finding
it needs no search, and the operations involved explain the violation.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Any

from jepsen_style.checker.models import NOT_OBSERVING, ValueFlow
from jepsen_style.checker.operation import Operation


@dataclass(frozen=True, slots=True)
class ValueWitness:
    """Indices into the checked operations.

    `needing` needs `value`; each (producer, overwriter) pair shows a way
    `value` could be set and the operation that surely replaced it before
    `needing` began; `initial_overwriter` does that for the initial state
    (None when the initial state is not `value`).
    """

    needing: int
    value: Any
    replaced: list[tuple[int, int]]
    initial_overwriter: int | None


def find_value_witness(ops: list[Operation], flow: ValueFlow, initial_state: Any) -> ValueWitness | None:
    """The earliest-returning operation whose needed value is certainly gone, or None."""
    produced = [flow.produced(op.input) for op in ops]
    producers: dict[Any, list[int]] = {}
    for i, value in enumerate(produced):
        if value is not NOT_OBSERVING:
            try:
                producers.setdefault(value, []).append(i)
            except TypeError:  # unhashable value: give up on the quick check
                return None
    # Operations that surely set the state, sorted by call time. For each
    # position, the earliest-returning one called at or after it, and the
    # earliest-returning one among those setting a different value than it.
    overwriters = sorted(
        (i for i, op in enumerate(ops) if op.outcome_known and flow.overwrites(op.input, op.output)),
        key=lambda i: ops[i].call,
    )
    calls = [ops[i].call for i in overwriters]
    first = [-1] * (len(overwriters) + 1)
    second = [-1] * (len(overwriters) + 1)
    for position in range(len(overwriters) - 1, -1, -1):
        i = overwriters[position]
        best, other = first[position + 1], second[position + 1]
        if best < 0 or ops[i].ret < ops[best].ret:
            if best >= 0 and produced[best] != produced[i]:
                other = best
            best = i
        elif produced[i] != produced[best] and (other < 0 or ops[i].ret < ops[other].ret):
            other = i
        first[position], second[position] = best, other

    def overwriter_between(after: float, before: float, value: Any) -> int | None:
        """An operation setting a value other than `value` that starts after
        `after` and returns before `before`."""
        position = bisect.bisect_right(calls, after)
        i = first[position]
        if i >= 0 and produced[i] == value:
            i = second[position]
        if i >= 0 and ops[i].ret < before:
            return i
        return None

    needing_order = sorted(range(len(ops)), key=lambda i: ops[i].ret)
    for r in needing_order:
        op = ops[r]
        if not op.outcome_known:
            continue
        value = flow.required(op.input, op.output)
        if value is NOT_OBSERVING:
            continue
        replaced: list[tuple[int, int]] = []
        for p in producers.get(value, []):
            if p == r:
                continue
            w = overwriter_between(ops[p].ret, op.call, value)
            if w is None:
                break
            replaced.append((p, w))
        else:
            initial_overwriter = None
            if initial_state == value:
                initial_overwriter = overwriter_between(-math.inf, op.call, value)
                if initial_overwriter is None:
                    continue
            return ValueWitness(r, value, replaced, initial_overwriter)
    return None
