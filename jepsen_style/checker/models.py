"""Sequential specifications the linearizability checker compares histories against.

A model is a pure state machine: `step(state, input, output)` says whether an
operation with that input could have returned that output in `state`, and what
the state becomes. States must be hashable because the checker memoizes on them.
An operation whose outcome is unknown is stepped with output `UNKNOWN`; every
model here accepts it in any state (it only constrains later operations through
the state it leaves behind).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

from jepsen_style.checker.operation import UNKNOWN, Operation

State = Hashable
StepFunction = Callable[[Any, Any, Any], tuple[bool, Any]]


def _single_partition(ops: list[Operation]) -> list[list[Operation]]:
    return [list(ops)]


def _describe_generic(input: Any, output: Any) -> str:
    return f"{input!r} -> {output!r}"


def _never_read_only(input: Any, output: Any) -> bool:
    return False


@dataclass
class Model:
    """A sequential specification.

    `partition` splits a history into independent parts that can be checked
    alone (P-compositionality, e.g. one part per key); the history is
    linearizable iff every part is.
    """

    init: Callable[[], State]
    step: StepFunction
    partition: Callable[[list[Operation]], list[list[Operation]]] = field(
        default=_single_partition
    )
    describe_operation: Callable[[Any, Any], str] = field(default=_describe_generic)
    # True only if, in every state where `step` accepts the operation, the state
    # stays the same (e.g. reads). The checker then places such operations
    # greedily, which prunes its search; answering False is always safe.
    read_only: Callable[[Any, Any], bool] = field(default=_never_read_only)
    name: str = "model"
    # A cheaper model valid within one part produced by `partition` (e.g. a
    # single key's value instead of a map); the checker steps parts with it.
    part_model: "Model | None" = None
    # Rewrites the operations of one part (same length and order) into an
    # equivalent form that is faster to search; the verdict must not change.
    canonicalize: Callable[[list[Operation]], list[Operation]] | None = None
    # For register-like models only: how operations use whole-state values,
    # which lets the checker merge states and detect dead ends.
    value_flow: "ValueFlow | None" = None


@dataclass(frozen=True)
class ValueFlow:
    """How operations of a register-like model use values.

    Providing one promises that acceptance and transitions depend on the
    state only through equality with `observed` values, and that the state
    only ever takes values set by `produced` (or the initial state).

    observed(input, output): the value the operation compares the state with.
    required(input, output): the value the state must equal for the operation
        to be accepted (a read's result, a successful cas's expected value).
    produced(input): the value the operation may set.
    overwrites(input, output): True if, whenever accepted, the operation sets
        the state to `produced(input)` (a write, a successful cas).
    unknown_signature(input, is_observed): a key for an unknown-outcome
        operation's effect given which values are still observed; equal keys
        promise equal effects on every state from then on.
    Each returns NOT_OBSERVING where it does not apply.
    """

    observed: Callable[[Any, Any], Any]
    required: Callable[[Any, Any], Any]
    produced: Callable[[Any], Any]
    overwrites: Callable[[Any, Any], bool]
    unknown_signature: Callable[[Any, Callable[[Any], bool]], Any]


class ModelInputError(ValueError):
    """An operation's input does not fit the model (a bug in the history or caller)."""


# --- single register -------------------------------------------------------

def _register_step(state: Any, input: Any, output: Any) -> tuple[bool, Any]:
    f, arg = input
    return _register_transition(state, f, arg, output)


def _register_transition(state: Any, f: str, arg: Any, output: Any) -> tuple[bool, Any]:
    if f == "read":
        return (output is UNKNOWN or output == state), state
    if f == "write":
        return True, arg
    if f == "cas":
        expected, new = arg
        if state == expected:
            return (output is True or output is UNKNOWN), new
        return (output is False or output is UNKNOWN), state
    raise ModelInputError(f"register model: unknown function {f!r} (expected read, write or cas)")


def _register_read_only(input: Any, output: Any) -> bool:
    f, arg = input
    if f == "read":
        return True
    # A cas that answered "not swapped" is accepted only where it changes nothing;
    # one that swaps a value for itself changes nothing either.
    return f == "cas" and (output is False or (output is True and arg[0] == arg[1]))


def _describe_register(input: Any, output: Any) -> str:
    f, arg = input
    unknown = output is UNKNOWN
    if f == "read":
        return "read ?" if unknown else f"read {_show(output)}"
    if f == "write":
        return f"write {_show(arg)}" + (" ?" if unknown else "")
    if f == "cas":
        expected, new = arg
        verdict = "?" if unknown else ("ok" if output is True else "fail")
        return f"cas {_show(expected)}->{_show(new)} {verdict}"
    return _describe_generic(input, output)


def _show(value: Any) -> str:
    return "nil" if value is None else str(value)


def _register_init() -> None:
    return None


def register_model() -> Model:
    """One register, initially `None` (absent).

    Inputs: ("read", None), ("write", v), ("cas", (expected, new)).
    Outputs: the value read, anything for a write, True/False for cas.
    """
    return Model(
        init=_register_init,
        step=_register_step,
        describe_operation=_describe_register,
        read_only=_register_read_only,
        name="register",
        canonicalize=_canonical_register_ops,
        value_flow=REGISTER_VALUE_FLOW,
    )


class _Marker:
    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


# Stands for every value that no (remaining) operation compares the register with.
UNOBSERVED: Any = _Marker("<unobserved value>")
# What `Model.observed_value` returns for an operation that compares with nothing.
NOT_OBSERVING: Any = _Marker("<not observing>")


def _register_observed_value(input: Any, output: Any) -> Any:
    f, arg = input
    if f == "read":
        return NOT_OBSERVING if output is UNKNOWN else output
    if f == "cas":
        return arg[0]
    return NOT_OBSERVING


def _register_required_value(input: Any, output: Any) -> Any:
    f, arg = input
    if f == "read":
        return NOT_OBSERVING if output is UNKNOWN else output
    if f == "cas" and output is True:
        return arg[0]
    return NOT_OBSERVING


def _register_produced_value(input: Any) -> Any:
    f, arg = input
    if f == "write":
        return arg
    if f == "cas":
        return arg[1]
    return NOT_OBSERVING


def _register_overwrites(input: Any, output: Any) -> bool:
    f = input[0]
    return f == "write" or (f == "cas" and output is True)


def _register_unknown_signature(input: Any, is_observed: Callable[[Any], bool]) -> Any:
    f, arg = input
    if f == "write":
        return ("write", arg if is_observed(arg) else UNOBSERVED)
    if f == "cas":
        return ("cas", arg[0], arg[1] if is_observed(arg[1]) else UNOBSERVED)
    return input


REGISTER_VALUE_FLOW = ValueFlow(
    observed=_register_observed_value,
    required=_register_required_value,
    produced=_register_produced_value,
    overwrites=_register_overwrites,
    unknown_signature=_register_unknown_signature,
)
# The same for inputs that start with a key.
ONE_KEY_REGISTER_VALUE_FLOW = ValueFlow(
    observed=lambda input, output: _register_observed_value(input[1:], output),
    required=lambda input, output: _register_required_value(input[1:], output),
    produced=lambda input: _register_produced_value(input[1:]),
    overwrites=lambda input, output: _register_overwrites(input[1:], output),
    unknown_signature=lambda input, is_observed: _register_unknown_signature(input[1:], is_observed),
)


def _merge_unobserved_values(ops: list[Operation], offset: int) -> list[Operation]:
    """Replace values nobody observes by one token.

    Reads and cas only ever compare the register with a read's result or a
    cas's expected value. Values outside that set are indistinguishable, so
    mapping them all to UNOBSERVED preserves every operation's acceptance and
    the verdict; it makes e.g. unknown-outcome writes of never-read values
    interchangeable, which the search exploits. `offset` is where (f, arg)
    starts in the input tuple.
    """
    observed: set[Any] = set()
    for op in ops:
        f, arg = op.input[offset], op.input[offset + 1]
        try:
            if f == "read" and op.outcome_known:
                observed.add(op.output)
            elif f == "cas":
                observed.add(arg[0])
        except TypeError:  # an unhashable value: leave this part as it is
            return ops
    rewritten = []
    for op in ops:
        f, arg = op.input[offset], op.input[offset + 1]
        if f == "write" and arg not in observed:
            arg = UNOBSERVED
        elif f == "cas" and arg[1] not in observed:
            arg = (arg[0], UNOBSERVED)
        else:
            rewritten.append(op)
            continue
        new_input = op.input[:offset] + (f, arg)
        rewritten.append(Operation(op.client_id, new_input, op.call, op.output, op.ret))
    return rewritten


def _canonical_register_ops(ops: list[Operation]) -> list[Operation]:
    return _merge_unobserved_values(ops, 0)


def _canonical_one_key_register_ops(ops: list[Operation]) -> list[Operation]:
    return _merge_unobserved_values(ops, 1)


# --- many independent registers (the harness's register workload) -----------

def _lookup(state: tuple[tuple[Any, Any], ...], key: Any, default: Any) -> Any:
    if len(state) == 1 and state[0][0] == key:
        return state[0][1]
    for k, v in state:
        if k == key:
            return v
    return default


def _assign(state: tuple[tuple[Any, Any], ...], key: Any, value: Any) -> tuple[tuple[Any, Any], ...]:
    # A checked partition normally holds one key, so the tuple stays tiny;
    # keeping it sorted makes equal states hash equal.
    if not state or (len(state) == 1 and state[0][0] == key):
        return ((key, value),)
    items = [(k, v) for k, v in state if k != key]
    items.append((key, value))
    items.sort(key=lambda kv: repr(kv[0]))
    return tuple(items)


def _partition_by_key(ops: list[Operation]) -> list[list[Operation]]:
    by_key: dict[Any, list[Operation]] = defaultdict(list)
    for op in ops:
        by_key[op.input[0]].append(op)
    return list(by_key.values())


def _keyed_register_step(state: Any, input: Any, output: Any) -> tuple[bool, Any]:
    key, f, arg = input
    current = _lookup(state, key, None)
    ok, new = _register_step(current, (f, arg), output)
    if new is current:
        return ok, state
    return ok, _assign(state, key, new)


def _keyed_register_read_only(input: Any, output: Any) -> bool:
    return _register_read_only(input[1:], output)


def _one_key_register_step(state: Any, input: Any, output: Any) -> tuple[bool, Any]:
    _, f, arg = input
    return _register_transition(state, f, arg, output)


def _describe_keyed_register(input: Any, output: Any) -> str:
    key, f, arg = input
    return f"{key}: {_describe_register((f, arg), output)}"


def _empty_map() -> tuple[()]:
    return ()


def keyed_register_model() -> Model:
    """Many registers, each initially `None` (absent); partitioned by key.

    Inputs: (key, "read", None), (key, "write", v), (key, "cas", (expected, new)).
    Outputs: as for `register_model`.
    """
    return Model(
        init=_empty_map,
        step=_keyed_register_step,
        partition=_partition_by_key,
        describe_operation=_describe_keyed_register,
        read_only=_keyed_register_read_only,
        name="keyed-register",
        part_model=Model(
            init=_register_init,
            step=_one_key_register_step,
            describe_operation=_describe_keyed_register,
            read_only=_keyed_register_read_only,
            name="keyed-register (one key)",
            canonicalize=_canonical_one_key_register_ops,
            value_flow=ONE_KEY_REGISTER_VALUE_FLOW,
        ),
    )


# --- key-value store with get/put/append (Porcupine's kv tests) --------------

def _kv_step(state: Any, input: Any, output: Any) -> tuple[bool, Any]:
    key = input[0]
    current = _lookup(state, key, "")
    ok, new = _one_key_kv_step(current, input, output)
    if new is current:
        return ok, state
    return ok, _assign(state, key, new)


def _kv_read_only(input: Any, output: Any) -> bool:
    return input[1] == "get"


def _one_key_kv_step(state: Any, input: Any, output: Any) -> tuple[bool, Any]:
    _, f, arg = input
    if f == "get":
        return (output is UNKNOWN or output == state), state
    if f == "append":
        return True, state + arg
    if f == "put":
        return True, arg
    raise ModelInputError(f"kv model: unknown function {f!r} (expected get, put or append)")


def _empty_string() -> str:
    return ""


def _describe_kv(input: Any, output: Any) -> str:
    key, f, arg = input
    if f == "get":
        return f"{key}: get " + ("?" if output is UNKNOWN else repr(output))
    return f"{key}: {f} {arg!r}" + (" ?" if output is UNKNOWN else "")


def kv_model() -> Model:
    """String values per key, "" when absent; partitioned by key.

    Inputs: (key, "get", None), (key, "put", v), (key, "append", v).
    Outputs: the value for get, anything for put/append.
    """
    return Model(
        init=_empty_map,
        step=_kv_step,
        partition=_partition_by_key,
        describe_operation=_describe_kv,
        read_only=_kv_read_only,
        name="kv",
        part_model=Model(
            init=_empty_string,
            step=_one_key_kv_step,
            describe_operation=_describe_kv,
            read_only=_kv_read_only,
            name="kv (one key)",
        ),
    )
