"""NativeEngine: our own Raft (raftkv.raft) behind the Engine interface.

Everything runs on the node's asyncio loop -- the HTTP API, the transport,
the ticker and the Ready loop -- so the state machine needs no lock; only
fsyncs and snapshot writes go to worker threads (see driver.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from dataclasses import dataclass
from typing import Any

from raftkv.config import NodeConfig, parse_host_port
from raftkv.engine import Engine, EngineStatus, Member, StateMachine, StoredStateMachine
from raftkv.engines.native.driver import RaftDriver
from raftkv.engines.native.entry_codec import origin_prefix
from raftkv.engines.native.readiness import readiness
from raftkv.engines.native.recovery import recover, snapshot_meta_from_json
from raftkv.engines.native.requests import ProposalBook, ReadBook
from raftkv.metrics import NodeMetrics
from raftkv.kv.store import LmdbStore
from raftkv.errors import (
    EngineStoppedError,
    NoLeaderError,
    NotLeaderError,
    OutcomeUnknownError,
    ReadTimeoutError,
)
from raftkv.raft.codec import CodecError, decode_message
from raftkv.raft.core import RaftCore
from raftkv.raft.types import ProposalDropped, RaftConfig, Role
from raftkv.storage import WAL, SnapshotStore
from raftkv.tls import peer_tls_for
from raftkv.transport.errors import PeerProtocolError
from raftkv.transport.tcp import TcpTransport

log = logging.getLogger(__name__)

_ROLE_NAMES = {
    Role.LEADER: "leader",
    Role.FOLLOWER: "follower",
    Role.CANDIDATE: "candidate",
    Role.PRE_CANDIDATE: "candidate",
}


@dataclass(frozen=True)
class NativeOptions:
    """Timing and snapshot knobs; docs/native-engine.md argues the defaults."""

    tick_ms: int = 50
    heartbeat_ticks: int = 1
    election_ticks: int = 6  # the core randomizes each timeout to [6, 12) ticks
    snapshot_every: int = 10_000  # applied entries between snapshots
    snapshot_retain: int = 5_000  # entries kept in memory after one, for slow followers
    max_entries_per_msg: int = 1024
    # Appends above this are cut into parts; the transport refuses frames
    # over twice this, and snapshots travel in chunks of at most half of it.
    max_message_bytes: int = 8 << 20
    # A write or linearizable read that finds no usable leader waits this
    # many ticks for one before answering no_leader; None: twice the longest
    # randomized election timeout (2 * 2 * election_ticks), i.e. an election
    # and one split-vote retry.
    no_leader_wait_ticks: int | None = None

    @property
    def leaderless_wait_ticks(self) -> int:
        if self.no_leader_wait_ticks is not None:
            return self.no_leader_wait_ticks
        return 4 * self.election_ticks

    def __post_init__(self) -> None:
        if self.tick_ms < 1:
            raise ValueError(f"tick_ms must be at least 1, got {self.tick_ms}")
        if self.snapshot_every < 1 or self.snapshot_retain < 0:
            raise ValueError("snapshot_every must be >= 1 and snapshot_retain >= 0")
        if self.max_message_bytes < 4096:
            raise ValueError(f"max_message_bytes must be at least 4096, got {self.max_message_bytes}")

    @classmethod
    def from_env(cls, environ: dict[str, str] | os._Environ[str] = os.environ) -> NativeOptions:
        """Options from RAFTKV_TICK_MS, RAFTKV_ELECTION_TICKS, RAFTKV_SNAPSHOT_EVERY."""
        values: dict[str, int] = {}
        for field_name, var in (
            ("tick_ms", "RAFTKV_TICK_MS"),
            ("election_ticks", "RAFTKV_ELECTION_TICKS"),
            ("snapshot_every", "RAFTKV_SNAPSHOT_EVERY"),
        ):
            text = environ.get(var)
            if text is None:
                continue
            try:
                values[field_name] = int(text)
            except ValueError:
                raise ValueError(f"{var} must be an integer, got {text!r}") from None
        return cls(**values)


class NativeEngine(Engine):
    name = "native"

    def __init__(
        self,
        config: NodeConfig,
        machine: StateMachine,
        options: NativeOptions | None = None,
        metrics: NodeMetrics | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics if metrics is not None else NodeMetrics(config.data_dir)
        self.options = options if options is not None else NativeOptions.from_env()
        self._machine = machine
        self._id = config.node_id
        self._members = [Member(id=nid, peer_addr=addr) for nid, addr in sorted(config.peers.items())]
        self._core: RaftCore | None = None
        self._driver: RaftDriver | None = None
        self._transport: TcpTransport | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._wal: WAL | None = None
        self._proposals: ProposalBook | None = None
        # Resend an unanswered ReadIndex round after an election timeout.
        self._reads = ReadBook(
            resend_after_ticks=self.options.election_ticks,
            context_prefix=random.getrandbits(64).to_bytes(8, "big"),
        )
        self._stopped = False  # stop() was called
        self._failed = False  # the driver died; the node is silent until restarted

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._core is not None or self._stopped:
            raise RuntimeError("a NativeEngine starts once")
        config, options = self.config, self.options
        data_dir = config.data_dir
        snapshots = SnapshotStore(data_dir / "snapshots")
        loaded = await asyncio.to_thread(snapshots.load_latest)
        snapshot_meta = None
        if loaded is not None:
            snapshot_meta = snapshot_meta_from_json(loaded[0])
        # The WAL first: its lock keeps a second process off this data dir
        # before that process could open (and write to) the store.
        wal = await asyncio.to_thread(WAL.open, data_dir / "wal")
        try:
            store_applied = await self._open_machine_store()
            recovery = recover(snapshot_meta, wal.recovered, store_applied)
            if recovery.restore_snapshot:
                self._restore_machine(loaded[1] if loaded is not None else None, recovery.applied)
            raft_config = RaftConfig(
                node_id=self._id,
                voters=tuple(sorted(config.peers)),
                election_ticks=options.election_ticks,
                heartbeat_ticks=options.heartbeat_ticks,
                max_entries_per_msg=options.max_entries_per_msg,
                max_snapshot_chunk=min(1 << 20, options.max_message_bytes // 2),
            )
            core = RaftCore(raft_config, random.Random(), recovery.restored)
            # What the state machine's store already holds is not applied again.
            core.applied_to(recovery.applied)
            if loaded is not None and snapshot_meta is not None:
                core.snapshot_taken(snapshot_meta, loaded[1])  # so we can send it to laggards
            if recovery.compact_to:
                await asyncio.to_thread(wal.compact, recovery.compact_to)
        except BaseException:
            wal.close()
            raise
        # A random start-up id in the stamp: sequence numbers restart at 1 after
        # a restart, and must never match an entry proposed before it.
        prefix = origin_prefix(f"{self._id}/{random.getrandbits(64):016x}".encode())
        self._proposals = ProposalBook(prefix)
        transport = TcpTransport(
            self._id,
            listen_addr=parse_host_port(config.peer_addr),
            peer_addrs={
                nid: parse_host_port(addr) for nid, addr in config.peers.items() if nid != self._id
            },
            on_message=self._on_peer_message,
            max_frame_bytes=2 * options.max_message_bytes,
            cluster_id=config.cluster_id,
            tls=peer_tls_for(config),
        )
        driver = RaftDriver(
            core,
            wal,
            snapshots,
            self._machine,
            transport.send,
            self._proposals,
            self._reads,
            origin_prefix=prefix,
            snapshot_every=options.snapshot_every,
            snapshot_retain=options.snapshot_retain,
            snapshot_index=snapshot_meta.index if snapshot_meta is not None else 0,
            stale_after=recovery.stale_after,
            max_message_bytes=options.max_message_bytes,
            peer_connected=lambda peer: _connected(transport, peer),
            leaderless_wait_ticks=options.leaderless_wait_ticks,
            metrics=self.metrics,
        )
        try:
            await transport.start()
        except BaseException:
            wal.close()
            raise
        self._core, self._driver, self._transport, self._wal = core, driver, transport, wal
        self._tasks = [
            asyncio.create_task(self._run_driver(driver), name=f"raft driver {self._id}"),
            asyncio.create_task(self._tick(driver), name=f"raft ticker {self._id}"),
        ]
        log.info(
            "node %s: native engine started at term %d, log %d..%d, snapshot %s",
            self._id, core.term, core.log.offset, core.log.last_index(),
            snapshot_meta.index if snapshot_meta is not None else "none",
        )

    async def _open_machine_store(self) -> int:
        """Open the state machine's LMDB store in the data dir (a stored
        state machine); the log index it has applied (0: none)."""
        machine = self._machine
        if not isinstance(machine, StoredStateMachine):
            return 0
        store = await asyncio.to_thread(LmdbStore, self.config.data_dir / "kv")
        if store.rebuilt:
            log.warning(
                "node %s: the state machine's store was not closed cleanly before a reboot, so it "
                "cannot be trusted; rebuilding it from the snapshot and the WAL", self._id,
            )
        machine.attach_store(store)
        return machine.applied_index

    def _restore_machine(self, data: bytes | None, index: int) -> None:
        """The state machine as of the snapshot ``data`` at ``index`` (None:
        the empty state, at index 0)."""
        machine = self._machine
        if isinstance(machine, StoredStateMachine):
            if data is None:
                machine.clear(index)
            else:
                machine.restore(data, index)
        elif data is not None:
            machine.restore(data)

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        driver, transport, wal = self._driver, self._transport, self._wal
        if driver is None:
            return
        driver.request_stop()
        ticker = self._tasks[1]
        ticker.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        assert transport is not None and wal is not None
        await transport.stop()
        await asyncio.to_thread(wal.close)
        if isinstance(self._machine, StoredStateMachine):
            await asyncio.to_thread(self._machine.close_store)

    async def _run_driver(self, driver: RaftDriver) -> None:
        try:
            await driver.run()
        except Exception:
            # Already logged by the driver. Without durable storage this node
            # must not take part in Raft any more: go silent, like a crash.
            self._failed = True
            self._tasks[1].cancel()
            if self._transport is not None:
                await self._transport.stop()

    async def _tick(self, driver: RaftDriver) -> None:
        interval = self.options.tick_ms / 1000
        # One tick per sleep, never a burst to "catch up": a loop that was
        # stalled must not count the stall as silence from the leader.
        while True:
            await asyncio.sleep(interval)
            driver.tick()

    def _on_peer_message(self, sender: str, payload: bytes) -> None:
        core, driver = self._core, self._driver
        if core is None or driver is None or self._stopped or self._failed:
            return
        # A refused message never reaches the core; raising PeerProtocolError
        # makes the transport close the connection it came on (and log once).
        if sender not in self.config.peers and sender not in core.voters and sender not in core.learners:
            raise PeerProtocolError(f"{sender!r} is not a member of this cluster")
        try:
            message = decode_message(payload)
        except CodecError as exc:
            raise PeerProtocolError(f"malformed message: {exc}") from None
        if message.to != self._id or message.frm != sender:
            raise PeerProtocolError(f"message addressed {message.frm!r} -> {message.to!r} on {sender!r}'s connection")
        driver.step_message(message)

    # ------------------------------------------------------------- requests

    def _running(self) -> tuple[RaftCore, RaftDriver]:
        core, driver = self._core, self._driver
        if core is None or driver is None or self._stopped:
            raise EngineStoppedError("the engine is not running")
        if self._failed:
            raise EngineStoppedError(f"the engine failed ({self.failure}); restart the node")
        return core, driver

    async def propose(self, command: bytes, timeout: float) -> Any:
        # Without a usable leader the proposal waits in the book for one (the
        # driver fails it as not submitted after options.leaderless_wait_ticks).
        _core, driver = self._running()
        proposals = self._proposals
        assert proposals is not None
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        seq = proposals.add(command, future)
        driver.wake()
        timer = loop.call_later(timeout, _expire_proposal, proposals, seq, timeout)
        try:
            return await future
        finally:
            timer.cancel()

    async def read_fence(self, timeout: float) -> None:
        _core, driver = self._running()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._reads.add(future)
        driver.wake()
        timer = loop.call_later(timeout, _expire_read, self._reads, future, timeout)
        try:
            await future
        finally:
            timer.cancel()

    @property
    def failure(self) -> str | None:
        """What stopped the driver, for status and errors; None while it runs."""
        driver = self._driver
        if not self._failed or driver is None:
            return None
        exc = driver.failure
        return "the Raft driver stopped" if exc is None else f"{type(exc).__name__}: {exc}"

    def status(self) -> EngineStatus:
        core = self._core
        if core is None:
            return EngineStatus(
                self._id, "unknown", 0, None, 0, 0, self.name, list(self._members),
                not_ready_reason="the engine is not running",
            )
        voters, learners = set(core.voters), set(core.learners)
        addrs = self.config.peers
        members = [
            Member(id=nid, peer_addr=addrs.get(nid, ""), voter=nid in voters)
            for nid in sorted(voters | learners)
        ]
        role = _ROLE_NAMES[core.role]
        if self._id in learners:
            role = "learner"
        failure = self.failure
        down = self._stopped or failure is not None
        not_ready: str | None
        if failure is not None:
            role, not_ready = "failed", f"the engine failed: {failure}"
        elif self._stopped:
            role, not_ready = "unknown", "the engine is stopped"
        else:
            not_ready = readiness(core, core.applied, None, self.options.election_ticks)
        return EngineStatus(
            node_id=self._id,
            role=role,
            term=core.term,
            leader_id=core.leader_id if not down else None,
            commit_index=core.commit,
            applied_index=core.applied,
            engine=self.name,
            members=members,
            failure=failure,
            not_ready_reason=not_ready,
        )

    async def transfer_leadership(self, target_id: str | None, timeout: float) -> None:
        core, driver = self._running()
        if target_id is not None and target_id not in core.voters:
            raise ValueError(f"unknown node id {target_id!r}; voters: {sorted(core.voters)}")
        old_leader = core.leader_id
        if old_leader is None:
            raise NoLeaderError("no leader is known; the transfer was not submitted")
        if target_id == old_leader:
            return
        try:
            # On a follower the core forwards the request to the leader.
            driver.transfer_leadership(target_id)
        except ProposalDropped as exc:
            raise NoLeaderError(str(exc)) from None
        except ValueError as exc:
            raise NotLeaderError(f"cannot transfer leadership: {exc}", old_leader) from None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            await asyncio.sleep(self.options.tick_ms / 1000 / 5)
            leader = core.leader_id
            if leader is not None and leader != old_leader and target_id in (None, leader):
                return
        raise OutcomeUnknownError(f"leadership did not move within {timeout:g}s")

    # ------------------------------------------------------------ inspection

    def driver_stats(self) -> dict[str, int]:
        driver = self._driver
        if driver is None:
            return {}
        return {"readies": driver.readies, "syncs": driver.syncs, "applied": driver.applied}


def _expire_proposal(proposals: ProposalBook, seq: int, timeout: float) -> None:
    proposals.expire(
        seq,
        submitted=OutcomeUnknownError(
            f"no result within {timeout:g}s"
        ),
        not_submitted=NoLeaderError(f"no leader was usable within {timeout:g}s; the write was not submitted"),
    )


def _expire_read(reads: ReadBook, future: asyncio.Future[None], timeout: float) -> None:
    if future.done():
        return
    if reads.is_queued(future):
        future.set_exception(NoLeaderError(f"no leader was usable within {timeout:g}s; the read was not submitted"))
    else:
        future.set_exception(ReadTimeoutError(f"could not confirm the read with a quorum within {timeout:g}s"))


def _connected(transport: TcpTransport, peer: str) -> bool:
    """Whether our outbound connection to ``peer`` is up (a forward can reach it)."""
    link = transport.stats().get(peer)
    return link is not None and bool(link["connected"])
