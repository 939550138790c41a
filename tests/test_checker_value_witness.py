from __future__ import annotations

from jepsen_style.checker.models import REGISTER_VALUE_FLOW
from jepsen_style.checker.operation import Operation, unknown_outcome
from jepsen_style.checker.value_witness import ValueWitness, find_value_witness


def op(client: int, input: object, call: float, output: object, ret: float) -> Operation:
    return Operation(client, input, call, output, ret)


def test_stale_read_names_the_write_and_its_replacement() -> None:
    ops = [
        op(0, ("write", 1), 0, "ok", 1),
        op(0, ("write", 2), 2, "ok", 3),
        op(1, ("read", None), 4, 1, 5),
    ]
    assert find_value_witness(ops, REGISTER_VALUE_FLOW, None) == ValueWitness(2, 1, [(0, 1)], None)


def test_every_write_of_the_value_must_be_replaced() -> None:
    ops = [
        op(0, ("write", 1), 0, "ok", 1),
        op(1, ("write", 1), 2, "ok", 3),   # written again
        op(2, ("write", 2), 3.5, "ok", 4),  # replaced after both
        op(3, ("read", None), 5, 1, 6),
    ]
    # For the first write, the earliest replacement writes 1 again, so the
    # witness is the next one that writes something else.
    assert find_value_witness(ops, REGISTER_VALUE_FLOW, None) == ValueWitness(3, 1, [(0, 2), (1, 2)], None)
    ops[2] = op(2, ("write", 2), 2.5, "ok", 4)  # overlaps the second write: no proof
    assert find_value_witness(ops, REGISTER_VALUE_FLOW, None) is None


def test_concurrent_or_unknown_writes_are_never_ruled_out() -> None:
    touching = [
        op(0, ("write", 1), 0, "ok", 1),
        op(0, ("write", 2), 1, "ok", 2),  # starts when the first returns: concurrent
        op(1, ("read", None), 3, 1, 4),
    ]
    assert find_value_witness(touching, REGISTER_VALUE_FLOW, None) is None
    unknown = [
        unknown_outcome(0, ("write", 1), 0),
        op(0, ("write", 2), 2, "ok", 3),
        op(1, ("read", None), 4, 1, 5),
    ]
    assert find_value_witness(unknown, REGISTER_VALUE_FLOW, None) is None


def test_failed_cas_does_not_replace_and_successful_cas_does() -> None:
    ops = [
        op(0, ("write", 1), 0, "ok", 1),
        op(0, ("cas", (5, 2)), 2, False, 3),
        op(1, ("read", None), 4, 1, 5),
    ]
    assert find_value_witness(ops, REGISTER_VALUE_FLOW, None) is None
    ops[1] = op(0, ("cas", (1, 2)), 2, True, 3)
    assert find_value_witness(ops, REGISTER_VALUE_FLOW, None) == ValueWitness(2, 1, [(0, 1)], None)


def test_initial_value_and_values_nobody_sets() -> None:
    ops = [op(0, ("write", 1), 0, "ok", 1), op(1, ("read", None), 2, None, 3)]
    assert find_value_witness(ops, REGISTER_VALUE_FLOW, None) == ValueWitness(1, None, [], 0)
    never = [op(1, ("read", None), 0, 9, 1)]
    assert find_value_witness(never, REGISTER_VALUE_FLOW, None) == ValueWitness(0, 9, [], None)
    # A successful cas needs its expected value like a read does.
    cas = [op(1, ("cas", (9, 1)), 0, True, 1)]
    assert find_value_witness(cas, REGISTER_VALUE_FLOW, None) == ValueWitness(0, 9, [], None)
