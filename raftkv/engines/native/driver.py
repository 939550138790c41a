"""The Ready loop: the only code that moves data between the Raft core, the
WAL, the snapshot store, the transport and the state machine.

It runs as one task on the node's asyncio loop. Each turn hands the callers
that queued up since the last turn to the core in one call, then takes one
Ready and works through it: persist (one fsync for everything the Ready
carries -- group commit), send, apply, advance, with the refinements that
docs/native-engine.md argues (what may be sent or applied before the fsync,
where the fsync runs). The leader's fsync runs on a worker thread so its
loop keeps accepting requests while the disk works; they all ride in the
next Ready.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from time import perf_counter
from typing import Any, cast

from raftkv.engine import StateMachine, StoredStateMachine
from raftkv.engines.native.entry_codec import EntryFormatError, unframe
from raftkv.engines.native.recovery import snapshot_meta_to_json
from raftkv.engines.native.requests import ProposalBook, ReadBook
from raftkv.errors import EngineStoppedError, NoLeaderError, OutcomeUnknownError
from raftkv.metrics import NodeMetrics
from raftkv.raft.codec import encode_message
from raftkv.raft.core import RaftCore
from raftkv.raft.messages import Message, MsgType
from raftkv.raft.ready import Ready
from raftkv.raft.types import ConfChange, Entry, EntryKind, ProposalDropped, Role, Snapshot, SnapshotMeta, SoftState
from raftkv.kv.store import LmdbStore
from raftkv.storage import WAL, LogRecord, SnapshotStore
from raftkv.storage.snapshot_stream import FileSnapshotData, is_lmdb_snapshot
from raftkv.storage.snapshot_stream_install import install_lmdb_snapshot, write_lmdb_snapshot

log = logging.getLogger(__name__)

SendMessage = Callable[[str, bytes], None]
# Whether our connection to a peer is up (TcpTransport.stats()' "connected").
PeerConnected = Callable[[str], bool]
# The core's configuration changed: (membership-change entries just appended,
# whether a snapshot was installed). The engine relinks the transport.
MembershipChanged = Callable[[list[Entry], bool], None]
# A committed membership-change entry, applied inside the state machine's batch.
RecordMember = Callable[[Entry], None]
_NORMAL = EntryKind.NORMAL
_LEADER = Role.LEADER
_APP = MsgType.APP
_APP_RESP = MsgType.APP_RESP
_SNAP_RESP = MsgType.SNAP_RESP
_HEARTBEAT = MsgType.HEARTBEAT
_HEARTBEAT_RESP = MsgType.HEARTBEAT_RESP
# Heartbeat rounds whose send time is kept for the round-trip metric; an
# answer to an older round is not timed.
_TIMED_HEARTBEAT_ROUNDS = 32
# A follower syncs on its loop (see _finish_synced), except a sync bigger
# than this: a write + fsync of megabytes (1 MiB values) held a follower's
# loop for up to 100 ms.
_FOLLOWER_LOOP_SYNC_BYTES = 256 << 10
_SEQ_BYTES = 8
# Per-entry bytes an append spends besides the data (msgpack framing, ints).
_ENTRY_OVERHEAD = 32
# Parts of one oversized append sent at once; the rest is dropped and resent
# after the follower's answer (bounded so a catching-up follower's transport
# queue is not flooded past its byte limit, which would drop the first parts).
MAX_APPEND_PARTS = 4


def _in_memory(data: Any) -> bytes:
    """Snapshot bytes for a state machine that decodes them whole (the
    msgpack formats: the in-memory store, or a leader of an older version)."""
    return data.read_all() if isinstance(data, FileSnapshotData) else data


def _always_connected(peer: str) -> bool:
    return True


def split_append(m: Message, max_bytes: int, max_parts: int) -> list[Message]:
    """Cut an append into consecutive appends of about ``max_bytes`` each.

    Each part names the last entry of the part before as its predecessor, so
    the follower checks and applies them like any appends. Only the first
    ``max_parts`` parts are returned: the follower acknowledges what it got,
    and the leader's next append past that is rejected and resent from there.
    """
    parts: list[Message] = []
    chunk: list[Entry] = []
    size = 0
    prev_index, prev_term = m.index, m.log_term
    for entry in m.entries:
        cost = len(entry.data) + _ENTRY_OVERHEAD
        if chunk and size + cost > max_bytes:
            parts.append(m._replace(index=prev_index, log_term=prev_term, entries=chunk))
            if len(parts) == max_parts:
                return parts
            prev_index, prev_term = chunk[-1].index, chunk[-1].term
            chunk, size = [], 0
        chunk.append(entry)
        size += cost
    parts.append(m._replace(index=prev_index, log_term=prev_term, entries=chunk))
    return parts


class RaftDriver:
    def __init__(
        self,
        core: RaftCore,
        wal: WAL,
        snapshots: SnapshotStore,
        machine: StateMachine,
        send: SendMessage,
        proposals: ProposalBook,
        reads: ReadBook,
        *,
        origin_prefix: bytes,
        snapshot_every: int,
        snapshot_retain: int,
        snapshot_index: int,
        stale_after: int | None,
        max_message_bytes: int = 8 << 20,
        wal_executor: Executor | None = None,
        snapshot_executor: Executor | None = None,
        peer_connected: PeerConnected | None = None,
        leaderless_wait_ticks: int = 24,
        metrics: NodeMetrics | None = None,
        on_membership: MembershipChanged | None = None,
        record_member: RecordMember | None = None,
    ) -> None:
        self.core = core
        self._on_membership = on_membership
        self._record_member = record_member
        self._seen_conf = (core.voters, core.learners)
        self.wal = wal
        self.snapshots = snapshots
        self.machine = machine
        # A state machine with a store of its own takes each run of entries
        # as one write transaction, and is snapshotted off the event loop.
        self._stored_machine = machine if isinstance(machine, StoredStateMachine) else None
        self.send = send
        self.proposals = proposals
        self.reads = reads
        self.snapshot_every = snapshot_every
        self.snapshot_retain = snapshot_retain
        self.max_message_bytes = max_message_bytes
        self._prefix = origin_prefix
        self._seq_end = len(origin_prefix) + _SEQ_BYTES
        self._wake = asyncio.Event()
        self._stopping = False
        self.failure: BaseException | None = None
        self.snapshot_index = snapshot_index
        self._peer_connected = peer_connected if peer_connected is not None else _always_connected
        # Proposals and reads wait in their books while no leader is usable
        # (none known, or our connection to it is down), and fail as not
        # submitted once they and the leaderless spell are this many ticks old.
        self.leaderless_wait_ticks = leaderless_wait_ticks
        self._leaderless_ticks = 0
        self._seen_leader: str | None = core.leader_id
        self._seen_term = core.term
        self._leader_usable = self._usable(core.leader_id)
        # See recovery.Recovery.stale_after: WAL compaction waits until the
        # next append has overwritten these entries.
        self._stale_after = stale_after
        self._durable_term_vote = (core.term, core.vote)
        self._idle = False  # the loop waits for work: _process_on_arrival may run a Ready
        self._failed_on_arrival: BaseException | None = None
        self._snapshot_task: asyncio.Task[None] | None = None
        self._installed: Snapshot | None = None  # swapped in off the loop, not to restore again
        self._snapshot_saved: Snapshot | None = None
        # One thread each: WAL writes stay ordered, and a slow snapshot
        # write never holds up the WAL's fsync. The simulator (raftsim)
        # passes its own executors, which run the calls on its virtual clock.
        self._wal_thread = wal_executor or ThreadPoolExecutor(1, thread_name_prefix=f"wal-{core.id}")
        self._snapshot_thread = snapshot_executor or ThreadPoolExecutor(1, thread_name_prefix=f"snapshot-{core.id}")
        self.readies = 0
        self.syncs = 0
        self.metrics = metrics if metrics is not None else NodeMetrics()
        # Heartbeat round (read_seq) -> when its first heartbeat left, for
        # the peer round-trip metric (the answers echo the round).
        self._heartbeat_sent: dict[int, float] = {}

    @property
    def applied(self) -> int:
        """The index the state machine has applied (the core keeps the count)."""
        return self.core.applied

    def wake(self) -> None:
        self._wake.set()

    # The engine reaches the core only through the next three methods (and
    # reads its attributes), so the driver sees every change of leader.

    def step_message(self, m: Message) -> None:
        """Step a decoded peer message into the core, then act on it."""
        core = self.core
        if m.type == _HEARTBEAT_RESP:
            sent = self._heartbeat_sent.get(m.read_seq)
            if sent is not None:
                self.metrics.observe_peer_rtt(m.frm, perf_counter() - sent)
        core.step(m)
        if core.term != self._seen_term or core.leader_id != self._seen_leader:
            self._leader_moved()
        self.stepped()

    def tick(self) -> None:
        """One tick of logical time (the engine's ticker calls this)."""
        core = self.core
        core.tick()
        if core.term != self._seen_term or core.leader_id != self._seen_leader:
            self._leader_moved()
        elif self._leader_usable != self._usable(core.leader_id):
            self._leader_usable = not self._leader_usable
            if not self._leader_usable:
                self._lost_leader(f"the connection to leader {core.leader_id} was lost")
        self.proposals.tick()
        for ctx in self.reads.tick():
            self._read_index(ctx)
        if self._leader_usable:
            self._leaderless_ticks = 0
        else:
            self._leaderless_ticks += 1
            wait = self.leaderless_wait_ticks
            if self._leaderless_ticks >= wait:
                why = "no leader" if core.leader_id is None else f"leader {core.leader_id} unreachable"
                self.proposals.fail_queued_older_than(
                    wait, NoLeaderError(f"{why} for {wait} ticks; the write was not submitted")
                )
                self.reads.fail_queued_older_than(
                    wait, NoLeaderError(f"{why} for {wait} ticks; the read was not submitted")
                )
        self._wake.set()

    def transfer_leadership(self, target: str | None) -> None:
        """Start a leadership transfer (a follower forwards it to the leader)."""
        self.core.transfer_leadership(target)
        self._wake.set()

    def _usable(self, leader: str | None) -> bool:
        """A leader we can hand requests to: ourselves, or a peer we are connected to."""
        return leader is not None and (leader == self.core.id or self._peer_connected(leader))

    def _leader_moved(self) -> None:
        """The term or the leader changed: forwarded proposals lost their leader."""
        core = self.core
        old_leader, old_term = self._seen_leader, self._seen_term
        self._seen_leader, self._seen_term = core.leader_id, core.term
        if core.leader_id is not None and core.leader_id != old_leader:
            self.metrics.leader_changed()  # etcd's rule: a leader known, and not the one seen last
        self._leader_usable = self._usable(core.leader_id)
        self._lost_leader(f"leader {old_leader} of term {old_term} was replaced (now term {core.term}, leader {core.leader_id})")
        if self._leader_usable:
            self._wake.set()  # queued callers go to the new leader

    def _lost_leader(self, why: str) -> None:
        """Answer the proposals forwarded to a leader that is gone at once.

        They may have reached it (and may yet commit under a new leader),
        so the outcome is unknown; the caller retries (with its idempotency
        key), and the retry waits here for the next leader. Proposals still
        queued never left this node and go to the next leader instead.
        (Even one whose entry the old leader replicated here answers at
        once: waiting for the next election to settle it could take until
        the request timeout, e.g. in a partition.)
        """
        to = self.proposals.forwarded_to
        if to is None:
            return
        self.proposals.fail_forwarded(
            OutcomeUnknownError(
                f"{why} while this write, forwarded to {to[0]}, was unanswered"
            )
        )

    def request_stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        """Process Readys until stopped; a storage failure stops the node."""
        try:
            await self._loop()
        except Exception as exc:
            self.failure = exc
            log.critical("node %s: the Raft driver failed; the node stops serving", self.core.id, exc_info=True)
            raise
        finally:
            stopped = EngineStoppedError(
                "the engine stopped" if self.failure is None else f"the engine failed: {self.failure!r}"
            )
            self.proposals.fail_all(stopped)
            self.reads.fail_all(stopped)
            if self._snapshot_task is not None:
                await asyncio.gather(self._snapshot_task, return_exceptions=True)
            self._wal_thread.shutdown(wait=True)
            self._snapshot_thread.shutdown(wait=True)

    async def _loop(self) -> None:
        core = self.core
        wake = self._wake
        while not self._stopping:
            self._submit_requests()
            saved = self._snapshot_saved
            if saved is not None and saved.meta.index <= core.applied:
                await self._finish_own_snapshot()
                continue
            if not core.has_ready():
                wake.clear()
                self._idle = True
                try:
                    await wake.wait()
                finally:
                    self._idle = False
                if self._failed_on_arrival is not None:
                    raise self._failed_on_arrival
                continue
            synced = await self._process(core.ready())
            if not synced:
                # Let HTTP handlers and peer messages in between Readys that
                # did not wait for the disk.
                await asyncio.sleep(0)

    # ------------------------------------------------------------ requests

    def _submit_requests(self) -> None:
        """Hand queued callers to the core, unless no leader is usable: then
        they wait (see tick) for one, having never left this node."""
        if not self._leader_usable:
            return
        core = self.core
        proposals = self.proposals
        if proposals.has_queued:
            data, seqs = proposals.take_queued()
            leading = core.role is _LEADER
            first_index = core.log.last_index() + 1
            try:
                core.propose_batch(data)
            except ProposalDropped:
                # A leadership transfer is under way: nothing left this node.
                proposals.requeue(data, seqs)
            else:
                if leading:
                    proposals.placed_at(seqs, first_index)
                else:
                    leader = core.leader_id
                    assert leader is not None
                    proposals.forwarded(seqs, leader, core.term)
        reads = self.reads
        if reads.has_queued:
            ctx = reads.start_round()
            if ctx is not None:
                self._read_index(ctx)

    def propose_conf_change(self, change: ConfChange) -> None:
        """Hand a membership change to the core (ProposalDropped,
        InvalidConfChange as the core raises them) and wake the loop."""
        self.core.propose_conf_change(change)
        self._wake.set()

    def _note_membership(self, rd: Ready) -> None:
        """Tell the engine when the core's configuration changed (by this
        Ready's appends, a truncation, or a snapshot) before anything is sent."""
        core = self.core
        conf = (core.voters, core.learners)
        if conf[0] is self._seen_conf[0] and conf[1] is self._seen_conf[1]:
            return
        self._seen_conf = conf
        if self._on_membership is not None:
            self._on_membership([e for e in rd.entries if e.kind != _NORMAL], False)

    def _read_index(self, ctx: bytes) -> None:
        if not self._leader_usable:
            self.reads.requeue_round(ctx)
            return
        try:
            self.core.read_index(ctx)
        except ProposalDropped:
            self.reads.requeue_round(ctx)

    # ---------------------------------------------------------------- Ready

    async def _process(self, rd: Ready) -> bool:
        """Work through one Ready; True if it waited for the disk."""
        self.readies += 1
        waited = False
        if rd.snapshot is not None:
            await self._persist_received_snapshot(rd.snapshot)
            await self._install_off_loop(rd.snapshot)
            waited = True
        held = self._send_and_buffer(rd)
        compact_to = self._compaction_due(rd)
        if compact_to:
            await self._in_wal_thread(self.wal.compact, compact_to)  # syncs what is buffered
            self._finish_synced(rd, held, sync=False)
            return True
        if rd.must_sync and (
            (self.core.role is _LEADER and not self.wal.next_sync_is_one_block())
            or self._snapshot_task is not None
            or (self.core.role is not _LEADER and self.wal.pending_bytes() > _FOLLOWER_LOOP_SYNC_BYTES)
        ):
            self.syncs += 1
            # A big sync (write + fsync) goes to the WAL thread: the
            # leader's loop parses client requests meanwhile, and they all
            # ride in the next Ready. Committed entries are durable on a
            # quorum already, so they are applied (and their callers
            # answered) while our own fsync of newer entries runs. A sync
            # that is one direct block write is done right here, like a
            # follower's: the hand-off to the thread and back cost more than
            # the write (1-connection writes 13-15% faster; 8 and 64
            # connections unchanged, alternating runs). While our snapshot
            # is being written, every sync goes to the thread, a follower's
            # too: behind the snapshot's writeback a one-block write can
            # take 100 ms, and the loop would stand still meanwhile. So
            # does a follower's sync of more than _FOLLOWER_LOOP_SYNC_BYTES.
            syncing = asyncio.get_running_loop().run_in_executor(self._wal_thread, self._timed_sync)
            self._apply(rd)
            await syncing
            self._durable(rd, held)
            self._settle(rd)
            return True
        self._finish_synced(rd, held)
        return waited

    def _process_on_arrival(self) -> None:
        """After a peer message was stepped on a follower: work through its Ready now.

        The caller is the transport's read callback. Handing the Ready to the
        driver's task instead costs a loop iteration between an append's
        arrival and its fsync and acknowledgement. Only when the driver is
        idle (no Ready of its own under way) and the Ready needs no await:
        no snapshot to save or being written, no compaction; otherwise the driver is woken as
        usual. A leader's Readys always go through the driver, which
        overlaps its fsync with the next requests.
        """
        core = self.core
        if (
            not self._idle
            or core.role is _LEADER
            or core.has_snapshot_to_hand_out()
            or self._snapshot_task is not None
            or sum(len(e.data) for e in core.log.unstable_entries()) > _FOLLOWER_LOOP_SYNC_BYTES
            or self._stale_after is not None
            or self.proposals.has_queued
            or self.reads.has_queued
            or not core.has_ready()
        ):
            self._wake.set()
            return
        try:
            rd = core.ready()
            self.readies += 1
            self._finish_synced(rd, self._send_and_buffer(rd))
        except BaseException as exc:
            # The driver's task owns failures: it stops the node.
            self._failed_on_arrival = exc
            self._wake.set()
            return
        if core.has_ready() or self._snapshot_saved is not None:
            self._wake.set()

    def _finish_synced(self, rd: Ready, held: list[Message], sync: bool = True) -> None:
        """Sync on this thread if needed, then acknowledge, apply and advance.

        A follower has little to overlap with its fsync, and the two thread
        hand-offs cost more CPU and latency than they save (measured:
        1-connection writes 20-40% faster). Its ticker waits too, so a slow
        disk cannot make it time out the leader. Durable, it acknowledges
        before applying: the leader waits for the acknowledgement, nobody
        waits for a follower's apply. A leader comes here for a sync that
        is one direct block write.
        """
        if sync and rd.must_sync:
            self.syncs += 1
            self._timed_sync()
        self._durable(rd, held)
        self._apply(rd)
        self._settle(rd)

    def _timed_sync(self) -> None:
        """wal.sync(), timed for raftkv_disk_wal_fsync_duration_seconds (on whichever thread runs it)."""
        start = perf_counter()
        self.wal.sync()
        self.metrics.observe_wal_fsync(perf_counter() - start)

    def _send_and_buffer(self, rd: Ready) -> list[Message]:
        """Send what may leave before the fsync, buffer entries and hard state; return the held messages."""
        hard = rd.hard_state
        term_vote_changed = hard is not None and (hard.term, hard.vote) != self._durable_term_vote
        # Only acknowledgements of entries (APP_RESP) promise what this
        # Ready persists; everything else may leave before the fsync unless
        # the term or vote changed. In particular a leader sends its appends
        # before its own fsync (Raft thesis 10.2.1: the core counts the
        # leader's copy only after advance(), i.e. once durable), and a
        # follower's heartbeat answers and forwarded proposals and reads do
        # not wait for its disk.
        held = rd.messages
        self._note_membership(rd)
        if not term_vote_changed and rd.snapshot is None:
            held = self._send_unless_ack(rd.messages)
        if rd.entries:
            self.wal.append(cast(list[LogRecord], rd.entries))
        if hard is not None:
            self.wal.set_hard_state(hard.term, hard.vote, hard.commit)
        return held

    def _compaction_due(self, rd: Ready) -> int:
        """The index to compact to now that this Ready overwrites a stale tail, or 0."""
        stale = self._stale_after
        if stale is not None and rd.entries and rd.entries[0].index <= stale + 1:
            self._stale_after = None
            return stale
        return 0

    def _durable(self, rd: Ready, held: list[Message]) -> None:
        """What the Ready persisted is on disk: send the messages that promise it."""
        hard = rd.hard_state
        if hard is not None:
            self._durable_term_vote = (hard.term, hard.vote)
        for m in held:
            self._send_message(m)

    def _apply(self, rd: Ready) -> None:
        if rd.snapshot is not None:
            self._apply_snapshot(rd.snapshot)
        if rd.committed_entries:
            self._apply_entries(rd.committed_entries)
        for read_state in rd.read_states:
            self.reads.confirmed(read_state.ctx, read_state.index, self.applied)

    def _settle(self, rd: Ready) -> None:
        core = self.core
        core.advance(rd)
        if core.term != self._seen_term or core.leader_id != self._seen_leader:
            self._leader_moved()  # e.g. a leader whose removal committed in ready()
        self.reads.applied(self.applied)
        if rd.soft_state is not None:
            self._leader_changed(rd.soft_state)
        self._maybe_snapshot()

    def _send_unless_ack(self, messages: list[Message]) -> list[Message]:
        """Send every message but the acknowledgements; return those."""
        acks = []
        for m in messages:
            if m.type == _APP_RESP or m.type == _SNAP_RESP:
                acks.append(m)
            else:
                self._send_message(m)
        return acks

    def _send_message(self, m: Message) -> None:
        if m.type == _HEARTBEAT:
            self._heartbeat_leaves(m.read_seq)
        data = encode_message(m)
        if len(data) > self.max_message_bytes and m.type == _APP and len(m.entries) > 1:
            # The core bounds appends by entry count, not bytes: cut big ones
            # into parts the transport will carry (see split_append).
            for part in split_append(m, self.max_message_bytes, MAX_APPEND_PARTS):
                self._send_bytes(m.to, encode_message(part))
            return
        self._send_bytes(m.to, data)

    def _heartbeat_leaves(self, round_: int) -> None:
        sent = self._heartbeat_sent
        if round_ in sent:
            return  # timed from the round's first heartbeat: they leave together
        sent[round_] = perf_counter()
        if len(sent) > _TIMED_HEARTBEAT_ROUNDS:
            del sent[next(iter(sent))]

    def _send_bytes(self, to: str, data: bytes) -> None:
        try:
            self.send(to, data)
        except ValueError as exc:
            # Larger than any frame the transport carries. Raft treats it as
            # lost; log it, since a peer that needs it will not progress.
            log.error("node %s: dropping a %d-byte message to %s: %s", self.core.id, len(data), to, exc)

    async def _in_wal_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._wal_thread, fn, *args)

    def stepped(self) -> None:
        """A peer message was stepped into the core: act on it now or wake the loop.

        Also for a simulator that steps the core itself; the engine calls
        step_message, which notices a change of leader first."""
        if self.core.role is _LEADER:
            self._apply_early()
            self._wake.set()
        else:
            self._process_on_arrival()

    def _apply_early(self) -> None:
        """On the leader, apply what the core committed now, not in the next Ready.

        Called after a peer message was stepped. Without this, a write whose
        quorum acknowledgement arrives during our fsync of newer entries
        would wait for that fsync (and the next Ready) before its caller
        hears back; and even with the driver idle, going through the next
        Ready costs its caller a loop iteration (measured: 1-connection
        writes ~9% slower). Entries up to the commit index are final, so
        applying them early is safe; the Ready that later carries them
        skips them. A follower applies in its Ready, after acknowledging the
        entries that message brought: the leader is waiting for that.
        """
        core = self.core
        commit = core.commit
        applied = core.applied
        if commit <= applied or core.log.offset > applied:
            return  # nothing new, or a snapshot replaced the log: wait for the Ready
        self._apply_entries(core.committed_to_apply(applied))
        self.reads.applied(core.applied)  # the rest, if any, in the next Readys (stepped wakes the loop)

    def _apply_entries(self, entries: list[Entry]) -> None:
        """Apply committed entries. A stored state machine takes them as one
        write transaction that also records the last index applied, so a
        restart resumes after it (docs/storage.md)."""
        machine = self._stored_machine
        if machine is None:
            # Nothing to commit: the applied batch stands for the backend
            # commit in raftkv_disk_backend_commit_duration_seconds.
            start = perf_counter()
            self._apply_each(entries)
            self.metrics.observe_backend_commit(perf_counter() - start)
            return
        machine.begin_batch()
        try:
            self._apply_each(entries)
        except BaseException:
            machine.abort_batch()
            raise
        start = perf_counter()
        machine.commit_batch(self.core.applied)
        self.metrics.observe_backend_commit(perf_counter() - start)  # etcd's: the commit alone

    def _apply_each(self, entries: list[Entry]) -> None:
        machine_apply = self.machine.apply
        prefix = self._prefix
        seq_end = self._seq_end
        proposals = self.proposals
        overwritten: list[int] = []
        membership_applied = False
        applied = start = self.core.applied
        for entry in entries:
            index = entry.index
            if index <= applied:
                continue  # covered by a snapshot installed meanwhile
            applied = index
            data = entry.data
            if entry.kind != _NORMAL or not data:
                # A membership change (the core applies it; its address goes
                # to the members table) or a new leader's no-op.
                if entry.kind != _NORMAL:
                    membership_applied = True
                    if self._record_member is not None:
                        self._record_member(entry)
                lost = proposals.applied(index, None, None)
            elif data.startswith(prefix):
                seq = int.from_bytes(data[len(prefix) : seq_end], "big")
                lost = proposals.applied(index, seq, machine_apply(data[seq_end:]))
            else:
                try:
                    framed = unframe(data)
                except EntryFormatError as exc:
                    # Every replica skips the same entry, so they stay identical.
                    log.error("node %s: skipping entry %d: %s", self.core.id, index, exc)
                    lost = proposals.applied(index, None, None)
                else:
                    machine_apply(framed.command)
                    lost = proposals.applied(index, None, None)
            if lost is not None:
                overwritten.append(lost)
        if applied != start:
            # Before advance(): the core learns what is applied as it happens.
            self.core.applied_to(applied)
        if membership_applied and self._on_membership is not None:
            # A committed removal: the removed node's links may go now.
            self._on_membership([], False)
        if overwritten:
            proposals.fail(
                overwritten,
                NoLeaderError(
                    "leadership changed and another entry was committed in this write's place; "
                    "it was not applied and never will be"
                ),
            )

    # ------------------------------------------------------------ snapshots

    async def _persist_received_snapshot(self, snapshot: Snapshot) -> None:
        if self._snapshot_task is not None:
            # The store takes one writer at a time, and our own older
            # snapshot is obsolete anyway.
            await asyncio.gather(self._snapshot_task, return_exceptions=True)
        self._snapshot_task = None
        self._snapshot_saved = None
        meta = snapshot.meta
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._snapshot_thread, self._timed_snapshot_save, snapshot)
        if isinstance(snapshot.data, FileSnapshotData):
            # Received into a part file (FileSnapshotSink), now saved in the
            # store; the open data keeps the bytes readable meanwhile.
            snapshot.data.path.unlink(missing_ok=True)
        if self.wal.last_index > meta.index:
            # Our old log went past the snapshot; those entries are not the
            # leader's. Compacting now would keep them on disk after the
            # compaction point, where a restart would believe them.
            self._stale_after = meta.index
            log.info(
                "node %s: WAL entries %d..%d predate the snapshot's log; compacting after they are overwritten",
                self.core.id, meta.index + 1, self.wal.last_index,
            )
        else:
            await self._in_wal_thread(self.wal.compact, meta.index)
        self.snapshot_index = meta.index

    async def _install_off_loop(self, snapshot: Snapshot) -> None:
        """Install an LMDB snapshot into a new store on the snapshot thread
        and swap it in (snapshot_stream_install.py); the loop only swaps.
        Other snapshots are restored by _apply_snapshot."""
        machine = self._stored_machine
        store = machine.store if machine is not None else None
        if machine is None or not isinstance(store, LmdbStore) or not is_lmdb_snapshot(snapshot.data):
            return
        loop = asyncio.get_running_loop()
        index = snapshot.meta.index
        start = perf_counter()
        new_store = await loop.run_in_executor(
            self._snapshot_thread, install_lmdb_snapshot, snapshot.data, store.path, index, store.map_size
        )
        old = machine.swap_store(new_store)
        self._installed = snapshot
        await loop.run_in_executor(self._snapshot_thread, old.close)
        log.info(
            "node %s: installed the leader's snapshot at index %d (%d bytes) in %.3f s off the event loop",
            self.core.id, index, len(snapshot.data), perf_counter() - start,
        )

    def _apply_snapshot(self, snapshot: Snapshot) -> None:
        if self._installed is snapshot:
            self._installed = None  # _install_off_loop did it
        elif self._stored_machine is not None:
            # The snapshot's index goes in the same write transaction as its data.
            self._stored_machine.restore(_in_memory(snapshot.data), snapshot.meta.index)
        else:
            self.machine.restore(_in_memory(snapshot.data))
        self.core.applied_to(snapshot.meta.index)
        self.proposals.forget_through(snapshot.meta.index)
        if self._on_membership is not None:
            # The members table came with it: addresses of members added before its index.
            self._on_membership([], True)
        log.info("node %s: installed a snapshot at index %d from the leader", self.core.id, snapshot.meta.index)

    def _maybe_snapshot(self) -> None:
        if self._snapshot_task is not None:
            return
        if self.applied - self.snapshot_index < self.snapshot_every and not self.core.snapshot_wanted:
            return
        meta = self.core.applied_snapshot_meta()
        machine = self._stored_machine
        store = machine.store if machine is not None else None
        if isinstance(store, LmdbStore):
            # A read transaction opened now is exactly at meta.index; LMDB
            # copies it into the snapshot file on the snapshot thread while
            # applies go on.
            self._snapshot_task = asyncio.create_task(
                self._copy_and_save_snapshot(meta, store),
                name=f"snapshot {self.core.id}@{meta.index}",
            )
            return
        if machine is not None:
            # A read transaction opened now is exactly at meta.index; it is
            # encoded on the snapshot thread while applies go on.
            self._snapshot_task = asyncio.create_task(
                self._encode_and_save_snapshot(meta, machine.snapshot_job()),
                name=f"snapshot {self.core.id}@{meta.index}",
            )
            return
        # Taken synchronously, so the state machine is exactly at meta.index.
        snapshot = Snapshot(meta, self.machine.snapshot())
        self._snapshot_task = asyncio.create_task(
            self._save_own_snapshot(snapshot), name=f"snapshot {self.core.id}@{meta.index}"
        )

    async def _copy_and_save_snapshot(self, meta: SnapshotMeta, store: LmdbStore) -> None:
        view = store.frozen()
        loop = asyncio.get_running_loop()
        try:
            data = await loop.run_in_executor(self._snapshot_thread, self._timed_copy_save, meta, store, view)
        except Exception:
            log.exception("node %s: saving a snapshot at index %d failed", self.core.id, meta.index)
            self.snapshot_index = max(self.snapshot_index, meta.index)
            self._snapshot_task = None
            self.core.snapshot_unavailable()
            return
        self._snapshot_saved = Snapshot(meta, data)  # type: ignore[arg-type]  # read like bytes
        self._wake.set()

    def _timed_copy_save(self, meta: SnapshotMeta, store: LmdbStore, view: Any) -> FileSnapshotData:
        """Copy the store as ``view`` sees it into a snapshot file (on the snapshot thread)."""
        start = perf_counter()
        try:
            path = self.snapshots.save_stream(
                snapshot_meta_to_json(meta), lambda out: write_lmdb_snapshot(store, view, out)
            )
        finally:
            view.close()
        self.metrics.observe_snapshot_save(perf_counter() - start)
        return self.snapshots.data_of(path)

    async def _encode_and_save_snapshot(self, meta: SnapshotMeta, encode: Callable[[], bytes]) -> None:
        loop = asyncio.get_running_loop()
        try:
            data = await loop.run_in_executor(self._snapshot_thread, encode)
        except Exception:
            log.exception("node %s: encoding a snapshot at index %d failed", self.core.id, meta.index)
            self.snapshot_index = max(self.snapshot_index, meta.index)
            self._snapshot_task = None
            self.core.snapshot_unavailable()
            return
        await self._save_own_snapshot(Snapshot(meta, data))

    async def _save_own_snapshot(self, snapshot: Snapshot) -> None:
        meta = snapshot.meta
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._snapshot_thread, self._timed_snapshot_save, snapshot)
        except Exception:
            log.exception("node %s: saving a snapshot at index %d failed", self.core.id, meta.index)
            # Try again after another snapshot_every entries, not at once.
            self.snapshot_index = max(self.snapshot_index, meta.index)
            self._snapshot_task = None
            self.core.snapshot_unavailable()
            return
        self._snapshot_saved = snapshot
        self._wake.set()

    def _timed_snapshot_save(self, snapshot: Snapshot) -> None:
        """Save a snapshot (on the snapshot thread), timed for raftkv_snap_save_total_duration_seconds."""
        start = perf_counter()
        self.snapshots.save(snapshot_meta_to_json(snapshot.meta), snapshot.data)
        self.metrics.observe_snapshot_save(perf_counter() - start)

    async def _finish_own_snapshot(self) -> None:
        snapshot = self._snapshot_saved
        assert snapshot is not None
        self._snapshot_saved = None
        self._snapshot_task = None
        meta: SnapshotMeta = snapshot.meta
        if meta.index <= self.snapshot_index:
            self.core.snapshot_unavailable()
            return
        try:
            self.core.snapshot_taken(meta, snapshot.data, retain_entries=self.snapshot_retain)
        except ValueError as exc:
            # A snapshot from the leader overtook ours while it was written.
            log.info("node %s: dropping our snapshot at %d: %s", self.core.id, meta.index, exc)
            self.core.snapshot_unavailable()
            return
        self.snapshot_index = meta.index
        if self._stale_after is None:
            await self._in_wal_thread(self.wal.compact, meta.index)
        log.info("node %s: snapshot at index %d saved; WAL compacted", self.core.id, meta.index)

    # ------------------------------------------------------------- leaders

    def _leader_changed(self, soft: SoftState) -> None:
        log.info(
            "node %s: %s at term %d, leader %s (applied %d)",
            self.core.id, soft.role.value, self.core.term, soft.leader_id, self.applied,
        )
        # The old leader forgot the ReadIndex rounds it had not confirmed; ask
        # the new one (or fail fast, reads are always safe to retry).
        for ctx in self.reads.in_flight:
            self._read_index(ctx)
