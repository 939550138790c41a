"""A simulated network on the virtual clock: it loses, delays, duplicates and
reorders encoded messages, can be partitioned (symmetric or one-way) and
healed, and -- as a nemesis -- delivers forged and corrupted frames.

Nodes hand it the bytes RaftDriver encoded (raftkv.raft.codec) and receive
bytes, which they decode and validate as NativeEngine does; so the codec
and its validation are on every message's path.
"""

from __future__ import annotations

import asyncio
import random
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from raftsim.forgery import Forger

# (sender as authenticated by the link, payload) -> None
Deliver = Callable[[str, bytes], None]


@dataclass(frozen=True, slots=True)
class NetworkFaults:
    drop: float = 0.0
    duplicate: float = 0.0
    max_delay: float = 0.002  # seconds of virtual time
    forge: float = 0.0  # probability that a message is followed by a forged copy


@dataclass
class NetworkStats:
    sent: int = 0
    delivered: int = 0
    forged: int = 0
    # A digest of every delivery (virtual time, link, payload): two runs of
    # a seed deliver the same messages at the same times iff they agree.
    trace: int = 0


class MessageStorm(RuntimeError):
    """Far more messages than a run needs: nodes are stuck in a loop."""


class SimNetwork:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        rng: random.Random,
        faults: NetworkFaults,
        forger: Forger,
        max_messages: int,
    ) -> None:
        self._loop = loop
        self.max_messages = max_messages
        self._rng = rng
        self.faults = faults
        self._forger = forger
        self._receivers: dict[str, Deliver] = {}
        self.blocked: set[tuple[str, str]] = set()
        self.stats = NetworkStats()

    def attach(self, node_id: str, deliver: Deliver) -> None:
        """``deliver`` receives messages for ``node_id`` from now on."""
        self._receivers[node_id] = deliver

    def detach(self, node_id: str) -> None:
        self._receivers.pop(node_id, None)

    def connected(self, frm: str, to: str) -> bool:
        """What the transport would report: a link that is up both ways to a running node."""
        return to in self._receivers and (frm, to) not in self.blocked and (to, frm) not in self.blocked

    def send(self, frm: str, to: str, data: bytes) -> None:
        stats = self.stats
        stats.sent += 1
        if stats.sent > self.max_messages:
            raise MessageStorm(f"more than {self.max_messages} messages: a livelock between nodes?")
        if (frm, to) in self.blocked:
            return
        f = self.faults
        rng = self._rng
        if f.drop and rng.random() < f.drop:
            return
        copies = 2 if f.duplicate and rng.random() < f.duplicate else 1
        call_later = self._loop.call_later
        for _ in range(copies):
            # Independent delays reorder messages.
            call_later(rng.uniform(0, f.max_delay), self._deliver, frm, to, data)
        if f.forge and rng.random() < f.forge:
            forged = self._forger.forge(frm, to, data, list(self._receivers))
            if forged is not None:
                stats.forged += 1
                link_sender, payload = forged
                call_later(rng.uniform(0, f.max_delay), self._deliver, link_sender, to, payload)

    def _deliver(self, frm: str, to: str, data: bytes) -> None:
        # A partition that starts while a message is in flight cuts it too.
        if (frm, to) in self.blocked:
            return
        deliver = self._receivers.get(to)
        if deliver is not None:
            stats = self.stats
            stats.delivered += 1
            stats.trace = zlib.crc32(data, zlib.crc32(f"{self._loop.time()!r} {frm} {to}".encode(), stats.trace))
            deliver(frm, data)

    def isolate(self, node: str, others: list[str]) -> None:
        for o in others:
            if o != node:
                self.blocked.add((node, o))
                self.blocked.add((o, node))

    def split(self, side_a: list[str], side_b: list[str]) -> None:
        for a in side_a:
            for b in side_b:
                self.blocked.add((a, b))
                self.blocked.add((b, a))

    def cut_one_way(self, frm: str, to: str) -> None:
        self.blocked.add((frm, to))

    def heal(self) -> None:
        self.blocked.clear()
