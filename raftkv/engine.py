"""What the server needs from consensus, and nothing more.

An engine replicates opaque command bytes through a log and applies each
committed command, in log order, to the node's local state machine. The
server only ever talks to this interface, so engines are interchangeable:
``pysyncobj`` (PySyncObj library) and ``native`` (our own Raft).

Contract every engine keeps:

* ``propose`` works on any node (a follower hands the command to the leader)
  and resolves with the value the *local* state machine returned when it
  applied that command, so after ``propose`` returns the local replica
  reflects the write.
* ``read_fence`` resolves once the local state machine reflects every
  command committed before the call started (linearizable reads).
* failures are reported with the exceptions in :mod:`raftkv.errors`:
  ``NoLeaderError`` when nothing was submitted, ``OutcomeUnknownError`` when
  it was submitted and the result did not come back in time.
"""

from __future__ import annotations

import abc
import contextlib
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable


class StateMachine(Protocol):
    """The replicated state machine an engine drives (see raftkv.kv)."""

    def apply(self, command: bytes) -> Any: ...

    def snapshot(self) -> bytes: ...

    def restore(self, data: bytes) -> None: ...


@runtime_checkable
class StoredStateMachine(StateMachine, Protocol):
    """A state machine that keeps its state in a store of its own (LMDB in
    the data directory) and records there which log index it applied, in
    the same write transaction as the data: a restart resumes from that
    index instead of restoring a snapshot and replaying the log after it.

    The driver brackets each run of committed entries with
    ``begin_batch``/``commit_batch`` (one write transaction per batch) and
    encodes snapshots with ``snapshot_job`` off the event loop.
    """

    @property
    def applied_index(self) -> int: ...

    def attach_store(self, store: Any) -> None: ...

    def close_store(self) -> None: ...

    def begin_batch(self) -> None: ...

    def commit_batch(self, applied_index: int | None = None) -> None: ...

    def abort_batch(self) -> None: ...

    def restore(self, data: bytes, applied_index: int | None = None) -> None: ...

    def clear(self, applied_index: int) -> None: ...

    def snapshot_job(self) -> Callable[[], bytes]: ...


@dataclass(frozen=True)
class Member:
    id: str
    peer_addr: str
    voter: bool = True


@dataclass(frozen=True)
class EngineStatus:
    node_id: str
    role: str  # "leader", "follower", "candidate", "learner", "failed" or "unknown"
    term: int
    leader_id: str | None
    commit_index: int
    applied_index: int
    engine: str
    members: list[Member] = field(default_factory=list)
    # Why the engine stopped working for good (e.g. "OSError: [Errno 28] No
    # space left on device"); the node serves nothing until restarted.
    failure: str | None = None
    # Why this node should not get client traffic (/readyz); None: ready.
    not_ready_reason: str | None = "the engine did not say it is ready"

    @property
    def ready(self) -> bool:
        return self.not_ready_reason is None

    def to_json(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "role": self.role,
            "term": self.term,
            "leader_id": self.leader_id,
            "commit_index": self.commit_index,
            "applied_index": self.applied_index,
            "engine": self.engine,
            "members": [
                {"id": m.id, "peer_addr": m.peer_addr, "voter": m.voter}
                for m in self.members
            ],
            "failure": self.failure,
            "ready": self.ready,
            "not_ready_reason": self.not_ready_reason,
        }


class Engine(abc.ABC):
    """Consensus for one node. All methods are called on the node's asyncio loop."""

    name: str
    # Held while the server reads the local state machine. Engines that apply
    # on the asyncio loop need no lock; PySyncObj applies on its own thread.
    state_lock: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()

    @abc.abstractmethod
    async def start(self) -> None:
        """Open storage, recover, join the cluster. Returns once running."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Stop serving; pending proposals fail with EngineStoppedError."""

    @abc.abstractmethod
    async def propose(self, command: bytes, timeout: float) -> Any:
        """Replicate ``command`` and return the local state machine's result."""

    @abc.abstractmethod
    async def read_fence(self, timeout: float) -> None:
        """Wait until local state includes every write committed before now."""

    @property
    def failure(self) -> str | None:
        """Why the engine stopped working for good (``status().failure``);
        None while it works. Cheaper than ``status()``: read per request."""
        return None

    @abc.abstractmethod
    def status(self) -> EngineStatus:
        """A cheap, non-blocking snapshot of this node's view of the cluster,
        with its readiness for client traffic and any engine failure."""

    @abc.abstractmethod
    async def transfer_leadership(self, target_id: str | None, timeout: float) -> None:
        """Hand leadership to ``target_id`` (or any caught-up voter)."""
