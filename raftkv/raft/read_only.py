"""Leader-side bookkeeping for ReadIndex reads.

Every heartbeat broadcast is a numbered *round*; followers echo the number.
A read that arrived while round r was the latest started one needs round
r + 1 (a round started after the read) to be acknowledged by a quorum,
which proves no newer leader existed at the moment the read arrived. One
round confirms every read queued for it, so reads are batched for free.
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple

from raftkv.raft.quorum import quorum_index


class PendingRead(NamedTuple):
    round: int
    index: int
    ctx: bytes
    requester: str


class ReadIndexQueue:
    __slots__ = ("round", "outstanding", "_pending", "_acked")

    def __init__(self) -> None:
        self.round = 0  # the latest round started
        self.outstanding = False  # a started round is not yet confirmed
        self._pending: deque[PendingRead] = deque()
        self._acked: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, ctx: bytes, requester: str, index: int) -> bool:
        """Queue a read; True if the caller should start a round now."""
        self._pending.append(PendingRead(self.round + 1, index, ctx, requester))
        return not self.outstanding

    def start_round(self) -> int:
        self.round += 1
        self.outstanding = True
        return self.round

    def ack(self, peer: str, seq: int) -> None:
        if seq > self._acked.get(peer, 0):
            self._acked[peer] = seq

    def confirmed(self, self_id: str, voters: tuple[str, ...]) -> list[PendingRead]:
        """Pop every read whose round a quorum of voters acknowledged."""
        self._acked[self_id] = self.round
        acked = self._acked
        quorum_round = quorum_index((acked.get(v, 0) for v in voters), len(voters)) if voters else self.round
        if quorum_round >= self.round:
            self.outstanding = False
        done: list[PendingRead] = []
        pending = self._pending
        while pending and pending[0].round <= quorum_round:
            done.append(pending.popleft())
        return done

    def clear(self) -> None:
        self._pending.clear()
        self._acked.clear()
        self.outstanding = False
