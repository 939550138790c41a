"""One simulated server: a RaftCore plus the driver loop the real engine
will run (persist, then send, then apply, then advance)."""

from __future__ import annotations

import enum
import random
from typing import Any

from raftkv.raft.core import RaftCore
from raftkv.raft.ready import Ready
from raftkv.raft.sim.invariants import InvariantChecker
from raftkv.raft.sim.kv import RegisterKV
from raftkv.raft.sim.network import SimNetwork
from raftkv.raft.sim.storage import SimStorage
from raftkv.raft.types import EntryKind, RaftConfig, Role, Snapshot


class CrashPoint(enum.Enum):
    BEFORE_PERSIST = "before_persist"  # the Ready is lost entirely
    AFTER_PERSIST = "after_persist"  # durable, but no message left the node


class SimNode:
    def __init__(self, config: RaftConfig, seed: int, send_early: bool = False, lazy_commit: bool = False) -> None:
        self.send_early = send_early
        self.lazy_commit = lazy_commit
        self.id = config.node_id
        self.config = config
        self._seed = seed
        self.storage = SimStorage()
        self.alive = True
        self.incarnation = 0
        self.core: RaftCore
        self.kv: RegisterKV
        self.waiting_reads: list[tuple[int, bytes]] = []
        self.snapshots_installed = 0
        self.boot()

    def boot(self) -> None:
        rng = random.Random(self._seed * 1000 + self.incarnation)
        self.core = RaftCore(self.config, rng, self.storage.restored())
        self.kv = RegisterKV()
        snap = self.storage.snapshot
        if snap is not None:
            self.kv.restore(snap.data)
            self.core.snapshot_taken(snap.meta, snap.data)
        self.waiting_reads = []
        self.alive = True

    def crash(self) -> None:
        self.alive = False
        self.incarnation += 1

    def take_snapshot(self, retain: int) -> None:
        meta = self.core.applied_snapshot_meta()
        if self.storage.snapshot is not None and meta.index <= self.storage.snapshot.meta.index:
            return
        snap = Snapshot(meta, self.kv.snapshot())
        self.core.snapshot_taken(meta, snap.data, retain_entries=retain)
        self.storage.compact(snap)

    def process_ready(
        self, net: SimNetwork, now: int, checker: InvariantChecker, crash: CrashPoint | None
    ) -> tuple[list[tuple[int, Any]], list[bytes]]:
        """Run one driver iteration. Returns (applied (req_id, result) pairs,
        contexts of reads now servable). On a crash returns nothing."""
        core = self.core
        rd = core.ready()
        checker.on_ready(self, rd)
        durable = self.storage.hard_state
        hard = rd.hard_state
        # The real driver lets a leader send before its own fsync (Raft
        # thesis 10.2.1) unless its term or vote changed; model that too.
        sent_early = (
            self.send_early
            and core.role is Role.LEADER
            and rd.snapshot is None
            and (hard is None or (hard.term, hard.vote) == (durable.term, durable.vote))
        )
        if sent_early:
            for m in rd.messages:
                net.send(m, now)
        if crash is CrashPoint.BEFORE_PERSIST:
            self.crash()
            return [], []
        if self.lazy_commit and not rd.must_sync and rd.hard_state is not None:
            # A driver may skip the fsync when only the commit index moved;
            # a crash then forgets the newer commit index, which is fine.
            rd_durable = Ready(entries=rd.entries, snapshot=rd.snapshot)
            self.storage.persist(rd_durable)
        else:
            self.storage.persist(rd)
        if crash is CrashPoint.AFTER_PERSIST:
            self.crash()
            return [], []
        if not sent_early:
            for m in rd.messages:
                net.send(m, now)
        applied: list[tuple[int, Any]] = []
        if rd.snapshot is not None:
            self.kv.restore(rd.snapshot.data)
            self.snapshots_installed += 1
        for e in rd.committed_entries:
            if e.kind == EntryKind.NORMAL:
                r = self.kv.apply(e.data)
                if r is not None:
                    applied.append(r)
        for rs in rd.read_states:
            self.waiting_reads.append((rs.index, rs.ctx))
        core.advance(rd)
        servable: list[bytes] = []
        if self.waiting_reads:
            still = []
            for index, ctx in self.waiting_reads:
                if index <= core.applied:
                    servable.append(ctx)
                else:
                    still.append((index, ctx))
            self.waiting_reads = still
        return applied, servable
