"""Linearizability checking by Wing & Gong / Lowe search with memoization.

The history becomes a time-ordered doubly linked list of call and return
events. The search repeatedly tries to linearize an operation whose call is
still in the list before the first return event (so it was pending at that
point): if the model accepts it and the pair (set of linearized operations,
model state) was not seen before, the operation is lifted out of the list and
the search restarts from the front. Reaching a return event means the
operation it closes can no longer be placed, so the search backtracks. The
history is linearizable once every operation with a known outcome is placed;
operations with unknown outcome (ret = inf) have no return event, so they may
be placed anywhere after their call or never.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from jepsen_style.checker.models import NOT_OBSERVING, UNOBSERVED, Model, ValueFlow
from jepsen_style.checker.operation import UNKNOWN, Operation
from jepsen_style.checker.value_witness import ValueWitness, find_value_witness

__all__ = ["check", "check_partition", "CheckResult", "Failure", "Operation", "Verdict"]

Verdict = Literal["linearizable", "not-linearizable", "unknown"]

# How many search steps run between two looks at the clock.
_CLOCK_CHECK_INTERVAL = 2048
# Upper bound on the operations kept in `Failure.excerpt` so a picture stays readable.
_EXCERPT_LIMIT = 20


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a partition is not linearizable.

    `linearized` is the longest sequence of operations the search could
    linearize, in linearization order; after it, `stuck` (the pending
    operation that returned first) could not be placed, whatever was tried.
    `excerpt` is a small time-ordered selection around that point for drawing.
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


@dataclass(frozen=True, slots=True)
class _PartitionOutcome:
    verdict: Verdict
    linearized: list[int]
    stuck: int | None
    reason: str = ""
    # Further operations that explain the failure (indices, like `stuck`).
    witnesses: tuple[int, ...] = ()


class _Deadline:
    def __init__(self, timeout: float | None) -> None:
        self._at = None if timeout is None else time.monotonic() + timeout

    def passed(self) -> bool:
        return self._at is not None and time.monotonic() >= self._at


def check(ops: list[Operation], model: Model, timeout: float | None = None) -> CheckResult:
    """Decide whether `ops` is linearizable with respect to `model`.

    `timeout` (seconds, for the whole history) turns a search that runs too
    long into verdict "unknown"; it never produces a wrong verdict.
    """
    if timeout is not None and timeout < 0:
        raise ValueError(f"timeout must be >= 0 seconds, got {timeout}")
    deadline = _Deadline(timeout)
    partitions = [p for p in model.partition(list(ops)) if p]
    # Small parts first: a violation in a small part is found (and drawn) cheaply.
    order = sorted(range(len(partitions)), key=lambda i: len(partitions[i]))
    timed_out = False
    checked = 0
    for index in order:
        part = partitions[index]
        outcome = _search(part, model, deadline)
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
    outcome = _search(list(ops), model, _Deadline(timeout))
    failure = _describe_failure(0, list(ops), outcome) if outcome.verdict == "not-linearizable" else None
    return CheckResult(verdict=outcome.verdict, partitions=1, failure=failure,
                       partitions_checked=int(outcome.verdict != "unknown"))


def _search(all_ops: list[Operation], model: Model, deadline: _Deadline) -> _PartitionOutcome:
    """Search one part; indices in the outcome refer to `all_ops`."""
    for op in all_ops:
        if op.ret < op.call:
            raise ValueError(f"operation returns before it is called: {op}")
    step_model = model.part_model or model
    read_only = step_model.read_only
    canonical = step_model.canonicalize(all_ops) if step_model.canonicalize else all_ops
    # A read-only operation with unknown outcome constrains nothing: drop it.
    kept = [index for index, op in enumerate(canonical)
            if op.outcome_known or not read_only(op.input, UNKNOWN)]
    ops = [canonical[index] for index in kept]
    n = len(ops)
    events: list[tuple[float, int, int]] = []
    for i, op in enumerate(ops):
        events.append((op.call, 0, i))
        if op.outcome_known:
            events.append((op.ret, 1, i))
    # Calls sort before returns at equal times: touching operations count as concurrent.
    events.sort()

    inputs = [op.input for op in ops]
    outputs = [op.output if op.outcome_known else UNKNOWN for op in ops]
    # Candidates are tried in phases by rank. Rank 0: read-only operations (see
    # Model.read_only); if one is accepted it is linearized at once, because
    # any completion that places it later still works with it moved here, so
    # no alternative to it needs exploring, and if its successor configuration
    # already failed, so does this one. Rank 1: other operations with a known
    # outcome. Rank 2: unknown outcomes, tried last since they may never happen.
    rank = [0 if read_only(op.input, out) else (1 if op.outcome_known else 2)
            for op, out in zip(ops, outputs)]
    # Known and unknown operations get bits in separate sets, so that a
    # configuration can be recognised as dominated by one with the same known
    # set and state but fewer unknown operations applied (those may be applied
    # later or never, so the smaller set can do everything the larger can).
    bits = [0] * n
    known_count = unknown_count = 0
    for i in range(n):
        if rank[i] == 2:
            bits[i] = 1 << unknown_count
            unknown_count += 1
        else:
            bits[i] = 1 << known_count
            known_count += 1
    if known_count == 0:
        return _PartitionOutcome("linearizable", [], None)

    # Events are numbered 1..m in time order. Each rank's call events and all
    # return events form separate doubly linked lists (dancing links) sharing
    # the arrays below; a call is a candidate while it comes before the first
    # return still in the return list.
    m = len(events)
    tail = m + 1
    heads = [m + 2, m + 3, m + 4]
    returns_head = m + 5
    size = m + 6
    nxt = [tail] * size
    prv = [0] * size
    last = heads + [returns_head]
    entry_op = [-1] * size
    return_entry = [0] * size
    call_entry_of_op = [0] * n
    for position, (_, kind, i) in enumerate(events, start=1):
        entry_op[position] = i
        chain = rank[i] if kind == 0 else 3
        nxt[last[chain]] = position
        prv[position] = last[chain]
        last[chain] = position
        if kind == 0:
            call_entry_of_op[i] = position
        else:
            return_entry[call_entry_of_op[i]] = position
    for end in last:
        nxt[end] = tail
    # Two pending unknown-outcome operations with equal inputs are
    # interchangeable, so only the earlier-called one is ever tried first.
    earlier_twin_bit = [0] * size
    latest_with_input: dict[Any, int] = {}
    for position in range(1, m + 1):
        i = entry_op[position]
        if rank[i] == 2:
            try:
                twin = latest_with_input.get(inputs[i])
                latest_with_input[inputs[i]] = i
            except TypeError:  # unhashable input: no twins
                twin = None
            if twin is not None:
                earlier_twin_bit[position] = bits[twin]

    step = step_model.step
    state: Any = step_model.init()
    if step_model.value_flow is not None:
        witness = find_value_witness(ops, step_model.value_flow, state)
        if witness is not None:
            originals = [all_ops[index] for index in kept]
            return _witness_outcome(witness, originals, kept, step_model.describe_operation)
    flow = _ValueTracker(step_model.value_flow, ops, outputs) if step_model.value_flow else None
    if flow is not None:
        state = flow.merge(state)
    known_done = 0
    unknown_done = 0
    # Frames: (call entry, state before it, phase it was found in, effects of
    # the unknown-outcome operations already tried in that phase).
    stack: list[tuple[int, Any, int, set[Any] | None]] = []
    tried_effects: set[Any] | None = None
    # (known set, state) -> unknown sets seen with it; every configuration
    # seen has failed or is being explored.
    seen: dict[tuple[int, Any], list[int]] = {}
    best: list[int] = []
    stuck: int | None = None  # index into ops
    stuck_starved = False
    steps_until_clock = _CLOCK_CHECK_INTERVAL

    phase = 0
    entry = nxt[heads[0]]
    limit = nxt[returns_head]
    while True:
        dead_end = False
        if entry < limit:
            steps_until_clock -= 1
            if steps_until_clock == 0:
                steps_until_clock = _CLOCK_CHECK_INTERVAL
                if deadline.passed():
                    return _PartitionOutcome("unknown", [kept[entry_op[e]] for e in best], None)
            i = entry_op[entry]
            if phase == 2:
                twin = earlier_twin_bit[entry]
                if twin and not unknown_done & twin:
                    entry = nxt[entry]
                    continue
                if flow is not None:
                    # Pending unknown operations with equal effect from here on
                    # are interchangeable: try only the first of each kind.
                    effect = flow.unknown_effect(i)
                    if tried_effects is None:
                        tried_effects = {effect}
                    elif effect in tried_effects:
                        entry = nxt[entry]
                        continue
                    else:
                        tried_effects.add(effect)
            accepted, new_state = step(state, inputs[i], outputs[i])
            if not accepted:
                entry = nxt[entry]
                continue
            if flow is not None:
                new_state = flow.merge_after(i, new_state)
            if phase == 2:
                if new_state == state:
                    # Applying it changes nothing; not applying it keeps more options.
                    if flow is not None:
                        flow.unmerge(i)
                    entry = nxt[entry]
                    continue
                new_known = known_done
                new_unknown = unknown_done | bits[i]
            else:
                new_known = known_done | bits[i]
                new_unknown = unknown_done
            key = (new_known, new_state)
            earlier = seen.get(key)
            dominated = False
            if earlier is None:
                seen[key] = [new_unknown]
            else:
                for applied in earlier:
                    if applied & new_unknown == applied:
                        dominated = True
                        break
                else:
                    earlier.append(new_unknown)
            if not dominated:
                stack.append((entry, state, phase, tried_effects))
                tried_effects = None
                state = new_state
                known_done = new_known
                unknown_done = new_unknown
                before, after = prv[entry], nxt[entry]
                nxt[before] = after
                prv[after] = before
                ret = return_entry[entry]
                if ret:
                    before, after = prv[ret], nxt[ret]
                    nxt[before] = after
                    prv[after] = before
                    limit = nxt[returns_head]
                    if limit == tail:
                        return _PartitionOutcome(
                            "linearizable", [kept[entry_op[e]] for e, _, _, _ in stack], None
                        )
                if len(stack) > len(best):
                    best = [e for e, _, _, _ in stack]
                    stuck = None
                    stuck_starved = False
                phase = 0
                entry = nxt[heads[0]]
                if flow is None:
                    continue
                flow.linearize(i)
                starved = flow.starved_operation(state)
                if starved is None:
                    continue
                # Some operation needs a value that can no longer come about.
                if stuck is None and len(stack) == len(best):
                    stuck = starved
                    stuck_starved = True
                dead_end = True
            elif flow is not None:
                flow.unmerge(i)
            if not dead_end:
                if phase != 0:
                    entry = nxt[entry]
                    continue
                # A read-only successor that already failed: this configuration fails too.
        elif phase < 2:
            phase += 1
            entry = nxt[heads[phase]]
            continue
        elif stuck is None and len(stack) == len(best):
            stuck = entry_op[limit]
        # Pop frames until one whose configuration has candidates left to try.
        while True:
            if not stack:
                return _PartitionOutcome(
                    "not-linearizable",
                    [kept[entry_op[e]] for e in best],
                    None if stuck is None else kept[stuck],
                    _search_reason(stuck, stuck_starved),
                )
            entry, state, phase, tried_effects = stack.pop()
            i = entry_op[entry]
            if flow is not None:
                flow.unlinearize(i)
            if phase == 2:
                unknown_done ^= bits[i]
            else:
                known_done ^= bits[i]
            ret = return_entry[entry]
            if ret:
                nxt[prv[ret]] = ret
                prv[nxt[ret]] = ret
            nxt[prv[entry]] = entry
            prv[nxt[entry]] = entry
            if phase != 0:
                break
        limit = nxt[returns_head]
        entry = nxt[entry]


class _ValueTracker:
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


def _describe_failure(index: int, part: list[Operation], outcome: _PartitionOutcome) -> Failure:
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


def _search_reason(stuck: int | None, starved: bool) -> str:
    if stuck is None:
        return "no operation can be linearized first"
    if starved:
        return ("it needs a value the state no longer has and no remaining "
                "operation can set again")
    return "no pending operation, this one included, can be linearized before it returns"


def _witness_outcome(witness: ValueWitness, ops: list[Operation], kept: list[int],
                     describe: Any) -> _PartitionOutcome:
    def show(i: int) -> str:
        op = ops[i]
        return describe(op.input, op.output)

    parts = [f"{show(w)} replaced it after {show(p)}" for p, w in witness.replaced]
    if witness.initial_overwriter is not None:
        parts.append(f"{show(witness.initial_overwriter)} replaced the initial value")
    if not witness.replaced and witness.initial_overwriter is None:
        reason = f"it needs the value {witness.value!r}, which no operation sets"
    else:
        reason = (f"it needs the value {witness.value!r}, which was certainly replaced before it began: "
                  + "; ".join(parts))
    involved = [i for pair in witness.replaced for i in pair]
    if witness.initial_overwriter is not None:
        involved.append(witness.initial_overwriter)
    return _PartitionOutcome("not-linearizable", [], kept[witness.needing], reason,
                             tuple(kept[i] for i in involved))


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
