"""A simulated network that loses, delays, duplicates and reorders messages
and can be partitioned (symmetric or one-way) and healed.

Every message travels as bytes through the real codec, so the simulation
exercises encoding as well.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass

from raftkv.raft.codec import decode_message, encode_message
from raftkv.raft.messages import Message


@dataclass(frozen=True, slots=True)
class NetworkFaults:
    drop: float = 0.0
    duplicate: float = 0.0
    min_delay: int = 0
    max_delay: int = 2


class SimNetwork:
    def __init__(self, rng: random.Random, faults: NetworkFaults) -> None:
        self._rng = rng
        self.faults = faults
        self._queue: list[tuple[int, int, bytes, str, str]] = []
        self._seq = 0
        self.blocked: set[tuple[str, str]] = set()
        self.sent = 0
        self.delivered = 0

    def send(self, m: Message, now: int) -> None:
        self.sent += 1
        if (m.frm, m.to) in self.blocked:
            return
        f = self.faults
        rng = self._rng
        if f.drop and rng.random() < f.drop:
            return
        data = encode_message(m)
        copies = 2 if f.duplicate and rng.random() < f.duplicate else 1
        for _ in range(copies):
            self._seq += 1
            at = now + rng.randint(f.min_delay, f.max_delay)
            # The random middle key reorders messages due at the same time.
            heapq.heappush(self._queue, (at, rng.random(), data, m.frm, m.to))

    def due(self, now: int) -> list[Message]:
        out: list[Message] = []
        q = self._queue
        while q and q[0][0] <= now:
            _, _, data, frm, to = heapq.heappop(q)
            # A partition that starts while a message is in flight cuts it too.
            if (frm, to) not in self.blocked:
                out.append(decode_message(data))
        self.delivered += len(out)
        return out

    def in_flight(self) -> int:
        return len(self._queue)

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
