"""Whether a native node should get client traffic (``/readyz``).

One pure function, so the engine's status and the simulator's invariant
"a ready node has every committed entry" use the very same rule. No I/O, no
clocks: time is the core's tick count.

A node is ready when all of these hold:

* its engine runs (no storage failure);
* its storage is bootstrapped (a wiped node is not ready until it has heard
  from a leader and caught up, see docs/raft-core.md);
* it knows a leader, and heard from it within ``max_ticks_since_leader``
  ticks (the leader itself: heard from a quorum within that many ticks, as
  ``core.ticks_since_leader`` counts for a leader, so a leader cut off by a
  partition stops being ready before it steps down);
* it has applied everything up to the leader's commit index as that leader
  last reported it (``core.leader_commit``: the leader's real commit index,
  not the one capped at what this follower holds).

What this guarantees: a ready node's state includes every entry committed
before the leader's last message to it, and that message is at most
``max_ticks_since_leader`` ticks old. Entries committed since then may be
missing, which is why linearizable reads still take a ReadIndex round.
"""

from __future__ import annotations

from typing import Protocol


class ReadinessView(Protocol):
    """What readiness reads of a RaftCore (raftkv.raft.core.RaftCore)."""

    @property
    def id(self) -> str: ...

    @property
    def leader_id(self) -> str | None: ...

    @property
    def leader_commit(self) -> int: ...

    @property
    def ticks_since_leader(self) -> int: ...

    @property
    def bootstrapped(self) -> bool: ...


def readiness(
    core: ReadinessView, applied: int, engine_failure: str | None, max_ticks_since_leader: int
) -> str | None:
    """Why the node is not ready, or None if it is. ``applied`` is the index
    its state machine has applied (``core.applied`` in the native engine)."""
    if engine_failure is not None:
        return f"the engine failed: {engine_failure}"
    if not core.bootstrapped:
        return "this node's storage was empty: it waits to hear from a leader and catch up"
    leader = core.leader_id
    if leader is None:
        return "no leader is known"
    if core.ticks_since_leader > max_ticks_since_leader:
        if leader == core.id:
            return f"leader without an answer from a quorum for {core.ticks_since_leader} ticks"
        return f"no message from leader {leader} for {core.ticks_since_leader} ticks"
    if applied < core.leader_commit:
        return f"catching up: applied {applied} of the leader's commit index {core.leader_commit}"
    return None


def is_ready(
    core: ReadinessView, applied: int, engine_failure: str | None, max_ticks_since_leader: int
) -> bool:
    return readiness(core, applied, engine_failure, max_ticks_since_leader) is None
