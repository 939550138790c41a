"""Our own Raft: a pure, deterministic core (``RaftCore``) plus its codec and
a seeded simulator. See docs/raft-core.md."""

from raftkv.raft.core import RaftCore
from raftkv.raft.messages import Message, MsgType
from raftkv.raft.ready import Ready
from raftkv.raft.types import (
    ConfChange,
    ConfChangeKind,
    ConfState,
    CoreStatus,
    Entry,
    EntryKind,
    HardState,
    InvalidConfChange,
    ProposalDropped,
    RaftConfig,
    ReadState,
    ReadyNotAdvanced,
    RestoredState,
    Role,
    Snapshot,
    SnapshotMeta,
    SoftState,
)

__all__ = [
    "ConfChange",
    "ConfChangeKind",
    "ConfState",
    "CoreStatus",
    "Entry",
    "EntryKind",
    "HardState",
    "InvalidConfChange",
    "Message",
    "MsgType",
    "ProposalDropped",
    "RaftConfig",
    "RaftCore",
    "ReadState",
    "Ready",
    "ReadyNotAdvanced",
    "RestoredState",
    "Role",
    "Snapshot",
    "SnapshotMeta",
    "SoftState",
]
