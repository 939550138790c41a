"""What the leader knows about one follower's log, and how fast it may send.

States (as in the Raft dissertation's and etcd's designs):

* PROBE: we do not know where the follower's log matches ours; send one
  append at a time and wait for its answer (or the next heartbeat).
* REPLICATE: the follower is in sync; stream appends optimistically, at
  most ``max_inflight`` unacknowledged messages at once.
* SNAPSHOT: the entries it needs were compacted; stream it the snapshot in
  chunks and send no appends until it acknowledges the install.
"""

from __future__ import annotations

import enum
from collections import deque

from raftkv.raft.types import Snapshot


class ProgressState(str, enum.Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


class Progress:
    __slots__ = (
        "match",
        "next",
        "state",
        "probe_sent",
        "inflight",
        "max_inflight",
        "recent_active",
        "snapshot",
        "snap_acked",
        "snap_sent",
        "is_learner",
        "match_round",
        "heard_at",
    )

    def __init__(self, next_index: int, max_inflight: int, is_learner: bool = False) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False
        # Last index carried by each unacknowledged append, oldest first.
        self.inflight: deque[int] = deque()
        self.max_inflight = max_inflight
        self.recent_active = False
        self.snapshot: Snapshot | None = None
        self.snap_acked = 0  # bytes of the snapshot the follower confirmed
        self.snap_sent = 0  # bytes of the snapshot we have sent
        self.is_learner = is_learner
        # The leader's latest heartbeat round when ``match`` last grew. A
        # response to a later round was sent after the follower acknowledged
        # ``match``, so if it shows less, the follower lost entries (see
        # lost_entries and docs/raft-core.md).
        self.match_round = 0
        # The leader's tick count when this peer last answered (-1: never).
        self.heard_at = -1

    def become_probe(self) -> None:
        if self.state is ProgressState.SNAPSHOT and self.snapshot is not None:
            # The follower now has the snapshot, so continue right after it.
            self.next = max(self.match + 1, self.snapshot.meta.index + 1)
        else:
            self.next = self.match + 1
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.inflight.clear()
        self.snapshot = None

    def become_replicate(self) -> None:
        self.state = ProgressState.REPLICATE
        self.next = self.match + 1
        self.probe_sent = False
        self.inflight.clear()
        self.snapshot = None

    def become_snapshot(self, snapshot: Snapshot) -> None:
        self.state = ProgressState.SNAPSHOT
        self.probe_sent = False
        self.inflight.clear()
        self.snapshot = snapshot
        self.snap_acked = 0
        self.snap_sent = 0

    def is_paused(self) -> bool:
        state = self.state
        if state is ProgressState.REPLICATE:
            return len(self.inflight) >= self.max_inflight
        if state is ProgressState.PROBE:
            return self.probe_sent
        return True

    def sent_entries(self, last_index: int) -> None:
        """Record an append carrying entries up to last_index."""
        if self.state is ProgressState.REPLICATE:
            self.next = last_index + 1
            self.inflight.append(last_index)
        else:
            self.probe_sent = True

    def maybe_update(self, index: int) -> bool:
        """The follower matches us up to ``index``; False if that is old news."""
        updated = False
        if index > self.match:
            self.match = index
            updated = True
            self.probe_sent = False
        if self.next < index + 1:
            self.next = index + 1
        inflight = self.inflight
        while inflight and inflight[0] <= index:
            inflight.popleft()
        return updated

    def maybe_decrease_to(self, rejected: int, hint: int) -> bool:
        """The follower rejected an append whose previous index was ``rejected``
        and suggests ``hint`` as a possible match. False if the rejection is
        stale (about a message we already moved past).

        A rejection at or below ``match`` is always treated as stale here:
        a follower that acknowledged ``match`` cannot reject it unless the
        answer was overtaken, or it lost entries -- which only a response
        known to be newer than the acknowledgement can tell
        (``lost_entries``); otherwise leader and follower would ping-pong
        the same probe."""
        if rejected <= self.match:
            return False
        if self.state is ProgressState.REPLICATE:
            # Pipelining went wrong (a lost or reordered append): fall back
            # to probing from the follower's hint.
            self.state = ProgressState.PROBE
            self.inflight.clear()
        elif self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, hint + 1), self.match + 1, 1)
        self.probe_sent = False
        return True

    def lost_entries(self, round_seen: int, follower_index: int) -> bool:
        """Did the follower lose entries it acknowledged? ``follower_index``
        is what a response to heartbeat round ``round_seen`` says it holds
        (its last index, or the hint of a rejection). Only a response to a
        round started after ``match`` last grew counts: an older or
        duplicated one may predate the acknowledgement."""
        return round_seen > self.match_round and follower_index < self.match

    def reset_after_loss(self, follower_index: int) -> None:
        """Forget what the follower acknowledged and probe from what it now
        says it holds; ``match`` drops to 0 until a probe confirms a match
        (its remaining entries are checked, not trusted)."""
        self.match = 0
        self.match_round = 0
        self.next = follower_index + 1
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.inflight.clear()
        self.snapshot = None

    def free_first_inflight(self) -> None:
        if self.inflight:
            self.inflight.popleft()
