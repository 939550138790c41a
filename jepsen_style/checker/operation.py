"""The unit a linearizability check works on: one client call with its result."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final


class _Unknown:
    """Marker for the output of an operation whose outcome was never learned."""

    _instance: "_Unknown | None" = None

    def __new__(cls) -> "_Unknown":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNKNOWN"

    def __reduce__(self) -> str:
        return "UNKNOWN"


UNKNOWN: Final = _Unknown()


@dataclass(frozen=True, slots=True)
class Operation:
    """One call observed by a client.

    `ret` is `math.inf` when the outcome is unknown (timeout, crash): the
    operation may have taken effect at any time after `call`, or never. Such
    operations are stepped through the model with output `UNKNOWN`.
    """

    client_id: int | str
    input: Any
    call: float
    output: Any
    ret: float

    @property
    def outcome_known(self) -> bool:
        return self.ret != math.inf


def unknown_outcome(client_id: int | str, input: Any, call: float) -> Operation:
    """An operation that was invoked but whose result never arrived."""
    return Operation(client_id, input, call, UNKNOWN, math.inf)
