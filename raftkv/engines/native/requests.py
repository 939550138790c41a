"""Callers waiting on the native engine: proposals until their entry is
applied, reads until a ReadIndex round confirms them and the state machine
has caught up.

No I/O and no clocks: the engine arms the timeouts and feeds in what the
Raft core reports; these classes only keep the books, so they batch: every
caller that arrived since the driver last ran goes to the core in one call.
"""

from __future__ import annotations

import asyncio
import heapq
from typing import Any

from raftkv.engines.native.entry_codec import frame


class ProposalBook:
    """Proposals of this node, keyed by the sequence number framed into the entry.

    A proposal is queued (it certainly never left this node), then handed to
    the core: appended here as leader, or forwarded to the leader. The book
    counts ticks (``tick``) only to know how long a queued proposal waited.
    """

    def __init__(self, prefix: bytes) -> None:
        self._prefix = prefix
        self._next_seq = 1
        # seq -> the caller's future, for callers still waiting.
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        # Framed commands not yet handed to the core, their seqs, and the
        # tick each was queued at.
        self._queued_data: list[bytes] = []
        self._queued_seqs: list[int] = []
        self._queued_at: list[int] = []
        self._ticks = 0
        # Log index -> seq for entries this node appended as leader, so an
        # entry committed in their place tells us they can never commit.
        self._seq_at_index: dict[int, int] = {}
        # Seqs forwarded to a leader (as a follower) and still waiting, and
        # the (leader, term) they went to: if that leader goes away they may
        # or may not have reached it.
        self._forwarded: set[int] = set()
        self.forwarded_to: tuple[str, int] | None = None

    def __len__(self) -> int:
        return len(self._waiting)

    @property
    def has_queued(self) -> bool:
        return bool(self._queued_data)

    def add(self, command: bytes, future: asyncio.Future[Any]) -> int:
        seq = self._next_seq
        self._next_seq = seq + 1
        self._queued_data.append(frame(self._prefix, seq, command))
        self._queued_seqs.append(seq)
        self._queued_at.append(self._ticks)
        self._waiting[seq] = future
        return seq

    def take_queued(self) -> tuple[list[bytes], list[int]]:
        data, seqs = self._queued_data, self._queued_seqs
        self._queued_data, self._queued_seqs, self._queued_at = [], [], []
        return data, seqs

    def requeue(self, data: list[bytes], seqs: list[int]) -> None:
        """The core refused ``take_queued``'s batch: nothing left, wait again
        (as if queued now, ahead of anything queued since)."""
        now = self._ticks
        self._queued_data[:0] = data
        self._queued_seqs[:0] = seqs
        self._queued_at[:0] = [now] * len(seqs)

    def tick(self) -> None:
        self._ticks += 1

    def fail_queued_older_than(self, ticks: int, exc: BaseException) -> None:
        """Fail queued proposals that waited at least ``ticks`` ticks."""
        limit = self._ticks - ticks
        at = self._queued_at
        if not at or min(at) > limit:
            return
        keep = [i for i, t in enumerate(at) if t > limit]
        expired = [seq for i, seq in enumerate(self._queued_seqs) if at[i] <= limit]
        self._queued_data = [self._queued_data[i] for i in keep]
        self._queued_seqs = [self._queued_seqs[i] for i in keep]
        self._queued_at = [at[i] for i in keep]
        self.fail(expired, exc)

    def forwarded(self, seqs: list[int], leader: str, term: int) -> None:
        """``seqs`` went to ``leader`` at ``term`` (the caller failed any
        forwarded to another leader first, see fail_forwarded)."""
        self.forwarded_to = (leader, term)
        self._forwarded.update(seqs)

    def fail_forwarded(self, exc: BaseException) -> None:
        """The leader the forwarded proposals went to is gone or unreachable."""
        forwarded, self._forwarded = self._forwarded, set()
        self.forwarded_to = None
        for seq in forwarded:
            self._settle(seq, None, exc)

    def placed_at(self, seqs: list[int], first_index: int) -> None:
        """The leader (this node) appended ``seqs`` at consecutive indexes."""
        seq_at_index = self._seq_at_index
        for offset, seq in enumerate(seqs):
            seq_at_index[first_index + offset] = seq

    def fail(self, seqs: list[int], exc: BaseException) -> None:
        for seq in seqs:
            self._settle(seq, None, exc)

    def expire(self, seq: int, submitted: BaseException, not_submitted: BaseException) -> None:
        """The caller's timeout fired: fail it (with ``not_submitted`` if it
        is still queued, so certainly not applied) and stop waiting."""
        future = self._waiting.pop(seq, None)
        self._forwarded.discard(seq)
        if future is None or future.done():
            return
        if seq in self._queued_seqs:
            i = self._queued_seqs.index(seq)
            del self._queued_data[i], self._queued_seqs[i], self._queued_at[i]
            future.set_exception(not_submitted)
        else:
            future.set_exception(submitted)

    def applied(self, index: int, seq: int | None, result: Any) -> int | None:
        """The entry at ``index`` was applied; ``seq`` is set if it is ours.

        Returns the seq of a command of ours that this node (as leader) had
        appended at ``index`` and that a different committed entry replaced:
        a proposal is appended exactly once, so it can never commit and the
        caller should fail it as not applied.
        """
        lost = None
        if self._seq_at_index:
            expected = self._seq_at_index.pop(index, None)
            if expected is not None and expected != seq:
                lost = expected
        if seq is not None:
            future = self._waiting.pop(seq, None)
            if future is not None:
                self._forwarded.discard(seq)
                if not future.done():
                    future.set_result(result)
        return lost

    def forget_through(self, index: int) -> None:
        """A snapshot replaced the log up to ``index``: which of our entries
        made it in is unknowable, so those callers wait for their timeout."""
        for i in [i for i in self._seq_at_index if i <= index]:
            del self._seq_at_index[i]

    def fail_all(self, exc: BaseException) -> None:
        waiting, self._waiting = self._waiting, {}
        self._queued_data, self._queued_seqs, self._queued_at = [], [], []
        self._seq_at_index.clear()
        self._forwarded.clear()
        for future in waiting.values():
            if not future.done():
                future.set_exception(exc)

    def _settle(self, seq: int, result: Any, exc: BaseException | None) -> None:
        self._forwarded.discard(seq)
        future = self._waiting.pop(seq, None)
        if future is None or future.done():
            return  # timed out or cancelled already, or proposed before a restart
        if exc is None:
            future.set_result(result)
        else:
            future.set_exception(exc)


class ReadBook:
    """Linearizable reads: queued -> in a ReadIndex round -> waiting for apply."""

    def __init__(self, resend_after_ticks: int = 10, context_prefix: bytes = b"") -> None:
        """``context_prefix`` must differ between lives of a node (a random
        start-up id): round numbers restart at 1 after a restart, and a
        leader's late answer to a round of the previous life must not
        confirm a new round at an old read index (a stale read)."""
        self._context_prefix = context_prefix
        self._queued: list[asyncio.Future[None]] = []
        self._queued_at: list[int] = []  # the tick each queued caller arrived at
        self._rounds: dict[bytes, list[asyncio.Future[None]]] = {}
        self._next_round = 1
        # A round unanswered this many ticks after it was sent is sent again:
        # its request or answer may have been lost on a broken connection.
        self.resend_after_ticks = resend_after_ticks
        self._ticks = 0
        self._sent_at: dict[bytes, int] = {}
        # (read index, tie-breaker, callers) waiting for applied >= read index.
        self._until_applied: list[tuple[int, int, list[asyncio.Future[None]]]] = []

    @property
    def has_queued(self) -> bool:
        return bool(self._queued)

    @property
    def in_flight(self) -> list[bytes]:
        """Contexts of rounds sent to the core and not yet answered."""
        return list(self._rounds)

    def add(self, future: asyncio.Future[None]) -> None:
        self._queued.append(future)
        self._queued_at.append(self._ticks)

    def is_queued(self, future: asyncio.Future[None]) -> bool:
        """True while the caller waits for a leader: its read was never sent."""
        return any(f is future for f in self._queued)

    def start_round(self) -> bytes | None:
        """Gather every queued caller into one round; its context, or None."""
        callers = [f for f in self._queued if not f.done()]
        self._queued, self._queued_at = [], []
        if not callers:
            return None
        ctx = self._context_prefix + self._next_round.to_bytes(8, "big")
        self._next_round += 1
        self._rounds[ctx] = callers
        self._sent_at[ctx] = self._ticks
        return ctx

    def tick(self) -> list[bytes]:
        """Advance logical time; the rounds to send again now."""
        self._ticks = now = self._ticks + 1
        due = [ctx for ctx, sent in self._sent_at.items() if now - sent >= self.resend_after_ticks]
        for ctx in due:
            self._sent_at[ctx] = now
        return due

    def requeue_round(self, ctx: bytes) -> None:
        """Round ``ctx`` cannot be sent now (no usable leader): its callers
        wait in the queue again, as if they arrived now. A read changes
        nothing, so asking a later leader is always safe."""
        self._sent_at.pop(ctx, None)
        callers = [f for f in self._rounds.pop(ctx, ()) if not f.done()]
        self._queued[:0] = callers
        self._queued_at[:0] = [self._ticks] * len(callers)

    def fail_queued_older_than(self, ticks: int, exc: BaseException) -> None:
        """Fail queued callers that waited at least ``ticks`` ticks."""
        limit = self._ticks - ticks
        at = self._queued_at
        if not at or min(at) > limit:
            return
        expired = [f for f, t in zip(self._queued, at) if t <= limit]
        kept = [(f, t) for f, t in zip(self._queued, at) if t > limit]
        self._queued = [f for f, _ in kept]
        self._queued_at = [t for _, t in kept]
        for future in expired:
            if not future.done():
                future.set_exception(exc)

    def fail_round(self, ctx: bytes, exc: BaseException) -> None:
        self._sent_at.pop(ctx, None)
        for future in self._rounds.pop(ctx, ()):
            if not future.done():
                future.set_exception(exc)

    def confirmed(self, ctx: bytes, index: int, applied: int) -> None:
        """The core confirmed round ``ctx`` at read index ``index``."""
        callers = self._rounds.pop(ctx, None)
        if callers is None:
            return  # a duplicate answer to a round we re-sent
        del self._sent_at[ctx]
        if index <= applied:
            _release(callers)
        else:
            heapq.heappush(self._until_applied, (index, id(callers), callers))

    def applied(self, applied: int) -> None:
        waiting = self._until_applied
        while waiting and waiting[0][0] <= applied:
            _release(heapq.heappop(waiting)[2])

    def fail_all(self, exc: BaseException) -> None:
        groups = [self._queued, *self._rounds.values(), *(w[2] for w in self._until_applied)]
        self._queued, self._rounds, self._until_applied = [], {}, []
        self._queued_at = []
        self._sent_at.clear()
        for callers in groups:
            for future in callers:
                if not future.done():
                    future.set_exception(exc)


def _release(callers: list[asyncio.Future[None]]) -> None:
    for future in callers:
        if not future.done():
            future.set_result(None)
