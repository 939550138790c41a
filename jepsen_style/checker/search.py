"""The search behind the linearizability checker: Wing & Gong / Lowe with memoization.

The history becomes a time-ordered doubly linked list of call and return
events. The search repeatedly tries to linearize an operation whose call is
still in the list before the first return event (so it was pending at that
point): if the model accepts it and the pair (set of linearized operations,
model state) was not seen before, the operation is lifted out of the list and
the search restarts from the front. Reaching a return event means the
operation it closes can no longer be placed, so the search backtracks. The
history is linearizable once every operation with a known outcome is placed;
operations with unknown outcome (ret = inf) have no return event, so they may
be placed anywhere after their call or never. The pruning rules added on
top are explained where they apply and in docs/checker.md.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

from jepsen_style.checker.models import Model
from jepsen_style.checker.operation import UNKNOWN, Operation
from jepsen_style.checker.value_tracking import ValueTracker
from jepsen_style.checker.value_witness import ValueWitness, find_value_witness

Verdict = Literal["linearizable", "not-linearizable", "unknown"]

# How many search steps run between two looks at the clock.
_CLOCK_CHECK_INTERVAL = 2048


@dataclass(frozen=True, slots=True)
class PartOutcome:
    """The verdict for one part; operations are indices into the part."""

    verdict: Verdict
    linearized: list[int]
    stuck: int | None
    reason: str = ""
    # Further operations that explain the failure (indices, like `stuck`).
    witnesses: tuple[int, ...] = ()


class Deadline:
    """A time limit shared by all parts of one check (None: no limit)."""

    def __init__(self, timeout: float | None) -> None:
        self._at = None if timeout is None else time.monotonic() + timeout

    def passed(self) -> bool:
        return self._at is not None and time.monotonic() >= self._at


def search_part(all_ops: list[Operation], model: Model, deadline: Deadline) -> PartOutcome:
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
        return PartOutcome("linearizable", [], None)

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
    flow = ValueTracker(step_model.value_flow, ops, outputs) if step_model.value_flow else None
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
                    return PartOutcome("unknown", [kept[entry_op[e]] for e in best], None)
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
                        return PartOutcome(
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
                return PartOutcome(
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


def _search_reason(stuck: int | None, starved: bool) -> str:
    if stuck is None:
        return "no operation can be linearized first"
    if starved:
        return ("it needs a value the state no longer has and no remaining "
                "operation can set again")
    return "no pending operation, this one included, can be linearized before it returns"


def _witness_outcome(witness: ValueWitness, ops: list[Operation], kept: list[int],
                     describe: Any) -> PartOutcome:
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
    return PartOutcome("not-linearizable", [], kept[witness.needing], reason,
                             tuple(kept[i] for i in involved))
