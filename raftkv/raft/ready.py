"""The batch of work the core hands to its driver."""

from __future__ import annotations

from dataclasses import dataclass, field

from raftkv.raft.messages import Message
from raftkv.raft.types import Entry, HardState, ReadState, Snapshot, SoftState


@dataclass(slots=True)
class Ready:
    """Do, in this order: persist ``snapshot`` (it replaces the whole log),
    then ``entries`` (an entry whose index is <= the stored last index
    truncates the stored log from there) and ``hard_state`` -- fsync if
    ``must_sync`` -- then send ``messages``, then apply ``snapshot`` and
    ``committed_entries`` to the state machine, serve ``read_states`` once
    applied >= their index, and finally call ``core.advance(ready)``."""

    soft_state: SoftState | None = None
    hard_state: HardState | None = None
    entries: list[Entry] = field(default_factory=list)
    snapshot: Snapshot | None = None
    committed_entries: list[Entry] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)
    # False when only the commit index changed: losing it in a crash is
    # harmless (it is re-learned from the leader), so no fsync is needed.
    must_sync: bool = False
