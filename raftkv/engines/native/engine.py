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
from raftkv.engines.native.membership import (
    conf_changes,
    encode_member_context,
    learn_addresses,
    load_join_record,
    record_committed_change,
    stored_addresses,
)
from raftkv.engines.native.readiness import readiness
from raftkv.engines.native.recovery import recover, snapshot_meta_from_json
from raftkv.engines.native.requests import ProposalBook, ReadBook
from raftkv.metrics import NodeMetrics
from raftkv.kv.store import LmdbStore, map_size_for_quota
from raftkv.errors import (
    EngineStoppedError,
    NoLeaderError,
    NotLeaderError,
    OutcomeUnknownError,
    ReadTimeoutError,
)
from raftkv.raft.codec import CodecError, decode_message
from raftkv.raft.core import RaftCore
from raftkv.raft.messages import MsgType
from raftkv.raft.types import ConfChange, ConfChangeKind, Entry, InvalidConfChange, ProposalDropped, RaftConfig, Role
from raftkv.storage import WAL, SnapshotStore
from raftkv.storage.snapshot_stream import PART_SUFFIX, FileSnapshotData, FileSnapshotSink, is_lmdb_snapshot
from raftkv.storage.snapshot_stream_install import discard_install_leftovers, install_lmdb_snapshot
from raftkv.tls import peer_tls_for
from raftkv.transport.errors import PeerProtocolError
from raftkv.transport.tcp import TcpTransport

log = logging.getLogger(__name__)

# What a leader sends its followers: all a lagging node accepts from a
# sender it does not know yet (see _on_peer_message).
_LEADER_TRAFFIC = frozenset({MsgType.APP, MsgType.HEARTBEAT, MsgType.SNAP})

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
    # A follower that needs a snapshot gets a fresh one when more than this
    # much entry data was applied after the last (RaftConfig.stale_snapshot_bytes).
    stale_snapshot_bytes: int = 4 << 20
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
        """Options from RAFTKV_TICK_MS, RAFTKV_ELECTION_TICKS, RAFTKV_SNAPSHOT_EVERY, RAFTKV_SNAPSHOT_RETAIN."""
        values: dict[str, int] = {}
        for field_name, var in (
            ("tick_ms", "RAFTKV_TICK_MS"),
            ("election_ticks", "RAFTKV_ELECTION_TICKS"),
            ("snapshot_every", "RAFTKV_SNAPSHOT_EVERY"),
            # Tests set it to 0 so a node that was down gets a snapshot, not entries.
            ("snapshot_retain", "RAFTKV_SNAPSHOT_RETAIN"),
        ):
            text = environ.get(var)
            if text is None:
                continue
            try:
                values[field_name] = int(text)
            except ValueError:
                raise ValueError(f"{var} must be an integer, got {text!r}") from None
        return cls(**values)


class MembershipRefused(Exception):
    """A membership change that does not fit the cluster now (HTTP 409)."""

    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.extra = extra


class UnknownMember(LookupError):
    """No member has this id (HTTP 404)."""

    def __init__(self, node_id: str, members: list[str]) -> None:
        super().__init__(f"no member has id {node_id!r}; members: {', '.join(members)}")
        self.node_id = node_id


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
        # Every member's peer address we know of (membership.py says where
        # they come from); the transport links to the current members'.
        self._addresses: dict[str, str] = dict(config.peers)
        self._linked_conf: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())
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
        # The data stays in its file (verified in pieces), whatever its size.
        loaded = await asyncio.to_thread(snapshots.load_latest_file)
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
                await self._restore_machine(loaded[1] if loaded is not None else None, recovery.applied)
            # A node that joined replays its log on the configuration it was
            # given when it was added (membership.py); a founding member on --peers.
            joined = load_join_record(data_dir)
            self._learn_stored_addresses()
            learn_addresses(self._addresses, conf_changes(recovery.restored.entries))
            raft_config = RaftConfig(
                node_id=self._id,
                voters=joined.voters if joined is not None else tuple(sorted(config.peers)),
                learners=joined.learners if joined is not None else (),
                election_ticks=options.election_ticks,
                heartbeat_ticks=options.heartbeat_ticks,
                max_entries_per_msg=options.max_entries_per_msg,
                max_snapshot_chunk=min(1 << 20, options.max_message_bytes // 2),
                stale_snapshot_bytes=options.stale_snapshot_bytes,
            )
            core = RaftCore(raft_config, random.Random(), recovery.restored)
            # A snapshot from the leader is received into a file, chunk by chunk.
            core.snapshot_sink = lambda meta: FileSnapshotSink(
                snapshots.directory / f"receiving-{meta.index}-{meta.term}-{random.getrandbits(32):08x}{PART_SUFFIX}"
            )
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
            peer_addrs={nid: parse_host_port(addr) for nid, addr in self._member_addresses(core).items()},
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
            on_membership=self._membership_changed,
            record_member=self._record_member if isinstance(self._machine, StoredStateMachine) else None,
        )
        self._linked_conf = (core.voters, core.learners)
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
        await asyncio.to_thread(discard_install_leftovers, self.config.data_dir / "kv")
        store = await asyncio.to_thread(
            LmdbStore, self.config.data_dir / "kv", map_size_for_quota(self.config.quota_backend_bytes)
        )
        if store.rebuilt:
            log.warning(
                "node %s: the state machine's store was not closed cleanly before a reboot, so it "
                "cannot be trusted; rebuilding it from the snapshot and the WAL", self._id,
            )
        machine.attach_store(store)
        return machine.applied_index

    async def _restore_machine(self, data: FileSnapshotData | None, index: int) -> None:
        """The state machine as of the snapshot ``data`` at ``index`` (None:
        the empty state, at index 0). An LMDB snapshot becomes the store's
        file (snapshot_stream_install.py); an older format is decoded."""
        machine = self._machine
        store = getattr(machine, "store", None)
        if isinstance(machine, StoredStateMachine) and isinstance(store, LmdbStore):
            if data is not None and is_lmdb_snapshot(data):
                new_store = await asyncio.to_thread(install_lmdb_snapshot, data, store.path, index, store.map_size)
                old = machine.swap_store(new_store)  # type: ignore[attr-defined]
                await asyncio.to_thread(old.close)
                return
        if isinstance(machine, StoredStateMachine):
            if data is None:
                machine.clear(index)
            else:
                machine.restore(data.read_all(), index)
        elif data is not None:
            machine.restore(data.read_all())

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
        member = sender in core.voters or sender in core.learners
        if not member:
            # Removed by a change not committed yet: it still hears (and is
            # heard) until the removal commits, or a leader that removed
            # itself could never learn that it did.
            committed = core.committed_conf_state()
            member = sender in committed.voters or sender in committed.learners
        # A node we know of (its address came with --peers or a membership
        # change) that is no longer in the configuration was removed: its
        # connection is closed.
        if not member and sender in self._addresses:
            raise PeerProtocolError(f"{sender!r} is not a member of this cluster (it was removed)")
        try:
            message = decode_message(payload)
        except CodecError as exc:
            raise PeerProtocolError(f"malformed message: {exc}") from None
        if message.to != self._id or message.frm != sender:
            raise PeerProtocolError(f"message addressed {message.frm!r} -> {message.to!r} on {sender!r}'s connection")
        # One we never heard of may be a leader added while we lagged: a
        # follower takes its leader traffic (the log it sends names it);
        # anything else from it (a proposal, a vote) is refused.
        if not member and (core.role is Role.LEADER or message.type not in _LEADER_TRAFFIC):
            raise PeerProtocolError(f"{sender!r} is not a member of this cluster")
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
        addrs = self._addresses
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

    # ------------------------------------------------------------ membership

    def _learn_stored_addresses(self) -> None:
        machine = self._machine
        if isinstance(machine, StoredStateMachine):
            self._addresses.update(stored_addresses(machine.store))  # type: ignore[attr-defined]

    def _member_addresses(self, core: RaftCore) -> dict[str, str]:
        """The members other than us whose address we know: the current
        configuration's, and those of the committed one (a member whose
        removal is not committed yet must still hear that it is)."""
        addrs = self._addresses
        committed = core.committed_conf_state()
        ids = (*core.voters, *core.learners, *committed.voters, *committed.learners)
        return {nid: addrs[nid] for nid in ids if nid != self._id and nid in addrs}

    def _record_member(self, entry: Entry) -> None:
        """A committed membership change: keep the members side table in step
        (in the batch that also records the applied index)."""
        record_committed_change(self._machine.side_table_txn(), entry)  # type: ignore[attr-defined]

    def _membership_changed(self, entries: list[Entry], snapshot: bool) -> None:
        """The core's configuration changed (``entries``: the membership
        changes just appended; ``snapshot``: a snapshot was installed, so
        the members table was replaced): link to the members, unlink the rest."""
        core, transport = self._core, self._transport
        if snapshot:
            self._learn_stored_addresses()
        learn_addresses(self._addresses, conf_changes(entries))
        if core is None or transport is None:
            return
        self._sync_links(core, transport)

    def _sync_links(self, core: RaftCore, transport: TcpTransport) -> None:
        wanted = self._member_addresses(core)
        for nid, addr in wanted.items():
            transport.set_peer_addr(nid, parse_host_port(addr))
        for nid in list(transport.stats()):
            if nid not in wanted:
                log.info("node %s: %s is no longer a member; closing its connection", self._id, nid)
                transport.remove_peer(nid)
        self._linked_conf = (core.voters, core.learners)

    def _leading(self) -> tuple[RaftCore, RaftDriver]:
        core, driver = self._running()
        if core.role is not Role.LEADER:
            raise NotLeaderError(
                f"membership changes are made on the leader ({core.leader_id or 'none known'}); "
                f"this node is {_ROLE_NAMES[core.role]}", core.leader_id,
            )
        return core, driver

    def member_progress(self) -> dict[str, dict[str, Any]]:
        """Per member, what the leader knows of its replication (empty on a follower)."""
        core = self._core
        if core is None:
            return {}
        status = core.status()
        out: dict[str, dict[str, Any]] = {}
        for nid, pr in status.progress.items():
            out[nid] = {"match_index": pr.match, "state": pr.state, "recently_active": pr.recent_active}
        return out

    def learner_lag(self, node_id: str) -> int | None:
        """Entries the learner is behind the leader's commit index, or None if
        it is not replicating (never heard from, or receiving a snapshot)."""
        core = self._core
        assert core is not None
        pr = core.progress.get(node_id)
        if pr is None or not pr.recent_active or pr.state == "snapshot":
            return None
        return max(0, core.commit - pr.match)

    async def add_learner(self, node_id: str, peer_addr: str, timeout: float) -> None:
        """Add ``node_id`` as a learner at ``peer_addr``; returns once committed.
        Raises MembershipRefused, NotLeaderError, NoLeaderError, OutcomeUnknownError."""
        core, _ = self._leading()
        if node_id == self._id or node_id in core.voters or node_id in core.learners:
            raise MembershipRefused("member_exists", f"{node_id!r} is already a member")
        change = ConfChange(ConfChangeKind.ADD_LEARNER, node_id, encode_member_context(peer_addr))
        await self._change_membership(core, change, timeout)

    async def promote(self, node_id: str, timeout: float, max_lag: int) -> None:
        """Make the learner ``node_id`` a voter, if it has caught up (within
        ``max_lag`` entries of the commit index)."""
        core, _ = self._leading()
        if node_id in core.voters:
            raise MembershipRefused("not_a_learner", f"{node_id!r} is already a voter")
        if node_id not in core.learners:
            raise UnknownMember(node_id, sorted((*core.voters, *core.learners)))
        lag = self.learner_lag(node_id)
        if lag is None or lag > max_lag:
            behind = "has not been heard from recently" if lag is None else f"is {lag} entries behind the commit index"
            raise MembershipRefused(
                "learner_not_caught_up",
                f"learner {node_id!r} {behind}; it may be promoted once it is within {max_lag} entries",
                lag=lag,
            )
        await self._change_membership(core, ConfChange(ConfChangeKind.PROMOTE, node_id), timeout)

    async def remove_member(self, node_id: str, timeout: float) -> None:
        """Remove ``node_id``, unless the voters left could not form a quorum."""
        core, _ = self._leading()
        if node_id not in core.voters and node_id not in core.learners:
            raise UnknownMember(node_id, sorted((*core.voters, *core.learners)))
        if node_id in core.voters:
            remaining = [v for v in core.voters if v != node_id]
            if not remaining:
                raise MembershipRefused("would_lose_quorum", "cannot remove the last voter")
            # Voters the leader heard from within an election timeout (itself
            # included while it stays): a removal that leaves fewer than a
            # majority of the new configuration reachable would stop the cluster.
            active = [v for v in remaining if v == self._id or (
                (pr := core.progress.get(v)) is not None and pr.recent_active)]
            needed = len(remaining) // 2 + 1
            if len(active) < needed:
                raise MembershipRefused(
                    "would_lose_quorum",
                    f"removing {node_id!r} would leave {len(remaining)} voters of which only "
                    f"{len(active)} are reachable ({', '.join(sorted(active)) or 'none'}); "
                    f"a quorum needs {needed}",
                )
        await self._change_membership(core, ConfChange(ConfChangeKind.REMOVE, node_id), timeout)

    async def _change_membership(self, core: RaftCore, change: ConfChange, timeout: float) -> None:
        driver = self._driver
        assert driver is not None and self._transport is not None
        try:
            driver.propose_conf_change(change)
        except ProposalDropped as exc:
            raise MembershipRefused("change_pending", str(exc)) from None
        except InvalidConfChange as exc:
            raise MembershipRefused("invalid_change", str(exc)) from None
        index, term = core.log.last_index(), core.term
        # The core adopted the change on append: link to a new member (or
        # drop a removed one) now, before the driver's next Ready sends.
        learn_addresses(self._addresses, [change])
        self._sync_links(core, self._transport)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            log_term = core.log.term(index) if index > core.log.offset else term
            if log_term != term:
                raise NoLeaderError("leadership changed and the membership change was overwritten; it was not applied")
            if core.commit >= index:
                return
            if loop.time() >= deadline:
                raise OutcomeUnknownError(f"the membership change did not commit within {timeout:g}s")
            await asyncio.sleep(self.options.tick_ms / 1000 / 5)

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
