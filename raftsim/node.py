"""One simulated server: the real RaftDriver (with the real ProposalBook,
ReadBook and recovery) over a simulated disk and network.

``start()`` does what NativeEngine.start() does -- load the newest snapshot,
open the WAL, ``recover()``, build the core, hand the restored snapshot to
it, compact -- with the simulator's disk, executors and seeded randomness.
Peer messages are decoded and checked as NativeEngine._on_peer_message
does, then go to ``driver.step_message``; a ticker calls ``driver.tick``
like NativeEngine._tick. ``crash()`` is a power cut: the tasks stop where
they are, the executors drop unfinished work, unsynced writes are lost.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from raftkv.engines.native.driver import RaftDriver
from raftkv.engines.native.entry_codec import origin_prefix
from raftkv.engines.native.recovery import recover, snapshot_meta_from_json
from raftkv.engines.native.requests import ProposalBook, ReadBook
from raftkv.errors import NoLeaderError, OutcomeUnknownError, ReadTimeoutError
from raftkv.raft.codec import CodecError, decode_message
from raftkv.raft.core import RaftCore
from raftkv.raft.ready import Ready
from raftkv.raft.types import RaftConfig, Role
from raftkv.storage import WAL, SnapshotStore
from raftsim.disk import NodeCrashed, SimDisk, SimSnapshotStore, SimWAL
from raftsim.forgery import out_of_range_field
from raftsim.kv import RegisterKV
from raftsim.loop import SimExecutor, VirtualTimeLoop

if TYPE_CHECKING:
    from raftsim.invariants import InvariantChecker
    from raftsim.network import SimNetwork

log = logging.getLogger(__name__)


class ObservedCore(RaftCore):
    """The real core; every Ready and every apply is shown to the checker."""

    node: SimNode

    def ready(self) -> Ready:
        rd = super().ready()
        self.node.checker.on_ready(self.node, rd)
        return rd

    def applied_to(self, index: int) -> None:
        lo = self.applied + 1
        if index >= lo and self.log.offset < lo:
            self.node.checker.on_applied(self.node, self.log.slice(lo, index))
        super().applied_to(index)


class NodeOptions:
    def __init__(self, rng: random.Random, election_ticks: int) -> None:
        self.tick = 0.05
        self.election_ticks = election_ticks
        self.snapshot_every = rng.choice((5, 20, 60, 10_000))
        self.snapshot_retain = rng.choice((0, 0, 2, 10))
        self.direct_io = rng.random() < 0.5
        self.fsync_delay = rng.choice((0.0, 0.002, 0.02))  # virtual seconds, upper bound
        self.snapshot_delay = rng.choice((0.0, 0.01, 0.1))
        self.clock_skew = rng.choice((0.0, 0.05, 0.2))  # ticks run up to this much fast or slow
        self.p_sync_power_cut = rng.choice((0.0, 0.003, 0.01))  # per sync


class SimNode:
    def __init__(
        self,
        config: RaftConfig,
        peer_ids: frozenset[str],
        seed: int,
        options: NodeOptions,
        network: SimNetwork,
        checker: InvariantChecker,
        on_problem: Callable[[str], None],
    ) -> None:
        self.id = config.node_id
        self.config = config
        # The deployment's configured peers (NativeEngine: config.peers).
        self.peer_ids = peer_ids
        self.options = options
        self.disk = SimDisk()
        self.network = network
        self.checker = checker
        self._on_problem = on_problem
        self._rng = random.Random(seed)
        self.alive = False
        self.incarnation = 0
        self.core: ObservedCore
        self.driver: RaftDriver
        self.kv: RegisterKV
        self.proposals: ProposalBook
        self.reads: ReadBook
        self._wal: SimWAL
        self._store: SimSnapshotStore
        self._executors: list[SimExecutor] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.rejected_frames = 0
        self.crashes_in_sync = 0
        self._saved_before = 0  # snapshots saved by earlier incarnations
        self.failures: list[str] = []

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Boot from the disk, as NativeEngine.start() does."""
        loop = cast(VirtualTimeLoop, asyncio.get_running_loop())
        rng = self._rng
        opts = self.options
        self.incarnation += 1
        machine = RegisterKV()
        store = SimSnapshotStore(self.disk)
        loaded = store.load_latest()
        snapshot_meta = None
        if loaded is not None:
            snapshot_meta = snapshot_meta_from_json(loaded[0])
        sync_rng = random.Random(rng.getrandbits(32))
        wal = SimWAL.open(
            self.disk,
            random.Random(rng.getrandbits(32)),
            opts.direct_io,
            lambda: bool(opts.p_sync_power_cut)
            and sync_rng.random() < opts.p_sync_power_cut
            and self._power_cut_in_sync(),
        )
        # RegisterKV lives in memory (no store of its own): store_applied 0,
        # so recovery has the snapshot restored into it.
        recovery = recover(snapshot_meta, wal.recovered, 0)
        if loaded is not None and recovery.restore_snapshot:
            machine.restore(loaded[1])
        core = ObservedCore(self.config, random.Random(rng.getrandbits(32)), recovery.restored)
        core.node = self
        core.applied_to(recovery.applied)
        if loaded is not None and snapshot_meta is not None:
            core.snapshot_taken(snapshot_meta, loaded[1])
        if recovery.compact_to:
            try:
                wal.compact(recovery.compact_to)
            except NodeCrashed:
                return  # the power failed again while starting: still down
        prefix = origin_prefix(f"{self.id}/{rng.getrandbits(64):016x}".encode())
        proposals = ProposalBook(prefix)
        # The start-up id doubles as the read-context prefix (see ReadBook).
        reads = ReadBook(resend_after_ticks=opts.election_ticks, context_prefix=prefix)
        wal_executor = SimExecutor(loop, random.Random(rng.getrandbits(32)), opts.fsync_delay)
        snapshot_executor = SimExecutor(loop, random.Random(rng.getrandbits(32)), opts.snapshot_delay)
        network = self.network
        my_id = self.id
        driver = RaftDriver(
            core,
            cast(WAL, wal),
            cast(SnapshotStore, store),
            machine,
            lambda to, data: network.send(my_id, to, data),
            proposals,
            reads,
            origin_prefix=prefix,
            snapshot_every=opts.snapshot_every,
            snapshot_retain=opts.snapshot_retain,
            snapshot_index=snapshot_meta.index if snapshot_meta is not None else 0,
            stale_after=recovery.stale_after,
            wal_executor=wal_executor,
            snapshot_executor=snapshot_executor,
            peer_connected=lambda peer: network.connected(my_id, peer),
            leaderless_wait_ticks=4 * opts.election_ticks,
        )
        self.core, self.driver, self.kv = core, driver, machine
        self.proposals, self.reads = proposals, reads
        self._wal, self._store = wal, store
        self._executors = [wal_executor, snapshot_executor]
        incarnation = self.incarnation
        self._tasks = [
            loop.create_task(self._run_driver(driver, incarnation), name=f"driver {my_id}#{incarnation}"),
            loop.create_task(self._tick(driver), name=f"ticker {my_id}#{incarnation}"),
        ]
        network.attach(my_id, self._on_peer_message)
        self.alive = True

    def crash(self) -> None:
        """Power cut: nothing more runs, unsynced writes are lost or torn."""
        if not self.alive:
            return
        self.alive = False
        self.network.detach(self.id)
        for executor in self._executors:
            executor.crash()
        self._wal.power_cut()
        self._store.crashed = True
        self._saved_before += self._store.saves
        for task in self._tasks:
            task.cancel()

    def _power_cut_in_sync(self) -> bool:
        """The power fails while the WAL syncs: the node is down from here on."""
        self.crashes_in_sync += 1
        self.crash()
        return True

    async def _run_driver(self, driver: RaftDriver, incarnation: int) -> None:
        try:
            await driver.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if self.alive and self.incarnation == incarnation:
                # The real engine goes silent here; in the simulation no
                # storage call may fail, so this is a finding.
                self._on_problem(f"{self.id}: the Raft driver failed: {exc!r}")
                self.crash()

    async def _tick(self, driver: RaftDriver) -> None:
        opts = self.options
        rng = random.Random(self._rng.getrandbits(32))
        base = opts.tick
        skew = opts.clock_skew
        while True:
            await asyncio.sleep(base * (1 + rng.uniform(-skew, skew)) if skew else base)
            driver.tick()

    def _on_peer_message(self, sender: str, payload: bytes) -> None:
        """NativeEngine._on_peer_message: decode, check the sender, step."""
        try:
            message = decode_message(payload)
        except CodecError:
            self.rejected_frames += 1
            return
        core = self.core
        if message.to != self.id or message.frm != sender or (
            sender not in self.peer_ids and sender not in core.voters and sender not in core.learners
        ):
            self.rejected_frames += 1
            return
        bad = out_of_range_field(message)
        if bad is not None:
            self._on_problem(f"{self.id}: the codec accepted a message with {bad}: {message}")
            return
        self.driver.step_message(message)

    # ------------------------------------------------------------- requests

    async def propose(self, command: bytes, timeout: float) -> Any:
        """NativeEngine.propose."""
        loop = asyncio.get_running_loop()
        proposals = self.proposals
        future: asyncio.Future[Any] = loop.create_future()
        seq = proposals.add(command, future)
        self.driver.wake()
        timer = loop.call_later(
            timeout,
            proposals.expire,
            seq,
            OutcomeUnknownError("no result in time; the write may or may not have been applied"),
            NoLeaderError("no leader was usable in time; the write was not submitted"),
        )
        try:
            return await future
        finally:
            timer.cancel()

    async def read_fence(self, timeout: float) -> None:
        """NativeEngine.read_fence."""
        loop = asyncio.get_running_loop()
        reads = self.reads
        future: asyncio.Future[None] = loop.create_future()
        reads.add(future)
        self.driver.wake()

        def expire() -> None:
            if future.done():
                return
            if reads.is_queued(future):
                future.set_exception(NoLeaderError("no leader was usable in time; the read was not submitted"))
            else:
                future.set_exception(ReadTimeoutError("could not confirm the read in time"))

        timer = loop.call_later(timeout, expire)
        try:
            await future
        finally:
            timer.cancel()

    # ---------------------------------------------------------- inspection

    @property
    def snapshots_saved(self) -> int:
        return self._saved_before + (self._store.saves if self.alive else 0)

    @property
    def applied(self) -> int:
        return self.core.applied

    def is_leader(self) -> bool:
        return self.alive and self.core.role is Role.LEADER
