"""Value types shared by the Raft core, its driver and the codec.

Everything here is an immutable tuple so the codec can hand it to msgpack
without conversion and so a value can never change under the core's feet
after it was handed out in a Ready.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import NamedTuple

from raftkv.errors import NoLeaderError


class EntryKind(enum.IntEnum):
    NORMAL = 0
    CONF_CHANGE = 1


class Entry(NamedTuple):
    index: int
    term: int
    kind: int  # an EntryKind; kept as int so decoded entries need no conversion
    data: bytes


class HardState(NamedTuple):
    """What must be durable before any message of the same Ready is sent."""

    term: int = 0
    vote: str | None = None
    commit: int = 0


class Role(str, enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre_candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


class SoftState(NamedTuple):
    """Volatile facts the driver may want to surface; never persisted."""

    leader_id: str | None
    role: Role


class ConfState(NamedTuple):
    voters: tuple[str, ...]
    learners: tuple[str, ...] = ()


class SnapshotMeta(NamedTuple):
    index: int
    term: int
    conf: ConfState


class Snapshot(NamedTuple):
    meta: SnapshotMeta
    data: bytes


class ReadState(NamedTuple):
    """A linearizable read may be served once applied >= index."""

    ctx: bytes
    index: int


class ConfChangeKind(enum.IntEnum):
    ADD_LEARNER = 0
    PROMOTE = 1
    REMOVE = 2


class ConfChange(NamedTuple):
    kind: ConfChangeKind
    node_id: str
    # Opaque to the core; lets the driver carry e.g. the new node's address.
    context: bytes = b""


@dataclass(frozen=True, slots=True)
class RaftConfig:
    node_id: str
    voters: tuple[str, ...]
    learners: tuple[str, ...] = ()
    election_ticks: int = 10
    heartbeat_ticks: int = 1
    max_entries_per_msg: int = 256
    max_inflight_msgs: int = 64
    max_snapshot_chunk: int = 1 << 20
    pre_vote: bool = True
    check_quorum: bool = True
    # A snapshot with more than this many bytes of entry data applied after
    # it is stale: a follower that needs a snapshot waits for the fresh one
    # the driver is asked for (RaftCore.snapshot_wanted), instead of
    # receiving the stale one and then replaying that log (see
    # docs/raft-core.md). None: never stale.
    stale_snapshot_bytes: int | None = None

    def __post_init__(self) -> None:
        if not self.node_id:
            raise ValueError("RaftConfig.node_id must be a non-empty string")
        if self.heartbeat_ticks < 1:
            raise ValueError("RaftConfig.heartbeat_ticks must be >= 1")
        if self.election_ticks <= self.heartbeat_ticks:
            raise ValueError(
                "RaftConfig.election_ticks must be greater than heartbeat_ticks "
                f"(got election_ticks={self.election_ticks}, heartbeat_ticks={self.heartbeat_ticks})"
            )
        if self.max_entries_per_msg < 1 or self.max_inflight_msgs < 1:
            raise ValueError("RaftConfig.max_entries_per_msg and max_inflight_msgs must be >= 1")
        if self.max_snapshot_chunk < 1:
            raise ValueError("RaftConfig.max_snapshot_chunk must be >= 1")
        if self.stale_snapshot_bytes is not None and self.stale_snapshot_bytes < 0:
            raise ValueError("RaftConfig.stale_snapshot_bytes must be >= 0 or None")
        overlap = set(self.voters) & set(self.learners)
        if overlap:
            raise ValueError(f"nodes cannot be both voter and learner: {sorted(overlap)}")
        if len(set(self.voters)) != len(self.voters) or len(set(self.learners)) != len(self.learners):
            raise ValueError("RaftConfig.voters and learners must not contain duplicates")


@dataclass(frozen=True, slots=True)
class RestoredState:
    """What the driver recovered from durable storage at start-up."""

    hard_state: HardState = HardState()
    snapshot: SnapshotMeta | None = None
    entries: list[Entry] = field(default_factory=list)


class ProgressStatus(NamedTuple):
    match: int
    next: int
    state: str
    recent_active: bool


class CoreStatus(NamedTuple):
    node_id: str
    role: Role
    term: int
    leader_id: str | None
    commit: int
    applied: int
    last_index: int
    voters: tuple[str, ...]
    learners: tuple[str, ...]
    progress: dict[str, ProgressStatus]
    transferring_to: str | None


class ProposalDropped(NoLeaderError):
    """The proposal or read was not submitted (no leader, transfer in
    progress, or a membership change already pending); retrying is safe."""


class InvalidConfChange(ValueError):
    """The membership change makes no sense for the current configuration."""


class ReadyNotAdvanced(RuntimeError):
    """ready() was called again before advance() of the previous Ready."""
