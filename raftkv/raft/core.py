"""RaftCore: the Raft consensus state machine, free of I/O, clocks and threads.

The driver feeds it ticks, peer messages and client requests, and repeatedly
drains a ``Ready`` (what to persist, send and apply) followed by
``advance``. Everything the core does is a deterministic function of those
inputs and of the seeded ``random.Random`` it was given, which is what lets
``raftkv.raft.sim`` replay any failure from its seed.

See docs/raft-core.md for the protocol choices (PreVote, CheckQuorum,
ReadIndex rounds, membership from the latest change in the log, chunked snapshots).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from operator import itemgetter
from typing import Any

from raftkv.raft.conf import apply_conf_change, decode_conf_change, encode_conf_change
from raftkv.raft.log import RaftLog
from raftkv.raft.messages import FORCE_VOTE, Message, MsgType
from raftkv.raft.progress import Progress, ProgressState
from raftkv.raft.quorum import VoteResult, majority, quorum_index, vote_result
from raftkv.raft.read_only import ReadIndexQueue
from raftkv.raft.ready import Ready
from raftkv.raft.types import (
    ConfChange,
    ConfState,
    CoreStatus,
    Entry,
    EntryKind,
    HardState,
    InvalidConfChange,
    ProgressStatus,
    ProposalDropped,
    RaftConfig,
    ReadState,
    ReadyNotAdvanced,
    RestoredState,
    Role,
    Snapshot,
    SnapshotMeta,
    SoftState,
)

# Bound the work (and memory) of one Ready, after e.g. a restart with a long
# committed-but-unapplied log, or under big txns: applying runs on the
# driver's event loop, so a batch must not hold it past the 10 ms pause
# budget (docs/native-engine.md). The rest follows in the next Ready. At
# least one entry always goes, whatever its size.
MAX_COMMITTED_PER_READY = 8192
MAX_COMMITTED_BYTES_PER_READY = 16 << 10

# How long (in election timeouts) a follower that needs a snapshot waits for
# a fresh one (RaftConfig.stale_snapshot_bytes) before it gets the stale
# one. A safety net only: the driver answers with snapshot_taken, or with
# snapshot_unavailable when it cannot; making one of a million keys takes
# seconds, so this is generous.
FRESH_SNAPSHOT_WAIT_ELECTIONS = 20

# The ReadIndex context an unbootstrapped node asks the leader with (see
# docs/raft-core.md, "Wiped nodes"). The driver's read contexts are 8 bytes,
# so this one cannot be mistaken for a client read.
CATCH_UP_READ = b"raftkv/catch-up"

_APP = MsgType.APP
_APP_RESP = MsgType.APP_RESP
_HEARTBEAT = MsgType.HEARTBEAT
_HEARTBEAT_RESP = MsgType.HEARTBEAT_RESP
_NORMAL = EntryKind.NORMAL
_CONF = EntryKind.CONF_CHANGE
_kind_of = itemgetter(2)
_LEADER = Role.LEADER
_FOLLOWER = Role.FOLLOWER
_REPLICATE = ProgressState.REPLICATE
_SNAPSHOT = ProgressState.SNAPSHOT


class RaftCore:
    def __init__(self, config: RaftConfig, rng: random.Random, restored: RestoredState) -> None:
        self.id = config.node_id
        self._cfg = config
        self._rng = rng
        snap_meta = restored.snapshot
        if snap_meta is not None:
            conf = snap_meta.conf
            self.log = RaftLog(snap_meta.index, snap_meta.term, restored.entries)
        else:
            conf = ConfState(tuple(config.voters), tuple(config.learners))
            self.log = RaftLog(0, 0, restored.entries)
        hs = restored.hard_state
        # A voter restored from nothing at all (a wiped or new data dir) may
        # have voted and acknowledged entries in a life it forgot: it grants
        # no votes and does not campaign until it has caught up with a
        # leader or learned that the cluster is new (see docs). A node not
        # among its configured voters is one being added: new, not wiped.
        empty = hs.term == 0 and snap_meta is None and not restored.entries
        self.bootstrapped: bool = not empty or len(conf.voters) <= 1 or self.id not in conf.voters
        self._catch_up_to: int | None = None  # the commit index to reach first
        self._catch_up_read_age: int | None = None  # ticks since the catch-up read was sent
        # What (pre-)vote traffic told us of each other voter: the highest
        # (term, (last log term, last index)) it reported.
        self._reports: dict[str, tuple[int, tuple[int, int]]] = {}
        self._history_seen = False  # some voter has a log: the cluster is not new
        # (Pre-)vote requests we could not answer yet, by asker: answered
        # once we are bootstrapped, so a fresh cluster's first round counts.
        self._deferred_votes: dict[str, Message] = {}
        # Our probe started at our own election timeout (not at someone
        # else's request): if it makes us bootstrapped we run for real.
        self._probe_on_timeout = False
        if hs.commit > self.log.last_index():
            raise ValueError(
                f"restored commit index {hs.commit} is beyond the last restored entry "
                f"{self.log.last_index()}: storage lost entries it acknowledged"
            )
        self.term = hs.term
        self.vote: str | None = hs.vote
        self.commit = max(hs.commit, self.log.offset)
        # The state machine is restored from the snapshot, so everything
        # after it gets re-applied from the log.
        self.applied = self.log.offset
        self._handed_applied = self.applied
        self.voters: tuple[str, ...] = conf.voters
        self.learners: tuple[str, ...] = conf.learners
        # Membership is taken from the latest change in the log, committed
        # or not (see docs): _conf_base is the configuration at log.offset,
        # _conf_log the (index, term, configuration) of each later change.
        self._conf_base = conf
        self._conf_log: list[tuple[int, int, ConfState]] = []

        self.role = _FOLLOWER
        self.leader_id: str | None = None
        # Readiness inputs (see the leader_commit and ticks_since_leader properties).
        self._leader_commit = 0
        self._ticks_since_leader = 0
        self._ticks = 0  # ticks since start, for Progress.heard_at
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._randomized_timeout = config.election_ticks
        self._reset_randomized_timeout()
        self._votes: dict[str, bool] = {}
        self.progress: dict[str, Progress] = {}
        self._transferee: str | None = None
        self._pending_conf_index = 0
        self._reads = ReadIndexQueue()
        self._reads_before_term_commit: list[tuple[bytes, str]] = []
        self._track_conf_entries(restored.entries)

        # Snapshot kept to send to lagging followers (data attached by
        # snapshot_taken or received from a leader).
        self._snapshot: Snapshot | None = None
        # Tick at which a follower needed a snapshot and ours was stale (see
        # RaftConfig.stale_snapshot_bytes), until snapshot_taken; and the
        # index of the snapshot taken in answer, sent however stale it got
        # meanwhile (under heavy writes every fresh one could be).
        self._snapshot_wanted_at: int | None = None
        self._snapshot_answered_want = -1
        self._pending_snapshot: Snapshot | None = None  # to hand out in Ready
        self._snap_recv: tuple[SnapshotMeta, Any] | None = None
        # Makes the buffer a snapshot from the leader is received into: the
        # engine's writes each chunk to a file (storage/snapshot_stream.py)
        # and finish() hands back file-backed bytes. None: a bytearray.
        self.snapshot_sink: Callable[[SnapshotMeta], Any] | None = None

        self._msgs: list[Message] = []
        self._read_states: list[ReadState] = []
        self._forward_buf: list[Entry] = []
        self._bcast_entries = False
        self._read_round_wanted = False
        self._ready_out = False
        self._prev_soft = SoftState(None, _FOLLOWER)
        self._prev_hard = HardState(hs.term, hs.vote, self.commit)

    # ------------------------------------------------------------------
    # public API
    # ------------------------------------------------------------------
    def tick(self) -> None:
        self._ticks += 1
        if self.role is _LEADER:
            self._tick_leader()
        else:
            self._ticks_since_leader += 1
            if not self.bootstrapped:
                self._tick_catch_up()
            self._election_elapsed += 1
            if self._election_elapsed >= self._randomized_timeout and self._promotable():
                self._election_elapsed = 0
                self._probe_on_timeout = not self.bootstrapped
                # Unbootstrapped, a voter only probes with a pre-vote (even
                # with pre_vote off): it changes nothing on the peers, and
                # their answers and the request itself tell who is empty.
                self._campaign(pre_vote=self._cfg.pre_vote or not self.bootstrapped, force=False)

    def propose(self, data: bytes) -> None:
        self.propose_batch([data])

    def propose_batch(self, datas: list[bytes]) -> None:
        """Propose several commands at once (cheaper than one call each)."""
        self._propose_kind(_NORMAL, datas)

    def read_index(self, ctx: bytes) -> None:
        if self.role is _LEADER:
            self._leader_read(ctx, self.id)
        elif self.leader_id is not None:
            self._send(Message(MsgType.READ_INDEX, self.leader_id, self.id, self.term, context=ctx))
        else:
            raise ProposalDropped("no leader known; read not submitted")

    def transfer_leadership(self, target: str | None) -> None:
        """Hand leadership to ``target`` (None: the most caught-up voter)."""
        if self.role is not _LEADER:
            if self.leader_id is None:
                raise ProposalDropped("no leader known; transfer not submitted")
            ctx = target.encode() if target is not None else b""
            self._send(Message(MsgType.TRANSFER_LEADER, self.leader_id, self.id, self.term, context=ctx))
            return
        if target is None:
            candidates = sorted(
                (v for v in self.voters if v != self.id), key=lambda v: (-self.progress[v].match, v)
            )
            if not candidates:
                raise ValueError("no other voter to transfer leadership to")
            target = candidates[0]
        if target not in self.voters:
            raise ValueError(f"cannot transfer leadership to {target!r}: it is not a voter")
        self._start_transfer(target)

    def propose_conf_change(self, change: ConfChange) -> None:
        """One membership change at a time; it takes effect on each node when
        that node appends the entry (see docs/raft-core.md)."""
        if self.role is _LEADER:
            if self._pending_conf_index > self.commit:
                raise ProposalDropped("a membership change is already pending; retry once it is committed")
            apply_conf_change(self.conf_state(), change)  # raises InvalidConfChange
        self._propose_kind(_CONF, [encode_conf_change(change)])

    @property
    def leader_commit(self) -> int:
        """What a node must have applied to hold every entry the current
        leader knew committed when it last reported (see _commit_bound): on
        the leader its own; on a follower the highest the leader reported in
        an append, heartbeat, snapshot chunk or ReadIndex answer; 0 with no
        leader."""
        return self._commit_bound() if self.role is _LEADER else self._leader_commit

    @property
    def ticks_since_leader(self) -> int:
        """How old our evidence is that the leader leads. On the leader:
        ticks since a quorum of voters (us included) last answered us or
        granted us their vote. On a follower: ticks since the leader's last
        heartbeat plus the leader's own age that heartbeat reported. Appends
        do not count: a deposed leader that does not know it yet keeps
        sending them, and it and its followers must age together."""
        if self.role is not _LEADER:
            return self._ticks_since_leader
        now = self._ticks
        progress = self.progress
        heard = [now if v == self.id else progress[v].heard_at for v in self.voters if v in progress]
        if not heard:
            return 0  # removed ourselves: we only finish replicating that
        oldest = quorum_index(heard, len(self.voters))
        return now - oldest if oldest >= 0 else now + 1

    def _commit_bound(self) -> int:
        """The leader's commit index once it has committed an entry of its
        term; before that its commit index may lag entries an earlier
        leader committed, so its last index (which holds them all)."""
        commit = self.commit
        return commit if self.log.term(commit) == self.term else self.log.last_index()

    def step(self, m: Message) -> None:
        if m.to != self.id:
            raise ValueError(f"message for {m.to!r} delivered to {self.id!r}")
        if not self.bootstrapped:
            go = self._step_unbootstrapped(m)
            if self.bootstrapped and self._deferred_votes:
                deferred, self._deferred_votes = self._deferred_votes, {}
                for old in deferred.values():
                    if old is not m:
                        self.step(old)
            if not go:
                return
        if m.term > self.term:
            t = m.type
            if t == MsgType.VOTE or t == MsgType.PRE_VOTE:
                in_lease = (
                    self._cfg.check_quorum
                    and self.leader_id is not None
                    and self._election_elapsed < self._cfg.election_ticks
                )
                if in_lease and m.context != FORCE_VOTE:
                    # Leader stickiness: we heard from a live leader recently,
                    # so a (pre-)candidate is more likely disruptive than right.
                    return
            if t == MsgType.PRE_VOTE or (t == MsgType.PRE_VOTE_RESP and not m.reject):
                pass  # a pre-vote is about a term nobody has entered yet
            elif t == _APP or t == _HEARTBEAT or t == MsgType.SNAP:
                self._become_follower(m.term, m.frm)
                if not self.bootstrapped:
                    # We may have voted in this term before we were wiped.
                    # A vote for its leader is the one that is always safe:
                    # persisted with the term, it keeps a restart (which
                    # finds a term and comes back as an ordinary node) from
                    # voting in this term again.
                    self.vote = m.frm
            else:
                self._become_follower(m.term, None)
        elif m.term < self.term:
            if m.type == _APP or m.type == _HEARTBEAT:
                # Tell a deposed leader about the newer term; with PreVote it
                # would otherwise never learn it from us.
                self._send(Message(_APP_RESP, m.frm, self.id, self.term))
            elif m.type == MsgType.PRE_VOTE:
                self._answer_vote(MsgType.PRE_VOTE_RESP, m.frm, self.term, reject=True)
            return

        t = m.type
        if t == MsgType.VOTE or t == MsgType.PRE_VOTE:
            self._handle_vote_request(m)
        elif self.role is _LEADER:
            self._step_leader(m)
        elif self.role is _FOLLOWER:
            self._step_follower(m)
        else:
            self._step_candidate(m)

    def has_ready(self) -> bool:
        if self._ready_out:
            return False
        if self._msgs or self._read_states or self._pending_snapshot is not None:
            return True
        if self._bcast_entries or self._forward_buf or self._read_round_wanted:
            return True
        if self.log.unstable_from <= self.log.last_index() or self.commit > self._handed_applied:
            return True
        if self.term != self._prev_hard.term or self.vote != self._prev_hard.vote or self.commit != self._prev_hard.commit:
            return True
        return self.leader_id != self._prev_soft.leader_id or self.role is not self._prev_soft.role

    def has_snapshot_to_hand_out(self) -> bool:
        """True if the next Ready carries a snapshot received from the leader."""
        return self._pending_snapshot is not None

    def ready(self) -> Ready:
        if self._ready_out:
            raise ReadyNotAdvanced("call advance() on the previous Ready before asking for a new one")
        self._flush()
        if self.role is _LEADER and self.id not in self.voters:
            last_change = self._conf_log[-1][0] if self._conf_log else 0
            if self.commit >= last_change:
                # Our removal is committed: hand over (the others elect a
                # leader); until now we kept replicating without counting.
                self._become_follower(self.term, None)
        rd = Ready()
        soft = SoftState(self.leader_id, self.role)
        if soft != self._prev_soft:
            rd.soft_state = soft
            self._prev_soft = soft
        hard = HardState(self.term, self.vote, self.commit)
        if hard != self._prev_hard:
            rd.hard_state = hard
            rd.must_sync = hard.term != self._prev_hard.term or hard.vote != self._prev_hard.vote
            self._prev_hard = hard
        log = self.log
        if log.unstable_from <= log.last_index():
            rd.entries = log.unstable_entries()
            rd.must_sync = True
        if self._pending_snapshot is not None:
            rd.snapshot = self._pending_snapshot
            rd.must_sync = True
        if self.commit > self._handed_applied:
            entries = self.committed_to_apply(self._handed_applied)
            rd.committed_entries = entries
            self._handed_applied = entries[-1].index if entries else min(self.commit, self._handed_applied + MAX_COMMITTED_PER_READY)
        if self._msgs:
            rd.messages = self._msgs
            self._msgs = []
        if self._read_states:
            rd.read_states = self._read_states
            self._read_states = []
        self._ready_out = True
        return rd

    def advance(self, rd: Ready) -> None:
        if not self._ready_out:
            raise RuntimeError("advance() called without an outstanding Ready")
        self._ready_out = False
        if rd.snapshot is not None:
            if self._pending_snapshot is rd.snapshot:
                self._pending_snapshot = None
            if rd.snapshot.meta.index > self.applied:
                self.applied = rd.snapshot.meta.index
        if rd.entries:
            last = rd.entries[-1]
            self.log.stable_to(last.index, last.term)
        if rd.committed_entries:
            last_applied = rd.committed_entries[-1].index
            if last_applied > self.applied:
                self.applied = last_applied
        if self.role is _LEADER:
            me = self.progress.get(self.id)
            if me is not None and me.maybe_update(self.log.unstable_from - 1):
                self._maybe_commit()

    def committed_to_apply(self, after: int) -> list[Entry]:
        """The next committed entries after index ``after`` (< commit) that
        one batch should apply: at most MAX_COMMITTED_PER_READY of them and,
        past the first, MAX_COMMITTED_BYTES_PER_READY of data."""
        lo = after + 1
        entries = self.log.slice(lo, min(self.commit, lo + MAX_COMMITTED_PER_READY - 1))
        budget = MAX_COMMITTED_BYTES_PER_READY
        for i, entry in enumerate(entries):
            budget -= len(entry.data)
            if budget < 0 and i:
                return entries[:i]
        return entries

    def applied_to(self, index: int) -> None:
        """The driver applied committed entries up to ``index`` before the
        Ready that hands them out (etcd's "apply early" on the leader), or
        a snapshot before ``advance``. ``applied`` is then the one count of
        what the state machine holds, and later Readys skip those entries."""
        if index > self.commit:
            raise ValueError(f"cannot have applied {index}: the commit index is {self.commit}")
        if index > self.applied:
            self.applied = index
        if index > self._handed_applied:
            self._handed_applied = index

    def snapshot_taken(self, meta: SnapshotMeta, data: bytes, retain_entries: int = 0) -> None:
        """The driver snapshotted the state machine at ``meta.index`` (<= applied).

        The in-memory log is compacted up to ``meta.index - retain_entries``;
        keeping a tail lets slightly lagging followers catch up from entries
        instead of a full snapshot. After a restart, call this once with the
        restored snapshot so this node can send it to others.
        """
        if meta.index > self.applied:
            raise ValueError(f"snapshot index {meta.index} is beyond the applied index {self.applied}")
        if self._snapshot is not None and meta.index < self._snapshot.meta.index:
            raise ValueError(
                f"snapshot index {meta.index} is older than the current snapshot {self._snapshot.meta.index}"
            )
        if meta.index < self.log.offset:
            raise ValueError(f"snapshot index {meta.index} is older than the log's compaction point {self.log.offset}")
        term = self.log.term(meta.index)
        if term != meta.term:
            raise ValueError(f"snapshot term {meta.term} does not match the log's term {term} at index {meta.index}")
        self._snapshot = Snapshot(meta, data)
        if self._snapshot_wanted_at is not None:
            self._snapshot_wanted_at = None
            self._snapshot_answered_want = meta.index
        compact_to = max(self.log.offset, meta.index - max(retain_entries, 0))
        self._conf_base = self._conf_at(compact_to)
        self._conf_log = [c for c in self._conf_log if c[0] > compact_to]
        self.log.compact_to(compact_to)

    def applied_snapshot_meta(self) -> SnapshotMeta:
        """Metadata for a snapshot of the state machine as applied right now."""
        term = self.log.term(self.applied)
        assert term is not None
        return SnapshotMeta(self.applied, term, self._conf_at(self.applied))

    def conf_state(self) -> ConfState:
        return ConfState(self.voters, self.learners)

    def committed_conf_state(self) -> ConfState:
        """The configuration as of the commit index: a node removed by a
        change not committed yet must still be reachable, or the
        acknowledgements that commit its removal could not reach it."""
        return self._conf_at(self.commit)

    def status(self) -> CoreStatus:
        progress: dict[str, ProgressStatus] = {}
        if self.role is _LEADER:
            for peer, pr in self.progress.items():
                progress[peer] = ProgressStatus(pr.match, pr.next, pr.state.value, pr.recent_active)
        return CoreStatus(
            node_id=self.id,
            role=self.role,
            term=self.term,
            leader_id=self.leader_id,
            commit=self.commit,
            applied=self.applied,
            last_index=self.log.last_index(),
            voters=self.voters,
            learners=self.learners,
            progress=progress,
            transferring_to=self._transferee,
        )

    # ------------------------------------------------------------------
    # roles
    # ------------------------------------------------------------------
    def _promotable(self) -> bool:
        # A voter whose own removal is in its log but not committed may still
        # run (counting votes in the new configuration, as a leader outside
        # it does until the removal commits): it may hold the longest log,
        # and if it stood aside nobody could be elected.
        return self.id in self.voters or self.id in self._conf_at(self.commit).voters

    def _reset_randomized_timeout(self) -> None:
        et = self._cfg.election_ticks
        self._randomized_timeout = et + self._rng.randrange(et)

    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.vote = None
        self.leader_id = None
        self._leader_commit = 0
        self._catch_up_read_age = None  # a new leader is asked afresh
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._reset_randomized_timeout()
        self._votes = {}
        self._transferee = None
        self._reads.clear()
        self._reads_before_term_commit = []
        self._bcast_entries = False
        self._read_round_wanted = False

    def _become_follower(self, term: int, leader: str | None) -> None:
        elapsed = self._election_elapsed
        self._reset(term)
        if leader is None and self.role is not _LEADER:
            # Merely learning a higher term (e.g. from a candidate whose log
            # we refuse) must not postpone our own candidacy: otherwise a
            # stale node that keeps campaigning starves the up-to-date ones.
            self._election_elapsed = elapsed
        self.role = _FOLLOWER
        self.leader_id = leader
        self.progress = {}

    def _campaign(self, pre_vote: bool, force: bool) -> None:
        if pre_vote:
            # Do not touch term or vote: a pre-vote that fails must leave
            # no trace, so a partitioned node cannot inflate its term.
            self._reset(self.term)
            self.role = Role.PRE_CANDIDATE
            msg_type, term = MsgType.PRE_VOTE, self.term + 1
        else:
            self._reset(self.term + 1)
            self.role = Role.CANDIDATE
            self.vote = self.id
            msg_type, term = MsgType.VOTE, self.term
        self.progress = {}
        self._votes = {self.id: True}
        if self._tally() is VoteResult.WON:
            self._won_election()
            return
        ctx = FORCE_VOTE if force else b""
        last_index, last_term = self.log.last_index(), self.log.last_term()
        for v in self.voters:
            if v != self.id:
                self._send(Message(msg_type, v, self.id, term, log_term=last_term, index=last_index, context=ctx))

    def _tally(self) -> VoteResult:
        granted = sum(1 for v in self.voters if self._votes.get(v) is True)
        refused = sum(1 for v in self.voters if self._votes.get(v) is False)
        return vote_result(granted, refused, len(self.voters))

    def _won_election(self) -> None:
        if self.role is not Role.PRE_CANDIDATE:
            self._become_leader()
        elif self.bootstrapped:
            self._campaign(pre_vote=False, force=False)
        elif self._may_run_unbootstrapped():
            # Rule 4 (docs, "Wiped nodes"): we hold every reported log, so
            # we may be the only one the others can elect. Run above every
            # reported term: a vote we forgot went to someone who reported
            # its term.
            highest = max(r[0] for v, r in self._reports.items() if v in self.voters)
            if highest > self.term:
                self._become_follower(highest, None)
            self._campaign(pre_vote=False, force=False)
        else:
            # Our pre-vote was only a probe; we may not run for real yet.
            self._become_follower(self.term, None)

    def _may_run_unbootstrapped(self) -> bool:
        """Unbootstrapped, with a pre-vote won: may we run for real? Only if
        every other voter reported to us and our log is at least as up to
        date as each of theirs (rule 3 with ourselves as the asker)."""
        mine = (self.log.last_term(), self.log.last_index())
        reports = self._reports
        for v in self.voters:
            if v == self.id:
                continue
            r = reports.get(v)
            if r is None or mine < r[1]:
                return False
        return True

    def _become_leader(self) -> None:
        if not self.bootstrapped:
            self._become_bootstrapped()  # elected under rule 4: our log is the cluster's now
        granted = [v for v, yes in self._votes.items() if yes]
        self._reset(self.term)
        self.role = _LEADER
        self.leader_id = self.id
        last = self.log.last_index()
        inflight = self._cfg.max_inflight_msgs
        self.progress = {}
        for peer in self.voters:
            self.progress[peer] = Progress(last + 1, inflight)
        for peer in self.learners:
            self.progress[peer] = Progress(last + 1, inflight, is_learner=True)
        me = self.progress.get(self.id)
        if me is not None:
            me.match = self.log.unstable_from - 1
            me.become_replicate()
            me.recent_active = True
        for peer in granted:
            if peer in self.progress:
                self.progress[peer].heard_at = self._ticks
        # The empty entry lets us commit (and so learn the commit index of)
        # everything from earlier terms; membership changes must wait for
        # it to be applied (the fix for the single-server-change bug).
        self._append([Entry(last + 1, self.term, _NORMAL, b"")])
        self._pending_conf_index = last + 1
        self._bcast_entries = True

    def _handle_vote_request(self, m: Message) -> None:
        pre = m.type == MsgType.PRE_VOTE
        resp_type = MsgType.PRE_VOTE_RESP if pre else MsgType.VOTE_RESP
        can_vote = (
            self.vote == m.frm
            or (self.vote is None and self.leader_id is None)
            or (pre and m.term > self.term)
        )
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):
            # A granted pre-vote carries the future term so the
            # pre-candidate can tell it apart from a stale refusal.
            self._answer_vote(resp_type, m.frm, m.term, reject=False)
            if not pre:
                self._election_elapsed = 0
                self.vote = m.frm
        else:
            self._answer_vote(resp_type, m.frm, self.term, reject=True)

    def _answer_vote(self, resp_type: MsgType, to: str, term: int, reject: bool) -> None:
        # Every answer carries our term (hint) and the end of our log, so an
        # unbootstrapped asker learns where we are (see _note_voter).
        log = self.log
        self._send(
            Message(
                resp_type, to, self.id, term, log_term=log.last_term(), index=log.last_index(),
                reject=reject, hint=self.term,
            )
        )

    def _step_candidate(self, m: Message) -> None:
        t = m.type
        if t == _APP or t == _HEARTBEAT or t == MsgType.SNAP:
            self._become_follower(self.term, m.frm)
            self._step_follower(m)
            return
        expected = MsgType.PRE_VOTE_RESP if self.role is Role.PRE_CANDIDATE else MsgType.VOTE_RESP
        if t != expected:
            return
        if m.frm not in self._votes:
            self._votes[m.frm] = not m.reject
        result = self._tally()
        if result is VoteResult.WON:
            self._won_election()
        elif result is VoteResult.LOST:
            self._become_follower(self.term, None)

    # ------------------------------------------------------------------
    # follower
    # ------------------------------------------------------------------
    def _step_follower(self, m: Message) -> None:
        t = m.type
        if t == _APP:
            self._heard_from_leader(m.frm, m.hint)
            self._handle_append(m)
        elif t == _HEARTBEAT:
            # index: the leader's commit bound; commit: capped at our match,
            # log_term: its term there; hint: the leader's quorum age.
            self._heard_from_leader(m.frm, m.index)
            self._ticks_since_leader = m.hint
            lacks = self._lacks_leader_entry(m.commit, m.log_term)
            if not lacks and m.commit > self.commit:
                self.commit = m.commit
            self._send(
                Message(
                    _HEARTBEAT_RESP, m.frm, self.id, self.term, index=self.log.last_index(),
                    reject=lacks, read_seq=m.read_seq,
                )
            )
        elif t == MsgType.SNAP:
            self._heard_from_leader(m.frm, m.commit)
            self._handle_snapshot_chunk(m)
        elif t == MsgType.READ_INDEX_RESP:
            if not m.reject:
                if m.frm == self.leader_id and m.hint > self._leader_commit:
                    self._leader_commit = m.hint
                if m.context != CATCH_UP_READ:
                    self._read_states.append(ReadState(m.context, m.index))
                elif not self.bootstrapped and self._catch_up_to is None:
                    self._catch_up_to = m.index
                if m.commit > self.commit and not self._lacks_leader_entry(m.commit, m.log_term):
                    self.commit = m.commit
        elif t == MsgType.TIMEOUT_NOW:
            if self._promotable() and self.bootstrapped:
                # The leader chose us: skip PreVote, we know the leader stepped aside.
                self._campaign(pre_vote=False, force=True)
        elif t == MsgType.PROP:
            if self.leader_id is not None:
                self._send(m._replace(to=self.leader_id, frm=self.id, term=self.term))
        elif t == MsgType.TRANSFER_LEADER:
            if self.leader_id is not None:
                self._send(m._replace(to=self.leader_id, frm=self.id, term=self.term))
        if not self.bootstrapped and self._catch_up_to is not None and self.commit >= self._catch_up_to:
            self._become_bootstrapped()

    def _lacks_leader_entry(self, index: int, term: int) -> bool:
        """A commit index a heartbeat or read answer hands us (capped at the
        match the leader holds for us) is new to us and our log does not
        hold the leader's entry there: we lost entries we acknowledged, or
        storage gave back an older log, and must not commit it."""
        return index > self.commit and not self.log.match_term(index, term)

    def _heard_from_leader(self, leader: str, commit: int) -> None:
        """An append, heartbeat or snapshot chunk of our term from ``leader``,
        which reports its commit bound ``commit`` (see _commit_bound)."""
        self._election_elapsed = 0
        self.leader_id = leader
        if commit > self._leader_commit:
            self._leader_commit = commit
        if not self.bootstrapped:
            self._history_seen = True  # a leader exists: this cluster is not new
            if self._catch_up_read_age is None and self._catch_up_to is None:
                self._send_catch_up_read()

    def _handle_append(self, m: Message) -> None:
        # Answers echo the append's heartbeat round (read_seq): it tells the
        # leader whether the answer is newer than what it knows of our log.
        log = self.log
        if m.index < self.commit:
            self._send(Message(_APP_RESP, m.frm, self.id, self.term, index=self.commit, read_seq=m.read_seq))
            return
        last_new = log.maybe_append(m.index, m.log_term, m.entries, self.commit)
        if last_new is not None:
            if m.entries:
                self._resync_conf(m.entries)
            commit = m.commit if m.commit < last_new else last_new
            if commit > self.commit:
                self.commit = commit
            self._send(Message(_APP_RESP, m.frm, self.id, self.term, index=last_new, read_seq=m.read_seq))
        else:
            hint_index, hint_term = log.find_conflict_by_term(m.index, m.log_term)
            self._send(
                Message(
                    _APP_RESP, m.frm, self.id, self.term, index=m.index, reject=True,
                    hint=hint_index, log_term=hint_term, read_seq=m.read_seq,
                )
            )

    def _handle_snapshot_chunk(self, m: Message) -> None:
        meta = m.snapshot
        assert meta is not None
        if meta.index <= self.commit:
            # Nothing to install; tell the leader where we really are.
            self._drop_snapshot_recv()
            self._send(Message(_APP_RESP, m.frm, self.id, self.term, index=self.commit))
            return
        recv = self._snap_recv
        if m.snap_offset == 0 and recv is not None and recv[0] == meta and len(recv[1]):
            # A resent first chunk of the snapshot we are receiving (the
            # leader resends unacknowledged chunks): keep what we have, or a
            # flood of resends restarts the transfer over and over.
            self._send(Message(MsgType.SNAP_RESP, m.frm, self.id, self.term, index=meta.index, snap_offset=len(recv[1])))
            return
        if m.snap_offset == 0:
            self._drop_snapshot_recv()
            recv = self._snap_recv = (meta, bytearray() if self.snapshot_sink is None else self.snapshot_sink(meta))
        elif recv is None or recv[0] != meta or len(recv[1]) != m.snap_offset:
            # Lost, duplicated or reordered chunk: ask for what we miss.
            have = len(recv[1]) if recv is not None and recv[0] == meta else 0
            self._send(Message(MsgType.SNAP_RESP, m.frm, self.id, self.term, index=meta.index, snap_offset=have))
            return
        recv[1].extend(m.snap_data)
        if not m.snap_done:
            self._send(
                Message(MsgType.SNAP_RESP, m.frm, self.id, self.term, index=meta.index, snap_offset=len(recv[1]))
            )
            return
        self._snap_recv = None
        received = recv[1]
        self._install_snapshot(Snapshot(meta, bytes(received) if self.snapshot_sink is None else received.finish()))
        self._send(Message(_APP_RESP, m.frm, self.id, self.term, index=self.commit))

    def _drop_snapshot_recv(self) -> None:
        """Forget a partly received snapshot (a sink releases its file)."""
        recv, self._snap_recv = self._snap_recv, None
        if recv is not None and self.snapshot_sink is not None:
            recv[1].discard()

    def _install_snapshot(self, snap: Snapshot) -> None:
        meta = snap.meta
        if self.log.match_term(meta.index, meta.term):
            # We already have the log up to there; only the commit was missing.
            self.commit = max(self.commit, meta.index)
            return
        self.log.restore(meta.index, meta.term)
        self.commit = meta.index
        self._handed_applied = max(self._handed_applied, meta.index)
        self._conf_base = meta.conf
        self._conf_log = []
        self._set_conf(meta.conf)
        self._pending_snapshot = snap
        self._snapshot = snap

    # ------------------------------------------------------------------
    # unbootstrapped: restored from nothing (see docs, "Wiped nodes")
    # ------------------------------------------------------------------
    def _step_unbootstrapped(self, m: Message) -> bool:
        """Look at a message while unbootstrapped; False drops it.

        We refuse every vote, learn who is empty from (pre-)vote traffic,
        and adopt a higher term only from a leader: a term learned from a
        candidate would be persisted, and on a restart make us look like a
        node with a history.
        """
        t = m.type
        if t == _APP or t == _HEARTBEAT or t == MsgType.SNAP:
            return True  # a leader: follow it, get repaired, catch up
        if t == MsgType.VOTE or t == MsgType.PRE_VOTE:
            # A pre-vote asks for the asker's term + 1.
            self._note_voter(m.frm, m.term - 1 if t == MsgType.PRE_VOTE else m.term, m.log_term, m.index)
            if self.bootstrapped or self._every_other_voter_behind(m):
                return True  # answer this very request as anyone would
            if all(v in self._reports for v in self.voters if v != self.id):
                resp = MsgType.PRE_VOTE_RESP if t == MsgType.PRE_VOTE else MsgType.VOTE_RESP
                self._answer_vote(resp, m.frm, self.term, reject=True)
                return False
            # Someone is campaigning and we have not heard from every voter:
            # hold the request and probe the others now rather than at our
            # own timeout, so a new cluster elects in its first round.
            self._deferred_votes[m.frm] = m
            if self.role is not Role.PRE_CANDIDATE and self._promotable():
                self._probe_on_timeout = False
                self._campaign(pre_vote=True, force=False)
            return False
        if t == MsgType.VOTE_RESP or t == MsgType.PRE_VOTE_RESP:
            self._note_voter(m.frm, m.hint, m.log_term, m.index)
            # A granted pre-vote carries the term it was asked for.
            return m.term <= self.term or (t == MsgType.PRE_VOTE_RESP and not m.reject)
        return m.term <= self.term

    def _note_voter(self, peer: str, term: int, log_term: int, index: int) -> None:
        """What a (pre-)vote request or answer told us about ``peer``: its
        term and the end of its log. Once a majority of voters (us
        included) is known to have an empty log and no voter is known to
        have one, the cluster is new and we are bootstrapped."""
        voters = self.voters
        if peer == self.id or peer not in voters or self.id not in voters:
            return
        reports = self._reports
        old = reports.get(peer)
        position = (log_term, index)
        if old is not None:
            term = max(term, old[0])
            position = max(position, old[1])
        reports[peer] = (term, position)
        if index > 0:
            self._history_seen = True
        if self._history_seen:
            return
        # Our own empty log proves nothing (it may be a wiped one), so only
        # other voters count, and enough of them that they meet every
        # quorum we could have been part of: one of them then reports a
        # term at least as high as any vote we forgot (see docs).
        n = len(voters)
        known_empty = sum(1 for v in voters if v != self.id and (r := reports.get(v)) is not None and r[1][1] == 0)
        if known_empty >= n - majority(n) + 1:
            highest = max(r[0] for v, r in reports.items() if v in voters)
            run = self.role is Role.PRE_CANDIDATE and self._probe_on_timeout
            self._become_bootstrapped()
            # We may have voted in that term (or in ours, if a leader raised
            # it) before the wipe: take the vote as spent, for ourselves, so
            # everyone else is refused in it and we campaign in a later one.
            if highest > self.term:
                self._become_follower(highest, None)
            if self.vote is None:
                self.vote = self.id
            if run:
                # Our timeout came first: run now rather than a timeout later
                # (the others only probed because of our request).
                self._campaign(pre_vote=self._cfg.pre_vote, force=False)

    def _every_other_voter_behind(self, m: Message) -> bool:
        """May we, unbootstrapped, grant the (pre-)vote request ``m``? Only
        if every other voter reported to us, the asker's log is at least as
        up to date as each of theirs, and nobody but the asker reported
        the asked term or a higher one: then the asker holds every entry a
        quorum ever held (each such quorum has a member besides us), and
        a vote we forgot cannot have been in this term (its candidate, or
        a voter that granted it, is among those who reported a lower
        term). See docs, "Wiped nodes"."""
        position = (m.log_term, m.index)
        reports = self._reports
        for v in self.voters:
            if v == self.id:
                continue
            r = reports.get(v)
            if r is None or position < r[1] or (v != m.frm and r[0] >= m.term):
                return False
        return True

    def _tick_catch_up(self) -> None:
        """Ask the leader again if its answer to our catch-up read got lost
        (or it stepped down before answering)."""
        if self.leader_id is None or self._catch_up_to is not None:
            return
        age = self._catch_up_read_age
        if age is None or age + 1 >= self._cfg.election_ticks:
            self._send_catch_up_read()
        else:
            self._catch_up_read_age = age + 1

    def _send_catch_up_read(self) -> None:
        # A ReadIndex, not the commit index an append carries: a deposed
        # leader that does not know it yet reports a stale commit index,
        # while a ReadIndex answer is confirmed by a quorum after it was
        # asked, so it covers everything committed before we were wiped.
        assert self.leader_id is not None
        self._catch_up_read_age = 0
        self._send(Message(MsgType.READ_INDEX, self.leader_id, self.id, self.term, context=CATCH_UP_READ))

    def _become_bootstrapped(self) -> None:
        self.bootstrapped = True
        self._catch_up_to = None
        self._catch_up_read_age = None
        self._reports.clear()
        if self.role is Role.PRE_CANDIDATE:
            self._become_follower(self.term, None)  # that round was a probe

    # ------------------------------------------------------------------
    # leader
    # ------------------------------------------------------------------
    def _tick_leader(self) -> None:
        self._heartbeat_elapsed += 1
        self._election_elapsed += 1
        cfg = self._cfg
        if self._election_elapsed >= cfg.election_ticks:
            self._election_elapsed = 0
            if cfg.check_quorum:
                active = sum(1 for v in self.voters if (pr := self.progress.get(v)) is not None and pr.recent_active)
                if active < majority(len(self.voters)):
                    # We cannot reach a quorum: a newer leader may exist, and
                    # clients must not keep waiting on us.
                    self._become_follower(self.term, None)
                    return
                for peer, pr in self.progress.items():
                    pr.recent_active = peer == self.id
            if self._transferee is not None:
                self._transferee = None  # took longer than an election timeout: give up
        if self._heartbeat_elapsed >= cfg.heartbeat_ticks:
            self._heartbeat_elapsed = 0
            self._broadcast_heartbeat()

    def _step_leader(self, m: Message) -> None:
        t = m.type
        if t == _APP_RESP:
            self._handle_append_response(m)
        elif t == _HEARTBEAT_RESP:
            self._handle_heartbeat_response(m)
        elif t == MsgType.SNAP_RESP:
            pr = self.progress.get(m.frm)
            if pr is None:
                return
            pr.recent_active = True
            pr.heard_at = self._ticks
            if pr.state is _SNAPSHOT and pr.snapshot is not None and pr.snapshot.meta.index == m.index:
                if m.snap_offset == pr.snap_acked and pr.snap_sent > pr.snap_acked:
                    # The chunk it asks for is on its way (an answer to a
                    # resent chunk); sending it again would start a second
                    # stream of chunks beside the first, and so on. A lost
                    # chunk is resent on the next heartbeat answer.
                    return
                pr.snap_acked = m.snap_offset
                if m.snap_offset < len(pr.snapshot.data):
                    self._send_snapshot_chunk(m.frm, pr)
        elif t == MsgType.PROP:
            if self._transferee is not None:
                return
            for e in m.entries:
                if e.kind == _CONF:
                    try:
                        apply_conf_change(self.conf_state(), decode_conf_change(e.data))
                    except InvalidConfChange:
                        continue
                    if self._pending_conf_index > self.commit:
                        continue
                    self._pending_conf_index = self.log.last_index() + 1
                entry = Entry(self.log.last_index() + 1, self.term, e.kind, e.data)
                self._append([entry])
                if e.kind == _CONF:
                    self._track_conf_entries([entry])
            self._bcast_entries = True
        elif t == MsgType.READ_INDEX:
            self._leader_read(m.context, m.frm)
        elif t == MsgType.TRANSFER_LEADER:
            target = m.context.decode() if m.context else None
            try:
                self.transfer_leadership(target)
            except ValueError:
                pass

    def _propose_kind(self, kind: int, datas: list[bytes]) -> None:
        if self.role is _LEADER:
            if self._transferee is not None:
                raise ProposalDropped(f"leadership is being transferred to {self._transferee}")
            log = self.log
            index = log.last_index()
            term = self.term
            entries = []
            for data in datas:
                index += 1
                entries.append(Entry(index, term, kind, data))
            self._append(entries)
            if kind == _CONF:
                self._pending_conf_index = index
                self._track_conf_entries(entries)
            self._bcast_entries = True
        elif self.leader_id is not None:
            self._forward_buf.extend(Entry(0, 0, kind, data) for data in datas)
        else:
            raise ProposalDropped("no leader known; proposal not submitted")

    def _append(self, entries: list[Entry]) -> None:
        self.log.append(entries)
        # A single-voter cluster commits as soon as the entry is durable
        # (see advance); nothing else to do here.

    def _flush(self) -> None:
        """Turn batched intents into messages, once per Ready."""
        if self._read_round_wanted:
            self._read_round_wanted = False
            if self.role is _LEADER and not self._reads.outstanding:
                self._broadcast_heartbeat()
        if self._forward_buf:
            if self.leader_id is not None and self.role is not _LEADER:
                self._send(Message(MsgType.PROP, self.leader_id, self.id, self.term, entries=self._forward_buf))
            self._forward_buf = []
        # A commit advance alone sends nothing: followers learn the commit
        # index from the next append, heartbeat or ReadIndex answer. Telling
        # them at once would cost every write another message to and from
        # each follower, while nothing but a follower's read waits for it,
        # and reads are answered with the commit index.
        if self.role is _LEADER and self._bcast_entries:
            self._bcast_entries = False
            last = self.log.last_index()
            for peer, pr in self.progress.items():
                if peer == self.id:
                    continue
                sent = self._send_append(peer, pr, False)
                while sent and pr.next <= last:
                    sent = self._send_append(peer, pr, False)

    def _send_append(self, to: str, pr: Progress, send_empty: bool) -> bool:
        """Send the next batch of entries to ``to``; False if nothing was sent."""
        if pr.is_paused():
            return False
        log = self.log
        prev = pr.next - 1
        prev_term = log.term(prev)
        if prev_term is None:
            return self._start_snapshot(to, pr)
        last = log.last_index()
        if pr.next > last:
            if not send_empty:
                return False
            entries: list[Entry] = []
            sent_to = prev
        else:
            sent_to = min(last, pr.next + self._cfg.max_entries_per_msg - 1)
            entries = log.slice(pr.next, sent_to)
        self._msgs.append(
            Message(
                _APP, to, self.id, self.term, prev_term, prev, entries, self.commit,
                hint=self._commit_bound(), read_seq=self._reads.round,
            )
        )
        pr.sent_entries(sent_to)
        return True

    @property
    def snapshot_wanted(self) -> bool:
        """A follower needs a snapshot and ours is stale: the driver should
        take one now (any snapshot_taken answers it)."""
        return self._snapshot_wanted_at is not None

    def _start_snapshot(self, to: str, pr: Progress) -> bool:
        snap = self._snapshot
        if snap is None or snap.meta.index < self.log.offset:
            # The driver compacted without handing us the snapshot data;
            # nothing we can send. It must call snapshot_taken (see docs).
            return False
        if snap.meta.index != self._snapshot_answered_want and self._is_stale(snap):
            if self._snapshot_wanted_at is None:
                self._snapshot_wanted_at = self._ticks
            if self._ticks - self._snapshot_wanted_at < FRESH_SNAPSHOT_WAIT_ELECTIONS * self._cfg.election_ticks:
                return False  # the next heartbeat answer asks again
            # No fresh snapshot came and the driver did not say it failed
            # (snapshot_unavailable): the stale one still repairs the
            # follower, only more slowly.
            self._snapshot_wanted_at = None
        pr.become_snapshot(snap)
        self._send_snapshot_chunk(to, pr)
        return True

    def snapshot_unavailable(self) -> None:
        """The driver could not take the snapshot that snapshot_wanted asked
        for: send the one we have, stale or not."""
        if self._snapshot_wanted_at is not None and self._snapshot is not None:
            self._snapshot_wanted_at = None
            self._snapshot_answered_want = self._snapshot.meta.index

    def _is_stale(self, snap: Snapshot) -> bool:
        limit = self._cfg.stale_snapshot_bytes
        if limit is None:
            return False
        behind = 0
        for entry in self.log.slice(snap.meta.index + 1, self.applied):
            behind += len(entry.data)
            if behind > limit:
                return True
        return False

    def _send_snapshot_chunk(self, to: str, pr: Progress) -> None:
        snap = pr.snapshot
        assert snap is not None
        off = pr.snap_acked
        chunk = snap.data[off : off + self._cfg.max_snapshot_chunk]
        done = off + len(chunk) >= len(snap.data)
        self._send(
            Message(
                MsgType.SNAP, to, self.id, self.term, commit=self._commit_bound(),
                snapshot=snap.meta, snap_offset=off, snap_data=chunk, snap_done=done,
            )
        )
        pr.snap_sent = off + len(chunk)

    def _handle_append_response(self, m: Message) -> None:
        pr = self.progress.get(m.frm)
        if pr is None:
            return
        pr.recent_active = True
        pr.heard_at = self._ticks
        if m.reject:
            if pr.lost_entries(m.read_seq, m.hint):
                # Newer than its acknowledgement of pr.match, yet the
                # follower's log does not reach it: it lost entries.
                pr.reset_after_loss(m.hint)
                self._send_append(m.frm, pr, True)
                return
            if pr.state is _SNAPSHOT:
                return
            hint = m.hint
            if m.log_term > 0:
                hint = self.log.find_conflict_by_term(m.hint, m.log_term)[0]
            if pr.maybe_decrease_to(m.index, hint):
                self._send_append(m.frm, pr, True)
            return
        grew = pr.maybe_update(m.index)
        if grew:
            pr.match_round = self._reads.round
        if grew or (pr.state is ProgressState.PROBE and pr.match == m.index):
            if pr.state is ProgressState.PROBE:
                pr.become_replicate()
            elif pr.state is _SNAPSHOT and pr.snapshot is not None and pr.match >= pr.snapshot.meta.index:
                pr.become_replicate()
            self._maybe_commit()
            if m.frm == self._transferee and pr.match == self.log.last_index():
                self._send(Message(MsgType.TIMEOUT_NOW, m.frm, self.id, self.term))
        last = self.log.last_index()
        while pr.next <= last and self._send_append(m.frm, pr, False):
            pass

    def _handle_heartbeat_response(self, m: Message) -> None:
        pr = self.progress.get(m.frm)
        if pr is None:
            return
        pr.recent_active = True
        pr.heard_at = self._ticks
        if pr.lost_entries(m.read_seq, m.index) or (m.reject and m.read_seq > pr.match_round):
            # The follower lost entries it acknowledged (a wiped data dir, a
            # cut WAL), or lacks our entry at the commit index we sent it (its
            # storage gave back an older log): probe it from what it holds.
            pr.reset_after_loss(min(m.index, pr.match, self.log.last_index()))
        pr.probe_sent = False
        if pr.state is _REPLICATE and len(pr.inflight) >= pr.max_inflight:
            pr.free_first_inflight()
        if pr.state is _SNAPSHOT:
            if pr.snapshot is not None and pr.snap_sent > pr.snap_acked:
                self._send_snapshot_chunk(m.frm, pr)  # the chunk or its ack was lost
        elif pr.match < self.log.last_index():
            self._send_append(m.frm, pr, True)
        if m.read_seq:
            self._reads.ack(m.frm, m.read_seq)
            self._release_confirmed_reads()

    def _broadcast_heartbeat(self) -> None:
        seq = self._reads.start_round()
        commit = self.commit
        bound = self._commit_bound()
        age = self.ticks_since_leader
        log = self.log
        for peer, pr in self.progress.items():
            if peer != self.id:
                c = pr.match if pr.match < commit else commit
                c_term = log.term(c)
                if c_term is None:
                    c = c_term = 0  # compacted: the follower gets a snapshot anyway
                self._msgs.append(
                    Message(
                        _HEARTBEAT, peer, self.id, self.term, log_term=c_term, index=bound,
                        commit=c, hint=age, read_seq=seq,
                    )
                )
        if len(self.voters) == 1:
            self._release_confirmed_reads()

    def _maybe_commit(self) -> bool:
        progress = self.progress
        if not self.voters:
            return False
        quorum_match = quorum_index((progress[v].match for v in self.voters if v in progress), len(self.voters))
        # Only entries of our own term are committed by counting replicas
        # (Figure 8 of the Raft paper); older ones commit with them.
        if quorum_match > self.commit and self.log.term(quorum_match) == self.term:
            first_in_term = self.log.term(self.commit) != self.term
            self.commit = quorum_match
            if first_in_term and self._reads_before_term_commit:
                waiting, self._reads_before_term_commit = self._reads_before_term_commit, []
                for ctx, requester in waiting:
                    self._leader_read(ctx, requester)
            return True
        return False

    def _leader_read(self, ctx: bytes, requester: str) -> None:
        if self.log.term(self.commit) != self.term:
            # Until an entry of our term commits we do not know the true
            # commit index (it may be higher than ours).
            self._reads_before_term_commit.append((ctx, requester))
            return
        if len(self.voters) == 1 and self.id in self.voters:
            self._answer_read(ctx, requester, self.commit)
            return
        if self._reads.add(ctx, requester, self.commit):
            # Started at the next Ready, so reads arriving until then share it.
            self._read_round_wanted = True

    def _release_confirmed_reads(self) -> None:
        for read in self._reads.confirmed(self.id, self.voters):
            self._answer_read(read.ctx, read.requester, read.index)
        if not self._reads.outstanding and len(self._reads):
            self._read_round_wanted = True

    def _answer_read(self, ctx: bytes, requester: str, index: int) -> None:
        if requester == self.id:
            self._read_states.append(ReadState(ctx, index))
        else:
            # Commit as in a heartbeat (capped at what the requester is known
            # to hold), so a follower need not wait for the next heartbeat
            # to learn that the read's index is committed.
            pr = self.progress.get(requester)
            commit = min(pr.match, self.commit) if pr is not None else 0
            c_term = self.log.term(commit)
            if c_term is None:
                commit = c_term = 0
            self._send(
                Message(
                    MsgType.READ_INDEX_RESP, requester, self.id, self.term, log_term=c_term, index=index,
                    commit=commit, hint=self._commit_bound(), context=ctx,
                )
            )

    def _start_transfer(self, target: str) -> None:
        if target == self.id or target == self._transferee:
            return
        self._transferee = target
        self._election_elapsed = 0  # the transfer aborts after one election timeout
        pr = self.progress[target]
        if pr.match == self.log.last_index():
            self._send(Message(MsgType.TIMEOUT_NOW, target, self.id, self.term))
        else:
            self._send_append(target, pr, True)

    # ------------------------------------------------------------------
    # membership
    # ------------------------------------------------------------------
    def _conf_at(self, index: int) -> ConfState:
        conf = self._conf_base
        for at, _term, c in self._conf_log:
            if at > index:
                break
            conf = c
        return conf

    def _track_conf_entries(self, entries: list[Entry] | tuple[Entry, ...]) -> None:
        """Adopt the membership changes among freshly appended ``entries``."""
        if not entries or _CONF not in map(_kind_of, entries):
            return
        conf = self.conf_state()
        last_tracked = self._conf_log[-1][0] if self._conf_log else self.log.offset
        for e in entries:
            if e.kind != _CONF or e.index <= last_tracked:
                continue
            try:
                conf = apply_conf_change(conf, decode_conf_change(e.data))
            except InvalidConfChange:
                continue  # every node skips the same invalid entry, so they stay in agreement
            self._conf_log.append((e.index, e.term, conf))
        self._set_conf(conf)

    def _resync_conf(self, appended: list[Entry] | tuple[Entry, ...]) -> None:
        """After a follower append: forget changes whose entries were
        truncated away, then adopt the new ones."""
        conf_log = self._conf_log
        if conf_log and self.log.term(conf_log[-1][0]) != conf_log[-1][1]:
            while conf_log and self.log.term(conf_log[-1][0]) != conf_log[-1][1]:
                conf_log.pop()
            self._set_conf(conf_log[-1][2] if conf_log else self._conf_base)
        self._track_conf_entries(appended)

    def _set_conf(self, conf: ConfState) -> None:
        if conf.voters == self.voters and conf.learners == self.learners:
            return
        self.voters, self.learners = conf.voters, conf.learners
        if self.role is not _LEADER:
            return
        last = self.log.last_index()
        members = set(self.voters) | set(self.learners)
        for peer in list(self.progress):
            if peer not in members and peer != self.id:
                del self.progress[peer]
        for peer in self.voters + self.learners:
            pr = self.progress.get(peer)
            if pr is None:
                self.progress[peer] = pr = Progress(last + 1, self._cfg.max_inflight_msgs)
                self._bcast_entries = True
            pr.is_learner = peer in self.learners
        if self._transferee is not None and self._transferee not in self.voters:
            self._transferee = None
        self._maybe_commit()
        self._release_confirmed_reads()

    # ------------------------------------------------------------------
    def _send(self, m: Message) -> None:
        self._msgs.append(m)
