"""Throughput of the core alone: 3 cores in one process, messages through
the real codec, no disk and no sockets. ``python -m raftkv.raft.bench``.

It bounds what the native engine can reach: whatever the driver adds
(fsync, TCP, the KV state machine) comes on top of this cost.
"""

from __future__ import annotations

import argparse
import random
import time

from raftkv.raft.codec import decode_message, encode_message
from raftkv.raft.core import RaftCore
from raftkv.raft.types import RaftConfig, RestoredState, Role


def run(total: int, batch: int, size: int) -> float:
    ids = ("n1", "n2", "n3")
    cores = {i: RaftCore(RaftConfig(i, ids), random.Random(k), RestoredState()) for k, i in enumerate(ids)}
    inbox: list[bytes] = []

    def pump() -> None:
        moved = True
        while moved:
            moved = False
            for c in cores.values():
                if c.has_ready():
                    rd = c.ready()
                    inbox.extend(encode_message(m) for m in rd.messages)
                    c.advance(rd)
                    moved = True
            while inbox:
                m = decode_message(inbox.pop())
                cores[m.to].step(m)
                moved = True

    while cores["n1"].role is not Role.LEADER:
        cores["n1"].tick()
        pump()
    leader = cores["n1"]
    payload = [b"x" * size] * batch
    start = time.perf_counter()
    base = leader.commit
    while leader.commit - base < total:
        leader.propose_batch(payload)
        pump()
    elapsed = time.perf_counter() - start
    return (leader.commit - base) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=100)
    args = parser.parse_args()
    rate = run(args.entries, args.batch, args.size)
    print(f"3 cores, batches of {args.batch} x {args.size} B: {rate:,.0f} committed entries/s")


if __name__ == "__main__":
    main()
