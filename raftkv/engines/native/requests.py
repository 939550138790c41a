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
    """Proposals of this node, keyed by the sequence number framed into the entry."""

    def __init__(self, prefix: bytes) -> None:
        self._prefix = prefix
        self._next_seq = 1
        # seq -> the caller's future, for callers still waiting.
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        # Framed commands not yet handed to the core, and their seqs.
        self._queued_data: list[bytes] = []
        self._queued_seqs: list[int] = []
        # Log index -> seq for entries this node appended as leader, so an
        # entry committed in their place tells us they can never commit.
        self._seq_at_index: dict[int, int] = {}

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
        self._waiting[seq] = future
        return seq

    def take_queued(self) -> tuple[list[bytes], list[int]]:
        data, seqs = self._queued_data, self._queued_seqs
        self._queued_data, self._queued_seqs = [], []
        return data, seqs

    def placed_at(self, seqs: list[int], first_index: int) -> None:
        """The leader (this node) appended ``seqs`` at consecutive indexes."""
        seq_at_index = self._seq_at_index
        for offset, seq in enumerate(seqs):
            seq_at_index[first_index + offset] = seq

    def fail(self, seqs: list[int], exc: BaseException) -> None:
        for seq in seqs:
            self._settle(seq, None, exc)

    def expire(self, seq: int, exc: BaseException) -> None:
        """The caller's timeout fired: fail it and stop waiting."""
        future = self._waiting.pop(seq, None)
        if future is not None and not future.done():
            future.set_exception(exc)

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
            if future is not None and not future.done():
                future.set_result(result)
        return lost

    def forget_through(self, index: int) -> None:
        """A snapshot replaced the log up to ``index``: which of our entries
        made it in is unknowable, so those callers wait for their timeout."""
        for i in [i for i in self._seq_at_index if i <= index]:
            del self._seq_at_index[i]

    def fail_all(self, exc: BaseException) -> None:
        waiting, self._waiting = self._waiting, {}
        self._queued_data, self._queued_seqs = [], []
        self._seq_at_index.clear()
        for future in waiting.values():
            if not future.done():
                future.set_exception(exc)

    def _settle(self, seq: int, result: Any, exc: BaseException | None) -> None:
        future = self._waiting.pop(seq, None)
        if future is None or future.done():
            return  # timed out or cancelled already, or proposed before a restart
        if exc is None:
            future.set_result(result)
        else:
            future.set_exception(exc)


class ReadBook:
    """Linearizable reads: queued -> in a ReadIndex round -> waiting for apply."""

    def __init__(self, resend_after_ticks: int = 10) -> None:
        self._queued: list[asyncio.Future[None]] = []
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

    def start_round(self) -> bytes | None:
        """Gather every queued caller into one round; its context, or None."""
        callers = [f for f in self._queued if not f.done()]
        self._queued = []
        if not callers:
            return None
        ctx = self._next_round.to_bytes(8, "big")
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
        self._sent_at.clear()
        for callers in groups:
            for future in callers:
                if not future.done():
                    future.set_exception(exc)


def _release(callers: list[asyncio.Future[None]]) -> None:
    for future in callers:
        if not future.done():
            future.set_result(None)
