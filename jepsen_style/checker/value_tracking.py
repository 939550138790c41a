"""Bookkeeping that lets the search exploit a model's `ValueFlow`."""
from __future__ import annotations

import math
from typing import Any

from jepsen_style.checker.models import NOT_OBSERVING, UNOBSERVED, ValueFlow
from jepsen_style.checker.operation import Operation


class ValueTracker:
    """Bookkeeping for models with a `ValueFlow` (register-like models).

    Tracks, for the operations not yet linearized, which values they compare
    the state with (observers), which values known operations need the state
    to equal (needs) and which values they could set (producers). With that:
    states no remaining operation observes are merged into UNOBSERVED, and a
    configuration where a needed value is neither the state nor producible is
    a dead end; so is one where it is the state but an operation that surely
    overwrites it must come first (it returned before the needing operation
    was called).
    """

    def __init__(self, flow: ValueFlow, ops: list[Operation], outputs: list[Any]) -> None:
        self.flow = flow
        inputs = [op.input for op in ops]
        count = len(inputs)
        self.calls = [op.call for op in ops]
        self.observes = [flow.observed(inputs[i], outputs[i]) for i in range(count)]
        self.needs = [flow.required(inputs[i], outputs[i]) for i in range(count)]
        self.produces = [flow.produced(inputs[i]) for i in range(count)]
        self.inputs = inputs
        self.observers: dict[Any, int] = {}
        self.need_count: dict[Any, int] = {}
        self.producers: dict[Any, int] = {}
        for values, counts in ((self.observes, self.observers), (self.needs, self.need_count),
                               (self.produces, self.producers)):
            for value in values:
                if value is not NOT_OBSERVING:
                    counts[value] = counts.get(value, 0) + 1
        self.starved: dict[Any, None] = {
            value: None for value in self.need_count if not self.producers.get(value)
        }
        # Needing operations per value, latest call first.
        self.needed_by: dict[Any, list[int]] = {}
        for i in sorted(range(count), key=lambda i: -self.calls[i]):
            if self.needs[i] is not NOT_OBSERVING:
                self.needed_by.setdefault(self.needs[i], []).append(i)
        self.done = [False] * count
        # Pending known operations that surely set the state, in return order,
        # as a dancing-links list (0 = head, len + 1 = tail).
        overwriters = sorted((i for i in range(count) if ops[i].outcome_known
                              and flow.overwrites(inputs[i], outputs[i])), key=lambda i: ops[i].ret)
        self.overwriter_position = [0] * count
        self.overwriter_ret = [0.0] + [ops[i].ret for i in overwriters] + [math.inf]
        size = len(overwriters) + 2
        self.over_next = list(range(1, size)) + [size - 1]
        self.over_prev = [0] + list(range(0, size - 1))
        for position, i in enumerate(overwriters, start=1):
            self.overwriter_position[i] = position

    def _is_observed(self, value: Any) -> bool:
        return bool(self.observers.get(value))

    def merge(self, state: Any) -> Any:
        return state if self.observers.get(state) else UNOBSERVED

    def merge_after(self, i: int, new_state: Any) -> Any:
        """Canonical state after op i, counting op i as no longer observing."""
        watched = self.observes[i]
        if watched is not NOT_OBSERVING:
            self.observers[watched] -= 1
        return new_state if self.observers.get(new_state) else UNOBSERVED

    def unmerge(self, i: int) -> None:
        """Undo `merge_after` for an operation that was not linearized after all."""
        watched = self.observes[i]
        if watched is not NOT_OBSERVING:
            self.observers[watched] += 1

    def unknown_effect(self, i: int) -> Any:
        return self.flow.unknown_signature(self.inputs[i], self._is_observed)

    def linearize(self, i: int) -> None:
        """Op i (already counted out of observers by `merge_after`) is placed."""
        self.done[i] = True
        position = self.overwriter_position[i]
        if position:
            before, after = self.over_prev[position], self.over_next[position]
            self.over_next[before] = after
            self.over_prev[after] = before
        needed = self.needs[i]
        if needed is not NOT_OBSERVING:
            left = self.need_count[needed] - 1
            self.need_count[needed] = left
            if left == 0:
                self.starved.pop(needed, None)
        produced = self.produces[i]
        if produced is not NOT_OBSERVING:
            left = self.producers[produced] - 1
            self.producers[produced] = left
            if left == 0 and self.need_count.get(produced):
                self.starved[produced] = None

    def unlinearize(self, i: int) -> None:
        self.done[i] = False
        position = self.overwriter_position[i]
        if position:
            self.over_next[self.over_prev[position]] = position
            self.over_prev[self.over_next[position]] = position
        self.unmerge(i)
        produced = self.produces[i]
        if produced is not NOT_OBSERVING:
            self.producers[produced] += 1
            self.starved.pop(produced, None)
        needed = self.needs[i]
        if needed is not NOT_OBSERVING:
            self.need_count[needed] += 1
            if not self.producers.get(needed):
                self.starved[needed] = None

    def starved_operation(self, state: Any) -> int | None:
        """A remaining operation whose needed value can no longer be produced
        and is not the state, or will not be when it can be placed; or None."""
        for value in self.starved:
            for i in self.needed_by[value]:
                if not self.done[i]:
                    # The pending one called last: the first to be cut off.
                    if value != state:
                        return i
                    first_overwrite = self.overwriter_ret[self.over_next[0]]
                    if self.calls[i] > first_overwrite:
                        return i
                    break
        return None
