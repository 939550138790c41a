"""What every workload provides: a pure operation generator, a client that
turns an operation into HTTP calls, final reads, and a checker."""
from __future__ import annotations

import random
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal

from jepsen_style.history import HistoryEvent
from jepsen_style.workloads.node_api import NodeApi, Reply

CompletionType = Literal["ok", "fail", "info"]
Verdict = Literal["valid", "invalid", "unknown"]


@dataclass(frozen=True, slots=True)
class Op:
    """One operation to invoke: history function, key and argument."""

    f: str
    key: str | None
    value: Any


@dataclass(frozen=True, slots=True)
class Completion:
    type: CompletionType
    value: Any = None
    # Why an operation failed or has an unknown outcome, for the history reader.
    error: str | None = None
    # For "info": whether the operation may still be in flight (a timeout) as
    # opposed to known not to have happened but recorded as info anyway.
    in_flight: bool = True


@dataclass(frozen=True, slots=True)
class CheckOutcome:
    verdict: Verdict
    anomalies: list[str] = field(default_factory=list)
    # What was checked, in words ("12 keys", "4 SKUs").
    scope: str = ""
    # The smallest failing part of the history, when the checker found one.
    failure_text: str | None = None
    failure_svg: str | None = None


class OpGenerator(ABC):
    """The operations of one client worker, drawn from its own seeded RNG."""

    @abstractmethod
    def next_op(self, rng: random.Random) -> Op: ...


class Workload(ABC):
    name: str
    # Whether the checker needs the final reads (the register checker does not).
    needs_final_reads: bool = True

    @abstractmethod
    def generator(self, worker: int) -> OpGenerator: ...

    async def setup(self, api: NodeApi) -> None:
        """Write the initial state, before the history starts."""

    async def start(self, apis: list[NodeApi]) -> None:
        """Start what runs beside the clients (one API per node), as the
        history starts; `invoke_final` stops it (the watch workload's watchers)."""

    @abstractmethod
    async def invoke(self, api: NodeApi, op: Op) -> Completion:
        """Perform `op`; raises `RequestNotSent` or `OutcomeUnknown` from `NodeApi`."""

    def not_applied(self, op: Op, reason: str) -> Completion:
        """How to record an operation that certainly did not happen (not
        sent, 503, rejected)."""
        return Completion("fail", None, reason)

    async def invoke_final(self, api: NodeApi, op: Op) -> Completion:
        """Perform a final read (always with the safe, linearizable consistency)."""
        return await self.invoke(api, op)

    @abstractmethod
    def final_ops(self, events: Iterable[HistoryEvent]) -> list[Op]:
        """Reads to run once the cluster healed, given the history so far."""

    @abstractmethod
    def check(self, events: list[HistoryEvent]) -> CheckOutcome: ...


def write_completion(reply: Reply, ok_value: Any = None) -> Completion:
    """How a write's reply enters the history.

    Only answers that promise nothing was applied are `fail`: 503 (no leader)
    and 4xx (rejected input or precondition). 504 and other 5xx leave the
    outcome open, so they are `info`.
    """
    if reply.status == 200:
        return Completion("ok", ok_value)
    if reply.status == 503 or 400 <= reply.status < 500:
        return Completion("fail", None, reply.describe())
    return Completion("info", None, reply.describe())


def read_failure(reply: Reply) -> Completion:
    """A read that got no value: nothing was observed, so it is a `fail`
    unless the node said the outcome is unknown."""
    if reply.status == 504 or (reply.status >= 500 and reply.status != 503):
        return Completion("info", None, reply.describe())
    return Completion("fail", None, reply.describe())
