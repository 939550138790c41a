"""Scenario tests of RaftCore through plain function calls.

A tiny in-test cluster runs the real driver contract (persist to the
simulated storage, send, apply, advance) with full control over which
messages are delivered, dropped or held back.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest

from raftkv.raft import (
    ConfChange,
    ConfState,
    ConfChangeKind,
    Entry,
    HardState,
    InvalidConfChange,
    Message,
    MsgType,
    ProposalDropped,
    RaftConfig,
    RaftCore,
    ReadState,
    ReadyNotAdvanced,
    Ready,
    RestoredState,
    Role,
    Snapshot,
    SnapshotMeta,
)
from raftkv.raft.core import FRESH_SNAPSHOT_WAIT_ELECTIONS, MAX_COMMITTED_BYTES_PER_READY
from raftkv.raft.log import RaftLog

Filter = Callable[[Message], bool]


class MemStorage:
    """What a node's durable storage holds: exactly what the driver
    persisted from each Ready (its "fsync"), nothing else."""

    def __init__(self) -> None:
        self.hard_state = HardState()
        self.snapshot: Snapshot | None = None
        self.entries: list[Entry] = []

    def _base(self) -> int:
        return self.snapshot.meta.index if self.snapshot is not None else 0

    def persist(self, rd: Ready) -> None:
        if rd.snapshot is not None:
            self.snapshot = rd.snapshot
            self.entries = []
        if rd.entries:
            first = rd.entries[0].index
            base = self._base()
            assert base < first <= base + len(self.entries) + 1, f"Ready entries start at {first}"
            del self.entries[first - base - 1 :]
            self.entries.extend(rd.entries)
        if rd.hard_state is not None:
            self.hard_state = rd.hard_state

    def compact(self, snapshot: Snapshot) -> None:
        base = self._base()
        if snapshot.meta.index <= base:
            return
        del self.entries[: snapshot.meta.index - base]
        self.snapshot = snapshot

    def restored(self) -> RestoredState:
        meta = self.snapshot.meta if self.snapshot is not None else None
        return RestoredState(self.hard_state, meta, list(self.entries))


class Cluster:
    def __init__(self, voters: tuple[str, ...], learners: tuple[str, ...] = (), extra: tuple[str, ...] = (), **cfg: object) -> None:
        self.cfg = cfg
        self.voters = voters
        self.learners = learners
        self.storage: dict[str, MemStorage] = {}
        self.cores: dict[str, RaftCore] = {}
        self.applied: dict[str, list[Entry]] = {}
        self.snapshots: dict[str, list[bytes]] = {}
        self.read_states: dict[str, list[ReadState]] = {}
        self.queue: list[Message] = []
        self.sent: list[Message] = []
        self.blocked: set[str] = set()
        for i, node in enumerate(voters + learners + extra):
            self.storage[node] = MemStorage()
            self.applied[node] = []
            self.snapshots[node] = []
            self.read_states[node] = []
            self._boot(node, RestoredState(), seed=i)

    def _boot(self, node: str, restored: RestoredState, seed: int = 0) -> None:
        config = RaftConfig(node, self.voters, self.learners, **self.cfg)  # type: ignore[arg-type]
        self.cores[node] = RaftCore(config, random.Random(seed), restored)

    def restore(self, node: str, entries: list[Entry], term: int) -> None:
        """Start ``node`` from a given durable log (as after a restart)."""
        st = self.storage[node]
        st.entries = list(entries)
        st.hard_state = HardState(term, None, 0)
        self._boot(node, st.restored())

    def restart(self, node: str) -> None:
        self.applied[node] = []
        self._boot(node, self.storage[node].restored(), seed=99)

    def wipe(self, node: str) -> None:
        """Restart ``node`` with its data dir deleted."""
        self.storage[node] = MemStorage()
        self.restart(node)

    def __getitem__(self, node: str) -> RaftCore:
        return self.cores[node]

    def process(self, node: str) -> None:
        core = self.cores[node]
        while core.has_ready():
            rd = core.ready()
            self.storage[node].persist(rd)
            for m in rd.messages:
                self.sent.append(m)
                if m.frm not in self.blocked and m.to not in self.blocked:
                    self.queue.append(m)
            if rd.snapshot is not None:
                self.snapshots[node].append(rd.snapshot.data)
            self.applied[node].extend(rd.committed_entries)
            self.read_states[node].extend(rd.read_states)
            core.advance(rd)

    def process_all(self) -> None:
        for node in self.cores:
            self.process(node)

    def deliver(self, keep: Filter | None = None, max_rounds: int = 200) -> None:
        """Deliver messages until quiet; ``keep`` False drops a message."""
        for _ in range(max_rounds):
            self.process_all()
            if not self.queue:
                return
            batch, self.queue = self.queue, []
            for m in batch:
                if m.to in self.blocked or m.frm in self.blocked:
                    continue
                if keep is None or keep(m):
                    self.cores[m.to].step(m)
        raise AssertionError("cluster did not go quiet")

    def tick(self, node: str, times: int = 1) -> None:
        for _ in range(times):
            self.cores[node].tick()

    def tick_all(self, times: int = 1) -> None:
        for _ in range(times):
            for node in self.cores:
                if node not in self.blocked:
                    self.cores[node].tick()
            self.deliver()

    def elect(self, node: str) -> None:
        core = self.cores[node]
        for _ in range(100):
            core.tick()
            self.deliver()
            if core.role is Role.LEADER:
                self.deliver()
                return
        raise AssertionError(f"{node} did not become leader")

    def heartbeat(self, node: str) -> None:
        """One heartbeat round from leader ``node``: how followers learn a commit that no append carried."""
        self.tick(node, self.cores[node]._cfg.heartbeat_ticks)
        self.deliver()

    def leader(self) -> RaftCore:
        leaders = [c for n, c in self.cores.items() if c.role is Role.LEADER and n not in self.blocked]
        assert len(leaders) == 1, [c.status() for c in self.cores.values()]
        return leaders[0]

    def data_applied(self, node: str) -> list[bytes]:
        return [e.data for e in self.applied[node] if e.data]


def entries(*terms: int, start: int = 1) -> list[Entry]:
    return [Entry(start + i, t, 0, f"e{start + i}t{t}".encode()) for i, t in enumerate(terms)]


ABC = ("a", "b", "c")


# ---------------------------------------------------------------------------
# elections


def test_first_election_makes_one_leader_and_commits_an_empty_entry() -> None:
    c = Cluster(ABC)
    c.elect("a")
    assert c["a"].role is Role.LEADER and c["a"].term == 1
    for n in ("b", "c"):
        assert c[n].role is Role.FOLLOWER and c[n].leader_id == "a" and c[n].term == 1
    assert [(e.index, e.term, e.data) for e in c.applied["a"]] == [(1, 1, b"")]
    c.heartbeat("a")
    for n in ABC:
        assert [(e.index, e.term, e.data) for e in c.applied[n]] == [(1, 1, b"")]


def test_candidate_with_stale_log_loses() -> None:
    c = Cluster(ABC, pre_vote=False)
    c.restore("a", entries(1), term=1)
    c.restore("b", entries(1, 1), term=1)
    c.restore("c", entries(1, 1), term=1)
    c.tick("a", 40)
    c.deliver()
    assert c["a"].role is not Role.LEADER
    assert c["b"].vote != "a" and c["c"].vote != "a"


def test_restarted_node_never_votes_twice_in_a_term() -> None:
    c = Cluster(ABC, pre_vote=False, check_quorum=False)
    c.restore("c", [], term=1)  # a node with a past (a wiped one would refuse both)
    vote_b = Message(MsgType.VOTE, "c", "b", 5, log_term=0, index=0)
    c["c"].step(vote_b)
    c.process("c")
    assert c.storage["c"].hard_state.vote == "b"
    c.restart("c")
    c["c"].step(Message(MsgType.VOTE, "c", "a", 5, log_term=0, index=0))
    c.process("c")
    answers = [m for m in c.sent if m.frm == "c" and m.type == MsgType.VOTE_RESP]
    assert [(m.to, m.reject) for m in answers] == [("b", False), ("a", True)]


def test_prevote_keeps_a_partitioned_node_from_disrupting_on_rejoin() -> None:
    c = Cluster(ABC)
    c.elect("a")
    c.blocked.add("c")
    c["c"].tick()  # nothing crosses the partition
    for _ in range(60):
        c["c"].tick()
        c.tick_all()
    assert c["c"].term == 1, "a pre-candidate must not bump its term"
    c.blocked.clear()
    c.tick_all(5)
    assert c.leader().id == "a" and c["a"].term == 1
    assert c["c"].leader_id == "a"


def test_without_prevote_a_rejoining_node_forces_a_new_term() -> None:
    # The counterpart of the test above: proves the scenario is disruptive
    # when PreVote and CheckQuorum are off.
    c = Cluster(ABC, pre_vote=False, check_quorum=False)
    c.elect("a")
    c.blocked.add("c")
    for _ in range(60):
        c["c"].tick()
        c.tick_all()
    assert c["c"].term > 1
    c.blocked.clear()
    c.tick_all(30)
    assert c.leader().term > 1


def test_check_quorum_leader_steps_down_when_cut_off() -> None:
    c = Cluster(ABC, election_ticks=10)
    c.elect("a")
    c.blocked.add("a")
    for _ in range(25):
        c["a"].tick()
        c.process("a")
    assert c["a"].role is Role.FOLLOWER and c["a"].leader_id is None


def test_leader_stickiness_followers_ignore_votes_while_leader_is_alive() -> None:
    c = Cluster(ABC)
    c.elect("a")
    c["b"].step(Message(MsgType.VOTE, "b", "c", 7, log_term=1, index=1))
    c.process("b")
    assert c["b"].term == 1 and c["b"].leader_id == "a"


# ---------------------------------------------------------------------------
# replication and commit


def test_proposals_on_leader_and_follower_are_applied_everywhere_in_one_order() -> None:
    c = Cluster(ABC)
    c.elect("a")
    c["a"].propose(b"x1")
    c["b"].propose(b"x2")  # forwarded to the leader
    c["a"].propose_batch([b"x3", b"x4"])
    c.deliver()
    c.tick_all(2)
    expected = c.data_applied("a")
    assert sorted(expected) == [b"x1", b"x2", b"x3", b"x4"]
    for n in ABC:
        assert c.data_applied(n) == expected
        assert c[n].commit == c["a"].log.last_index()


def test_proposal_without_a_known_leader_is_dropped_with_a_clear_error() -> None:
    c = Cluster(ABC)
    with pytest.raises(ProposalDropped, match="no leader"):
        c["a"].propose(b"x")
    with pytest.raises(ProposalDropped):
        c["a"].read_index(b"r")


def test_log_conflicts_are_repaired_with_few_round_trips() -> None:
    c = Cluster(ABC, pre_vote=False, max_entries_per_msg=1000)
    # b has a long tail from a term that never committed; a and c agree.
    c.restore("a", entries(1, 1, 3, 3), term=3)
    c.restore("b", entries(1, 1, *([2] * 50)), term=3)
    c.restore("c", entries(1, 1, 3, 3), term=3)
    c.elect("a")
    c.tick_all(3)
    for n in ABC:
        assert [(e.index, e.term) for e in c[n].log.slice(1, c[n].log.last_index())] == [
            (e.index, e.term) for e in c["a"].log.slice(1, c["a"].log.last_index())
        ]
    rejections = [m for m in c.sent if m.type == MsgType.APP_RESP and m.reject and m.frm == "b"]
    # One rejection names term 2's start, so the leader jumps there at once.
    assert 1 <= len(rejections) <= 2


def test_figure8_entries_of_older_terms_are_not_committed_by_counting() -> None:
    c = Cluster(ABC, pre_vote=False, max_entries_per_msg=1, max_inflight_msgs=1)
    c.restore("a", entries(1, 2), term=3)
    c.restore("b", entries(1), term=3)
    c.restore("c", entries(1), term=3)
    c.blocked.add("c")
    leader = c["a"]
    seen_old_replicated = False
    for _ in range(200):
        leader.tick() if leader.role is not Role.LEADER else None
        c.process_all()
        if not c.queue and leader.role is Role.LEADER and leader.commit >= 3:
            break
        # Deliver one message at a time to observe every intermediate state.
        if c.queue:
            m = c.queue.pop(0)
            c[m.to].step(m)
        if leader.role is Role.LEADER:
            assert leader.commit != 2, "entry 2 (term 2) was committed by counting replicas"
            if leader.progress["b"].match == 2 and leader.commit < 2:
                seen_old_replicated = True
    assert leader.role is Role.LEADER and leader.term == 4
    assert seen_old_replicated, "the scenario never put term-2 entry on a majority"
    assert leader.commit == 3


def test_duplicated_and_reordered_messages_are_harmless() -> None:
    c = Cluster(ABC)
    c.elect("a")
    for i in range(5):
        c["a"].propose(b"v%d" % i)
    c.process_all()
    batch, c.queue = c.queue, []
    for m in reversed(batch + batch):
        c[m.to].step(m)
    c.deliver()
    c.tick_all(3)
    for n in ABC:
        assert c.data_applied(n) == [b"v0", b"v1", b"v2", b"v3", b"v4"]


def test_deposed_leader_learns_the_new_term_from_a_stale_append_answer() -> None:
    c = Cluster(ABC)
    c.elect("a")
    c.blocked.add("a")
    c.tick_all(40)
    new_leader = c.leader()
    assert new_leader.id != "a" and new_leader.term > 1
    c.blocked.clear()
    c["a"].tick()  # heartbeat of the old term
    c.deliver()
    assert c["a"].role is Role.FOLLOWER and c["a"].term == new_leader.term


def test_pipelining_sends_several_appends_before_any_answer() -> None:
    c = Cluster(ABC, max_entries_per_msg=2, max_inflight_msgs=3)
    c.elect("a")
    c.sent.clear()
    c["a"].propose_batch([b"%d" % i for i in range(20)])
    c.process("a")
    to_b = [m for m in c.sent if m.to == "b" and m.type == MsgType.APP]
    # Replicate state: a window of 3 messages of 2 entries, no waiting.
    assert [len(m.entries) for m in to_b] == [2, 2, 2]
    c.deliver()
    assert c["b"].log.last_index() == c["a"].log.last_index()
    c.heartbeat("a")
    assert c.data_applied("b")[-1] == b"19"


def test_a_commit_advance_alone_sends_nothing_the_next_append_or_heartbeat_carries_it() -> None:
    c = Cluster(ABC)
    c.elect("a")
    c.heartbeat("a")
    c.sent.clear()
    c["a"].propose(b"x")
    c.deliver()
    # One append and one answer per follower: no commit-only append follows.
    assert sorted((m.type, m.to) for m in c.sent) == [
        (MsgType.APP, "b"), (MsgType.APP, "c"), (MsgType.APP_RESP, "a"), (MsgType.APP_RESP, "a"),
    ]
    x_index = c["a"].log.last_index()
    assert c["a"].commit == x_index and c["b"].commit < x_index
    assert c.data_applied("a") == [b"x"] and c.data_applied("b") == []
    # The next append carries it...
    c["a"].propose(b"y")
    c.process("a")
    c.deliver(keep=lambda m: m.to != "a")  # the followers' answers are lost
    assert c["b"].commit == x_index and c.data_applied("b") == [b"x"]
    # ... and so does a heartbeat, capped at what the follower is known to
    # hold: b's answer for y was lost, so this round only re-sends y to b,
    # whose answer commits y; the round after tells b.
    c.blocked.add("c")
    c.heartbeat("a")
    y_index = c["a"].log.last_index()
    assert c["a"].commit == y_index and c["b"].commit == x_index
    c.heartbeat("a")
    assert c["b"].commit == y_index and c.data_applied("b") == [b"x", b"y"]


# ---------------------------------------------------------------------------
# ReadIndex


def test_read_index_on_leader_waits_for_a_heartbeat_round_and_batches() -> None:
    c = Cluster(ABC)
    c.elect("a")
    c["a"].propose(b"w")
    c.deliver()
    c.sent.clear()
    c["a"].read_index(b"r1")
    c["a"].read_index(b"r2")
    c.process("a")
    assert c.read_states["a"] == []  # not before a quorum confirmed leadership
    c.deliver()
    commit = c["a"].commit
    assert c.read_states["a"] == [ReadState(b"r1", commit), ReadState(b"r2", commit)]
    heartbeats = [m for m in c.sent if m.type == MsgType.HEARTBEAT]
    assert len(heartbeats) == 2  # one round (to b and c) served both reads


def test_read_index_on_follower_goes_through_the_leader() -> None:
    c = Cluster(ABC)
    c.elect("a")
    c["a"].propose(b"w")
    c.deliver()
    c["b"].read_index(b"fr")
    c.deliver()
    assert c.read_states["b"] == [ReadState(b"fr", c["a"].commit)]


def test_read_index_answer_tells_the_follower_the_commit_index() -> None:
    c = Cluster(ABC)
    c.elect("a")
    c.heartbeat("a")
    c["a"].propose(b"w")
    c.deliver()
    assert c["b"].commit < c["a"].commit  # no append or heartbeat since the commit
    # Only the read's own messages get through: the answer alone must do.
    c["b"].read_index(b"fr")
    c.deliver(keep=lambda m: m.type != MsgType.HEARTBEAT or m.to == "c")
    assert c.read_states["b"] == [ReadState(b"fr", c["a"].commit)]
    assert c["b"].commit == c["a"].commit and c.data_applied("b") == [b"w"]


def test_isolated_leader_cannot_confirm_a_read() -> None:
    c = Cluster(ABC)
    c.elect("a")
    c.blocked.update({"b", "c"})
    c["a"].read_index(b"r")
    c.tick("a", 3)
    c.deliver()
    assert c.read_states["a"] == []


def test_new_leader_answers_reads_only_after_committing_in_its_term() -> None:
    c = Cluster(ABC)
    c.elect("a")
    leader = c["a"]
    # Hold back every append answer so the term's first entry stays uncommitted.
    c["a"].propose(b"x")
    c.process("a")
    c.queue = [m for m in c.queue if m.type != MsgType.APP]
    before = leader.commit
    c.restart("b")
    leader.read_index(b"r")
    c.process("a")
    assert c.read_states["a"] == []
    c.tick_all(2)
    assert c.read_states["a"] and c.read_states["a"][0].index >= before


# ---------------------------------------------------------------------------
# leadership transfer


def test_transfer_hands_leadership_to_the_target() -> None:
    c = Cluster(ABC)
    c.elect("a")
    c["a"].propose(b"x")
    c.deliver()
    c["a"].transfer_leadership("c")
    c.deliver()
    assert c.leader().id == "c" and c["c"].term == 2
    c["c"].propose(b"after")
    c.deliver()
    c.tick_all(2)
    assert c.data_applied("a")[-1] == b"after"


def test_transfer_catches_a_lagging_target_up_first_and_blocks_proposals() -> None:
    c = Cluster(ABC)
    c.elect("a")
    c.blocked.add("c")
    for i in range(5):
        c["a"].propose(b"%d" % i)
    c.deliver()
    c.blocked.clear()
    c["a"].transfer_leadership("c")
    with pytest.raises(ProposalDropped, match="transferred"):
        c["a"].propose(b"blocked")
    c.deliver()
    c.tick_all(2)
    assert c.leader().id == "c"
    assert c["c"].log.last_index() >= 6


def test_transfer_to_unreachable_target_is_abandoned_after_an_election_timeout() -> None:
    c = Cluster(ABC, election_ticks=10)
    c.elect("a")
    c.blocked.add("c")
    c["a"].transfer_leadership("c")
    with pytest.raises(ProposalDropped):
        c["a"].propose(b"x")
    for _ in range(12):
        c["a"].tick()
        c.deliver()
    assert c["a"].role is Role.LEADER
    c["a"].propose(b"x")  # accepted again


def test_transfer_to_a_non_voter_is_refused() -> None:
    c = Cluster(ABC, learners=("l",))
    c.elect("a")
    with pytest.raises(ValueError, match="not a voter"):
        c["a"].transfer_leadership("l")
    with pytest.raises(ValueError, match="not a voter"):
        c["a"].transfer_leadership("zz")


def test_transfer_requested_on_a_follower_is_forwarded() -> None:
    c = Cluster(ABC)
    c.elect("a")
    c["b"].transfer_leadership("b")
    c.deliver()
    assert c.leader().id == "b"


# ---------------------------------------------------------------------------
# membership


def test_learner_receives_the_log_but_neither_votes_nor_counts() -> None:
    c = Cluster(ABC, learners=("l",))
    c.elect("a")
    c["a"].propose(b"x")
    c.deliver()
    c.heartbeat("a")
    assert c.data_applied("l") == [b"x"]
    # With b and c gone, leader + learner are not a quorum.
    c.blocked.update({"b", "c"})
    c["a"].propose(b"y")
    c.deliver()
    assert b"y" not in c.data_applied("a")
    assert c["l"].log.last_index() == c["a"].log.last_index()
    c.tick("l", 100)
    c.process("l")
    assert c["l"].role is Role.FOLLOWER  # a learner never campaigns


def test_add_learner_then_promote_then_remove() -> None:
    c = Cluster(ABC, extra=("d",))
    c.elect("a")
    c["a"].propose_conf_change(ConfChange(ConfChangeKind.ADD_LEARNER, "d"))
    with pytest.raises(ProposalDropped, match="already pending"):
        c["a"].propose_conf_change(ConfChange(ConfChangeKind.PROMOTE, "d"))
    c.deliver()
    c.tick_all(2)
    assert c["a"].learners == ("d",) and c["d"].learners == ("d",)
    c["a"].propose_conf_change(ConfChange(ConfChangeKind.PROMOTE, "d"))
    c.deliver()
    c.tick_all(2)
    assert c["a"].voters == ("a", "b", "c", "d") and c["d"].voters == ("a", "b", "c", "d")
    # d now counts: with b and c gone, a + d are not 3 of 4...
    c.blocked.update({"b", "c"})
    c["a"].propose(b"needs-3")
    c.deliver()
    assert b"needs-3" not in c.data_applied("a")
    c.blocked.clear()
    c.tick_all(3)
    assert b"needs-3" in c.data_applied("d")
    c["a"].propose_conf_change(ConfChange(ConfChangeKind.REMOVE, "b"))
    c.deliver()
    c.tick_all(2)
    assert c["a"].voters == ("a", "c", "d")


def test_removed_leader_steps_down_and_the_rest_elect_a_new_one() -> None:
    c = Cluster(ABC)
    c.elect("a")
    c["a"].propose_conf_change(ConfChange(ConfChangeKind.REMOVE, "a"))
    c.deliver()
    c.tick_all(2)
    assert c["a"].role is Role.FOLLOWER
    c.blocked.add("a")
    c.tick_all(40)
    new = c.leader()
    assert new.id in ("b", "c") and new.voters == ("b", "c")


@pytest.mark.parametrize(
    "change, message",
    [
        (ConfChange(ConfChangeKind.ADD_LEARNER, "b"), "already a member"),
        (ConfChange(ConfChangeKind.PROMOTE, "b"), "not a learner"),
        (ConfChange(ConfChangeKind.REMOVE, "zz"), "not a member"),
        (ConfChange(ConfChangeKind.ADD_LEARNER, ""), "non-empty"),
    ],
)
def test_invalid_membership_changes_are_refused(change: ConfChange, message: str) -> None:
    c = Cluster(ABC)
    c.elect("a")
    last = c["a"].log.last_index()
    with pytest.raises(InvalidConfChange, match=message):
        c["a"].propose_conf_change(change)
    assert c["a"].log.last_index() == last  # nothing appended


def test_cannot_remove_the_last_voter() -> None:
    c = Cluster(("a",))
    c.elect("a")
    with pytest.raises(InvalidConfChange, match="last voter"):
        c["a"].propose_conf_change(ConfChange(ConfChangeKind.REMOVE, "a"))


# ---------------------------------------------------------------------------
# snapshots


def test_lagging_follower_gets_the_snapshot_in_chunks_then_entries() -> None:
    c = Cluster(ABC, max_snapshot_chunk=10)
    c.elect("a")
    c.blocked.add("c")
    for i in range(10):
        c["a"].propose(b"v%d" % i)
    c.deliver()
    meta = c["a"].applied_snapshot_meta()
    data = b"state-machine-at-%d-" % meta.index + b"x" * 20
    c["a"].snapshot_taken(meta, data)
    assert c["a"].log.offset == meta.index
    c.blocked.clear()
    c["a"].propose(b"after")
    c.deliver()
    c.tick_all(3)
    chunks = [m for m in c.sent if m.type == MsgType.SNAP and m.to == "c"]
    assert len(chunks) >= 4 and all(len(m.snap_data) <= 10 for m in chunks)
    assert c.snapshots["c"] == [data]
    assert c["c"].log.offset == meta.index
    assert c.data_applied("c") == [b"after"]
    assert c["c"].commit == c["a"].commit


def _stale_snapshot_cluster() -> tuple[Cluster, bytes]:
    """c is cut off while a writes, snapshots early, then writes more than
    stale_snapshot_bytes past that snapshot."""
    c = Cluster(ABC, stale_snapshot_bytes=50, election_ticks=6)
    c.elect("a")
    c.blocked.add("c")
    c["a"].propose(b"early")
    c.deliver()
    old = b"old-snapshot"
    c["a"].snapshot_taken(c["a"].applied_snapshot_meta(), old)
    for i in range(10):
        c["a"].propose(b"later-%02d" % i)  # 80 bytes of data past the snapshot
    c.deliver()
    c.blocked.clear()
    return c, old


def test_a_follower_gets_a_fresh_snapshot_not_a_stale_one() -> None:
    c, old = _stale_snapshot_cluster()
    c.tick_all(3)
    assert c["a"].snapshot_wanted
    assert not [m for m in c.sent if m.type == MsgType.SNAP], "sent the stale snapshot"
    meta = c["a"].applied_snapshot_meta()
    c["a"].snapshot_taken(meta, b"fresh-snapshot")
    assert not c["a"].snapshot_wanted
    c.tick_all(3)
    assert c.snapshots["c"] == [b"fresh-snapshot"]
    assert c["c"].commit == c["a"].commit and c.data_applied("c") == []  # nothing left to replay


def test_a_stale_snapshot_goes_when_the_driver_has_none_fresher() -> None:
    c, old = _stale_snapshot_cluster()
    c.tick_all(3)
    assert c.snapshots["c"] == [] and c["a"].snapshot_wanted
    c["a"].snapshot_unavailable()
    c.tick_all(2)
    assert c.snapshots["c"] == [old]
    assert c.data_applied("c") == [b"later-%02d" % i for i in range(10)]


def test_a_stale_snapshot_still_goes_when_no_fresh_one_comes() -> None:
    c, old = _stale_snapshot_cluster()
    c.tick_all(FRESH_SNAPSHOT_WAIT_ELECTIONS * 6 - 1)
    assert c.snapshots["c"] == [] and c["a"].snapshot_wanted
    c.tick_all(2)
    assert c.snapshots["c"] == [old]
    assert c["c"].commit == c["a"].commit
    assert c.data_applied("c") == [b"later-%02d" % i for i in range(10)]


def test_snapshot_survives_lost_chunks() -> None:
    c = Cluster(ABC, max_snapshot_chunk=4)
    c.elect("a")
    c.blocked.add("c")
    c["a"].propose(b"v")
    c.deliver()
    meta = c["a"].applied_snapshot_meta()
    c["a"].snapshot_taken(meta, b"0123456789abcdef")
    c.blocked.clear()
    dropped = []

    def lose_second_chunk(m: Message) -> bool:
        if m.type == MsgType.SNAP and m.snap_offset == 4 and not dropped:
            dropped.append(m)
            return False
        return True

    c["a"].tick()
    c.deliver(lose_second_chunk)
    c.tick_all(10)
    assert dropped and c.snapshots["c"] == [b"0123456789abcdef"]


def test_retained_entries_let_a_slightly_lagging_follower_avoid_a_snapshot() -> None:
    c = Cluster(ABC)
    c.elect("a")
    c.blocked.add("c")
    for i in range(5):
        c["a"].propose(b"v%d" % i)
    c.deliver()
    c["a"].snapshot_taken(c["a"].applied_snapshot_meta(), b"snap", retain_entries=100)
    c.blocked.clear()
    c.tick_all(3)
    assert c.snapshots["c"] == []
    assert c.data_applied("c") == [b"v%d" % i for i in range(5)]


def test_restart_from_snapshot_and_log_restores_state() -> None:
    c = Cluster(ABC)
    c.elect("a")
    for i in range(4):
        c["a"].propose(b"v%d" % i)
    c.deliver()
    c.tick_all(2)
    meta = c["b"].applied_snapshot_meta()
    c["b"].snapshot_taken(meta, b"snap")
    c.storage["b"].compact(Snapshot(meta, b"snap"))
    c["a"].propose(b"late")
    c.deliver()
    c.tick_all(2)
    c.restart("b")
    assert c["b"].log.offset == meta.index and c["b"].applied == meta.index
    c.tick_all(3)
    assert c.data_applied("b") == [b"late"]


def test_snapshot_taken_refuses_bad_metadata() -> None:
    c = Cluster(("a",))
    c.elect("a")
    meta = c["a"].applied_snapshot_meta()
    with pytest.raises(ValueError, match="beyond the applied index"):
        c["a"].snapshot_taken(SnapshotMeta(meta.index + 5, meta.term, meta.conf), b"")
    with pytest.raises(ValueError, match="does not match"):
        c["a"].snapshot_taken(SnapshotMeta(meta.index, meta.term + 1, meta.conf), b"")
    c["a"].snapshot_taken(meta, b"ok")
    with pytest.raises(ValueError, match="older"):
        c["a"].snapshot_taken(SnapshotMeta(0, 0, meta.conf), b"")


# ---------------------------------------------------------------------------
# driver contract and bad input


def test_single_node_commits_only_after_its_own_persist() -> None:
    c = Cluster(("a",))
    c.elect("a")
    c["a"].propose(b"x")
    rd = c["a"].ready()
    assert [e.data for e in rd.entries] == [b"x"] and rd.committed_entries == [] and rd.must_sync
    c["a"].advance(rd)
    rd2 = c["a"].ready()
    assert [e.data for e in rd2.committed_entries] == [b"x"]
    c["a"].advance(rd2)


def test_a_ready_hands_out_a_bounded_amount_of_committed_data() -> None:
    # Applying runs on the event loop: big txns must come in several Readys,
    # at least one entry each, however big it is.
    c = Cluster(("a",))
    c.elect("a")
    chunk = MAX_COMMITTED_BYTES_PER_READY // 4
    sizes = [chunk] * 10 + [3 * MAX_COMMITTED_BYTES_PER_READY] + [10] * 5
    c["a"].propose_batch([bytes([i]) * n for i, n in enumerate(sizes)])
    rd = c["a"].ready()
    c["a"].advance(rd)
    batches = []
    while c["a"].has_ready():
        rd = c["a"].ready()
        batches.append([len(e.data) for e in rd.committed_entries])
        c["a"].advance(rd)
    assert [n for batch in batches for n in batch] == sizes
    assert batches[0] == [chunk] * 4  # a fifth would pass the budget
    assert [3 * MAX_COMMITTED_BYTES_PER_READY] in batches  # alone, but handed out
    assert all(sum(b) <= MAX_COMMITTED_BYTES_PER_READY or len(b) == 1 for b in batches)
    assert c["a"].applied == c["a"].commit


def test_ready_twice_without_advance_is_an_error() -> None:
    c = Cluster(("a",))
    c.elect("a")
    c["a"].propose(b"x")
    c["a"].ready()
    with pytest.raises(ReadyNotAdvanced):
        c["a"].ready()


def test_advance_without_ready_is_an_error() -> None:
    c = Cluster(("a",))
    with pytest.raises(RuntimeError, match="without an outstanding Ready"):
        c["a"].advance(Ready())


def test_ready_is_empty_when_nothing_changed() -> None:
    c = Cluster(ABC)
    c.elect("a")
    c.deliver()
    assert not c["b"].has_ready()


def test_misaddressed_message_is_refused() -> None:
    c = Cluster(ABC)
    with pytest.raises(ValueError, match="delivered to"):
        c["a"].step(Message(MsgType.HEARTBEAT, "b", "c", 1))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"node_id": ""}, "non-empty"),
        ({"election_ticks": 1, "heartbeat_ticks": 1}, "greater than heartbeat_ticks"),
        ({"voters": ("a", "a")}, "duplicates"),
        ({"learners": ("a",)}, "both voter and learner"),
        ({"max_inflight_msgs": 0}, ">= 1"),
        ({"max_snapshot_chunk": 0}, ">= 1"),
    ],
)
def test_bad_config_is_refused(kwargs: dict[str, object], message: str) -> None:
    base: dict[str, object] = {"node_id": "a", "voters": ("a", "b", "c")}
    base.update(kwargs)
    with pytest.raises(ValueError, match=message):
        RaftConfig(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "restored, message",
    [
        (RestoredState(HardState(1, None, 5), None, entries(1, 1)), "beyond the last restored entry"),
        (RestoredState(HardState(1, None, 0), None, [Entry(1, 1, 0, b""), Entry(3, 1, 0, b"")]), "not contiguous"),
        (RestoredState(HardState(2, None, 0), None, entries(2, 1)), "terms go backwards"),
        (RestoredState(HardState(2, None, 0), SnapshotMeta(5, 2, ConfState(ABC)), entries(2)), "right after the snapshot"),
    ],
)
def test_inconsistent_restored_state_is_refused(restored: RestoredState, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RaftCore(RaftConfig("a", ABC), random.Random(0), restored)


def test_log_find_conflict_by_term_skips_whole_terms() -> None:
    log = RaftLog(0, 0, entries(1, 1, 2, 2, 2, 4, 4))
    assert log.find_conflict_by_term(7, 3) == (5, 2)
    assert log.find_conflict_by_term(7, 4) == (7, 4)
    assert log.find_conflict_by_term(9, 1) == (2, 1)
    assert log.find_conflict_by_term(3, 0) == (0, 0)


# ---------------------------------------------------------------------------
# building blocks


def test_read_queue_confirms_only_rounds_a_quorum_acknowledged() -> None:
    from raftkv.raft.read_only import ReadIndexQueue

    q = ReadIndexQueue()
    voters = ("a", "b", "c", "d", "e")
    assert q.add(b"r1", "a", 10) is True
    r = q.start_round()
    assert q.add(b"r2", "b", 11) is False  # waits for the next round
    q.ack("b", r)
    assert q.confirmed("a", voters) == []  # a + b of 5: no quorum
    q.ack("c", r)
    assert [p.ctx for p in q.confirmed("a", voters)] == [b"r1"]
    assert not q.outstanding and len(q) == 1
    r2 = q.start_round()
    for v in ("c", "d"):
        q.ack(v, r2)
    assert [(p.ctx, p.index, p.requester) for p in q.confirmed("a", voters)] == [(b"r2", 11, "b")]


def test_progress_window_pauses_and_rejections_fall_back_to_probe() -> None:
    from raftkv.raft.progress import Progress, ProgressState

    pr = Progress(next_index=11, max_inflight=2)
    pr.sent_entries(11)
    assert pr.is_paused()  # probe: one message per round trip
    assert pr.maybe_update(10)
    pr.become_replicate()
    pr.sent_entries(12)
    pr.sent_entries(14)
    assert pr.is_paused() and pr.next == 15
    pr.maybe_update(12)
    assert not pr.is_paused()
    assert not pr.maybe_decrease_to(rejected=9, hint=5)  # stale: below match
    assert pr.maybe_decrease_to(rejected=14, hint=13)
    assert pr.state is ProgressState.PROBE and pr.next == 14  # right after the hint


def test_stale_node_campaigning_over_and_over_cannot_starve_the_up_to_date_one() -> None:
    # Regression (simulation seeds 980, 1065, 1613, 1746 of the first
    # simulator version): refusing a stale candidate's vote used to reset
    # the refuser's election timer, so a stale node with a faster clock kept
    # the only electable node from ever campaigning.
    c = Cluster(("a", "b"), pre_vote=False, check_quorum=False)
    c.restore("a", entries(1, 1, 2), term=2)
    c.restore("b", entries(1), term=2)
    for _ in range(300):
        c.tick("b", 2)  # b's clock runs twice as fast
        c.tick("a", 1)
        c.deliver()
        if c["a"].role is Role.LEADER:
            break
    assert c["a"].role is Role.LEADER


def test_removed_node_that_missed_its_removal_cannot_depose_the_leader() -> None:
    # Regression (simulation seed 249 of the first simulator version):
    # with CheckQuorum, members that hear from the leader ignore the
    # removed node's ever-higher-term vote requests.
    c = Cluster(ABC)
    c.elect("a")
    c.blocked.add("c")  # c never learns that it was removed
    c["a"].propose_conf_change(ConfChange(ConfChangeKind.REMOVE, "c"))
    c.deliver()
    c.tick_all(2)
    assert c["a"].voters == ("a", "b") and c["c"].voters == ABC
    term = c["a"].term
    c.blocked.clear()
    for _ in range(60):
        c["c"].tick()
        c.tick_all()
    assert c.leader().id == "a" and c["a"].term == term


def test_membership_comes_from_the_log_even_if_the_commit_index_was_lost() -> None:
    # Regression (simulation seed 6776 of an earlier version): with
    # apply-time membership a node restarting with a stale commit index
    # used an older configuration than the committed one.
    c = Cluster(ABC)
    c.elect("a")
    c["a"].propose_conf_change(ConfChange(ConfChangeKind.REMOVE, "c"))
    c.deliver()
    c.tick_all(2)
    st = c.storage["b"]
    st.hard_state = st.hard_state._replace(commit=1)  # commit was never fsynced
    c.restart("b")
    assert c["b"].commit == 1 and c["b"].voters == ("a", "b")


def test_truncated_uncommitted_membership_change_is_undone() -> None:
    from raftkv.raft.conf import encode_conf_change

    removal = Entry(2, 1, 1, encode_conf_change(ConfChange(ConfChangeKind.REMOVE, "c")))
    c = Cluster(ABC, pre_vote=False)
    c.restore("a", [Entry(1, 1, 0, b""), Entry(2, 2, 0, b"newer")], term=2)
    c.restore("b", [Entry(1, 1, 0, b""), removal], term=2)
    c.restore("c", [Entry(1, 1, 0, b"")], term=2)
    assert c["b"].voters == ("a", "b")  # adopted as soon as it is in the log
    c.elect("a")
    c.tick_all(2)
    assert c["b"].log.term(2) == 2 and c["b"].voters == ABC


def test_snapshot_metadata_carries_the_configuration_at_its_index() -> None:
    c = Cluster(ABC, extra=("d",))
    c.elect("a")
    before = c["a"].applied_snapshot_meta()
    c["a"].propose_conf_change(ConfChange(ConfChangeKind.ADD_LEARNER, "d"))
    c.process("a")  # appended (so in effect) but not yet committed or applied
    assert c["a"].learners == ("d",)
    assert c["a"].applied_snapshot_meta().conf == before.conf == ConfState(ABC, ())
    c.deliver()
    c.tick_all(2)
    assert c["a"].applied_snapshot_meta().conf == ConfState(ABC, ("d",))


# ---------------------------------------------------------------------------
# majorities


def test_quorum_majority_index_and_vote_result() -> None:
    from raftkv.raft.quorum import VoteResult, majority, quorum_index, vote_result

    assert [majority(n) for n in (1, 2, 3, 4, 5)] == [1, 2, 2, 3, 3]
    with pytest.raises(ValueError):
        majority(0)
    assert quorum_index([7, 3, 9], 3) == 7
    assert quorum_index([7, 3, 9, 1], 4) == 3
    assert quorum_index([9], 3) == 0  # voters not heard from count as 0
    assert quorum_index([9, 8], 3) == 8
    assert vote_result(2, 0, 3) is VoteResult.WON
    assert vote_result(1, 2, 3) is VoteResult.LOST
    assert vote_result(2, 2, 5) is VoteResult.PENDING
    assert vote_result(1, 0, 1) is VoteResult.WON


# ---------------------------------------------------------------------------
# followers that lost entries they acknowledged


def _cluster_with_history(writes: int = 5, **cfg: object) -> Cluster:
    c = Cluster(ABC, **cfg)
    c.elect("a")
    for i in range(writes):
        c["a"].propose(b"v%d" % i)
    c.deliver()
    c.heartbeat("a")
    assert c["c"].commit == c["a"].commit == c["a"].log.last_index()
    return c


def _assert_caught_up(c: Cluster, node: str) -> None:
    leader = c["a"]
    last = leader.log.last_index()
    assert c[node].log.last_index() == last and c[node].commit == leader.commit
    assert [c[node].log.term(i) for i in range(c[node].log.offset + 1, last + 1)] == [
        leader.log.term(i) for i in range(c[node].log.offset + 1, last + 1)
    ]
    assert leader.progress[node].match == last


def test_wiped_follower_is_repaired_by_the_leader() -> None:
    c = _cluster_with_history()
    c.wipe("c")
    assert not c["c"].bootstrapped
    c.heartbeat("a")
    c.heartbeat("a")
    _assert_caught_up(c, "c")
    assert c.data_applied("c") == c.data_applied("a") == [b"v%d" % i for i in range(5)]
    # It asked the leader for a quorum-confirmed commit index to catch up
    # to; that read is its own business, not one the driver must serve.
    assert any(m.type == MsgType.READ_INDEX and m.frm == "c" for m in c.sent)
    assert c.read_states["c"] == []
    assert c["c"].bootstrapped


def test_follower_whose_wal_tail_was_cut_is_repaired() -> None:
    c = _cluster_with_history()
    st = c.storage["c"]
    st.entries = st.entries[:-1]  # the last acknowledged entry is gone
    st.hard_state = st.hard_state._replace(commit=min(st.hard_state.commit, len(st.entries)))
    c.restart("c")
    assert c["c"].bootstrapped  # it has a past: an ordinary restart
    assert c["c"].log.last_index() == c["a"].log.last_index() - 1
    c.heartbeat("a")
    c.heartbeat("a")
    _assert_caught_up(c, "c")


@pytest.mark.parametrize("leader_compacted", [False, True])
def test_follower_restarted_with_only_its_snapshot_is_repaired(leader_compacted: bool) -> None:
    c = _cluster_with_history(writes=4)
    meta = c["c"].applied_snapshot_meta()
    c["c"].snapshot_taken(meta, b"snap-c")
    c.storage["c"].compact(Snapshot(meta, b"snap-c"))
    for i in range(3):
        c["a"].propose(b"w%d" % i)
    c.deliver()
    c.heartbeat("a")
    st = c.storage["c"]
    st.entries = []  # everything after the snapshot is lost
    st.hard_state = st.hard_state._replace(commit=meta.index)
    if leader_compacted:
        c["a"].snapshot_taken(c["a"].applied_snapshot_meta(), b"snap-a")
    c.restart("c")
    assert c["c"].log.last_index() == meta.index < c["a"].progress["c"].match
    c.heartbeat("a")
    c.heartbeat("a")
    _assert_caught_up(c, "c")
    assert c.snapshots["c"] == ([b"snap-a"] if leader_compacted else [])


def test_stale_answers_cannot_reset_a_healthy_follower() -> None:
    c = Cluster(ABC)
    c.elect("a")
    c.heartbeat("a")
    c.blocked.add("c")
    for i in range(5):
        c["a"].propose(b"v%d" % i)
    c.deliver()
    c.blocked.clear()
    # c answers a heartbeat with its short log and rejects the append the
    # leader sends it; hold those answers back...
    held: list[Message] = []

    def hold_from_c(types: set[MsgType]) -> Filter:
        def keep(m: Message) -> bool:
            if m.frm == "c" and m.type in types:
                held.append(m)
                return False
            return True

        return keep

    c.tick("a")
    c.deliver(hold_from_c({MsgType.HEARTBEAT_RESP}))
    c.tick("a")
    c.deliver(hold_from_c({MsgType.APP_RESP}))
    assert {m.type for m in held} == {MsgType.HEARTBEAT_RESP, MsgType.APP_RESP}
    assert all(m.index < c["a"].log.last_index() for m in held if m.type == MsgType.HEARTBEAT_RESP)
    assert any(m.reject for m in held)
    # ... let c catch up, then deliver them late, twice.
    c.tick_all(3)
    last = c["a"].log.last_index()
    assert c["a"].progress["c"].match == last
    c.sent.clear()
    for m in held + held:
        c["a"].step(m)
    c.process("a")
    pr = c["a"].progress["c"]
    assert pr.match == last and pr.state.value == "replicate"
    assert not [m for m in c.sent if m.type == MsgType.APP and m.to == "c" and m.index < last]


def test_progress_believes_a_loss_only_from_an_answer_newer_than_the_acknowledgement() -> None:
    from raftkv.raft.progress import Progress, ProgressState

    pr = Progress(next_index=11, max_inflight=4)
    assert pr.maybe_update(10)
    pr.match_round = 3  # the leader's round when match reached 10
    pr.become_replicate()
    assert not pr.lost_entries(3, 4)  # may predate the acknowledgement
    assert not pr.lost_entries(4, 10)  # newer, and the follower has it all
    assert pr.lost_entries(4, 4)
    pr.reset_after_loss(4)
    assert (pr.match, pr.next, pr.state) == (0, 5, ProgressState.PROBE)
    # A probe rejected at the match index is stale (or a loss the next
    # heartbeat answer proves): no immediate resend of the same probe.
    pr = Progress(next_index=11, max_inflight=4)
    pr.maybe_update(10)
    pr.become_probe()
    assert not pr.maybe_decrease_to(rejected=10, hint=3)


# ---------------------------------------------------------------------------
# wiped voters


@pytest.mark.parametrize(
    "voters, restored, bootstrapped",
    [
        (ABC, RestoredState(), False),
        (ABC, RestoredState(HardState(1, None, 0)), True),
        (ABC, RestoredState(HardState(1, None, 0), None, entries(1)), True),
        (ABC, RestoredState(HardState(0, None, 0), SnapshotMeta(3, 1, ConfState(ABC)), []), True),
        (("a",), RestoredState(), True),  # a single voter has nobody to ask
        (("b", "c"), RestoredState(), True),  # not a voter yet: a node being added
    ],
)
def test_which_restored_states_start_unbootstrapped(
    voters: tuple[str, ...], restored: RestoredState, bootstrapped: bool
) -> None:
    assert RaftCore(RaftConfig("a", voters), random.Random(0), restored).bootstrapped is bootstrapped


def _ticks_to_first_leader(c: Cluster, limit: int = 200) -> int:
    for ticks in range(1, limit + 1):
        c.tick_all()
        if any(core.role is Role.LEADER for core in c.cores.values()):
            return ticks
    raise AssertionError("no leader")


@pytest.mark.parametrize("n", [3, 5])
@pytest.mark.parametrize("pre_vote", [True, False])
def test_fresh_cluster_elects_quickly(n: int, pre_vote: bool) -> None:
    # Every node starts unbootstrapped; they learn from each other's
    # pre-votes that the cluster is new. A leader comes within 1.5 election
    # timeouts on average: of 3 nodes the first to time out wins, as without
    # the rule; of 5 the second (the first learns too late that all are empty).
    voters = tuple("abcde"[:n])
    took = []
    for seed in range(20):
        c = Cluster(voters, pre_vote=pre_vote, election_ticks=10)
        for i, node in enumerate(voters):
            c.cores[node]._rng.seed(seed * 10 + i)
            c.cores[node]._reset_randomized_timeout()
        assert not any(core.bootstrapped for core in c.cores.values())
        took.append(_ticks_to_first_leader(c))
        c.tick_all(3)
        assert all(core.bootstrapped for core in c.cores.values())
    assert max(took) <= 30 and sum(took) / len(took) <= 15


def _wiped_voter_scenario(pre_vote: bool) -> tuple[Cluster, int]:
    """X is committed on a and c only; then c's data dir is wiped and a is
    down. b lacks X: if c voted for it, b would lead and X would be lost."""
    c = Cluster(ABC, pre_vote=pre_vote)
    c.elect("a")
    c.heartbeat("a")
    c.blocked.add("b")
    c["a"].propose(b"X")
    c.deliver()
    c.heartbeat("a")
    x = c["a"].log.last_index()
    assert c["a"].commit == x and c["c"].log.last_index() == x and c["b"].log.last_index() < x
    c.wipe("c")
    c.blocked = {"a"}
    c.sent.clear()
    return c, x


@pytest.mark.parametrize("pre_vote", [True, False])
def test_wiped_voter_never_votes_for_a_candidate_missing_a_committed_entry(pre_vote: bool) -> None:
    c, x = _wiped_voter_scenario(pre_vote)
    c.tick_all(300)
    assert c["b"].role is not Role.LEADER and c["c"].role is not Role.LEADER
    grants = [m for m in c.sent if m.frm == "c" and m.type in (MsgType.VOTE_RESP, MsgType.PRE_VOTE_RESP) and not m.reject]
    assert grants == []
    assert not c["c"].bootstrapped and c["c"].term == 0  # it adopts a term only from a leader
    # The danger is real: a wiped node that took its empty log for the
    # truth (what every node did before this rule) elects b, and X is gone.
    c2, _ = _wiped_voter_scenario(pre_vote)
    c2["c"].bootstrapped = True
    c2.tick_all(300)
    assert c2["b"].role is Role.LEADER and c2["b"].log.term(x) != c2["a"].log.term(x)


def test_wiped_voter_is_repaired_and_then_votes_normally() -> None:
    c, x = _wiped_voter_scenario(pre_vote=True)
    c.tick_all(50)
    c.blocked.clear()
    for _ in range(100):
        c.tick_all()
        if c["c"].bootstrapped:
            break
    assert c["c"].bootstrapped
    leader = c.leader()
    assert leader.id == "a" and c["c"].log.term(x) == c["a"].log.term(x) and c["c"].commit >= x
    # Now c votes like any member: with a gone, b and c elect one of them.
    c.blocked.add("a")
    c.sent.clear()
    c.tick_all(60)
    new = c.leader()
    assert new.id in ("b", "c") and new.log.term(x) == c["a"].log.term(x)
    voter = "c" if new.id == "b" else "b"
    assert [m for m in c.sent if m.frm == voter and m.type == MsgType.VOTE_RESP and not m.reject]


def test_wiped_voter_grants_when_every_other_voter_reported_a_log_the_candidate_covers() -> None:
    # The way out when the wiped node's vote is needed and no leader can
    # reach it: here a and b report their logs through their pre-votes.
    c = _cluster_with_history(writes=2, check_quorum=False)
    c.wipe("c")
    c.blocked = {"a"}  # a is down for good: b needs c's vote
    for _ in range(100):
        c.tick_all()
        if c["b"].role is Role.LEADER:
            break
    # c heard only b: it must not vote until it has a's report too.
    assert c["b"].role is not Role.LEADER
    c.blocked = {"a"}
    c["c"].step(Message(MsgType.PRE_VOTE, "c", "a", c["a"].term + 1, log_term=c["a"].log.last_term(), index=c["a"].log.last_index()))
    c.process("c")
    for _ in range(100):
        c.tick_all()
        if c["b"].role is Role.LEADER:
            break
    assert c["b"].role is Role.LEADER and c["b"].log.last_index() > c["a"].log.last_index()


def test_a_wiped_node_that_stored_a_term_restarts_as_an_ordinary_node() -> None:
    c = _cluster_with_history()
    c.wipe("c")
    c.blocked.add("b")
    c.tick("a")
    c.deliver(keep=lambda m: m.type == MsgType.HEARTBEAT)  # c learns the term, nothing else
    assert c.storage["c"].hard_state.term == c["a"].term and c.storage["c"].entries == []
    c.restart("c")
    assert c["c"].bootstrapped  # the documented limit: the protection covers the wipe, not a second crash
    # ...but it cannot vote twice in the term it took: it recorded the
    # leader as its vote (simulator seed 15530: two leaders in one term).
    term = c["a"].term
    assert c.storage["c"].hard_state.vote == "a" and c["c"].vote == "a"
    c.blocked.clear()
    c["c"].step(Message(MsgType.VOTE, "c", "b", term, log_term=c["b"].log.last_term(), index=c["b"].log.last_index()))
    answers = [m for m in c["c"].ready().messages if m.type == MsgType.VOTE_RESP]
    assert answers and all(m.reject for m in answers)


# ---------------------------------------------------------------------------
# readiness inputs


def test_leader_commit_is_the_leaders_real_commit_and_ticks_count_from_its_last_heartbeat() -> None:
    c = Cluster(ABC)
    c.elect("a")
    c.heartbeat("a")
    a, b = c["a"], c["b"]
    assert a.leader_commit == a.commit and a.ticks_since_leader == 0
    # A heartbeat carries the leader's own age: its quorum last answered the
    # round before, a tick ago.
    assert b.leader_commit == a.commit and b.ticks_since_leader == 1
    # b misses x: heartbeats cap b's commit at its match, yet report the real commit.
    a.propose(b"x")
    c.deliver(keep=lambda m: not (m.type == MsgType.APP and m.to == "b"))
    c.tick("a")
    c.deliver(keep=lambda m: not (m.to == "b" and m.type == MsgType.APP))
    assert a.commit == a.log.last_index()
    assert b.leader_commit == a.commit and b.commit < a.commit
    c.tick("b", 3)
    assert b.ticks_since_leader == 4
    c.heartbeat("a")
    assert b.ticks_since_leader == 1 and b.commit == b.leader_commit == a.commit
    # A ReadIndex answer reports it too.
    a.propose(b"y")
    c.deliver(keep=lambda m: m.type != MsgType.HEARTBEAT)
    b.read_index(b"r")
    c.deliver(keep=lambda m: m.type != MsgType.HEARTBEAT or m.to == "c")
    assert b.leader_commit == a.commit
    # No leader: nothing to report.
    c.blocked.add("a")
    c.tick_all(40)
    assert b.leader_id != "a" and (b.role is Role.LEADER or b.leader_commit == c.leader().commit)


def test_a_new_leader_reports_its_last_index_until_it_commits_in_its_term() -> None:
    # Until then its commit index may lag entries the previous leader
    # committed, so a follower that applied up to it could still miss some.
    c = Cluster(ABC, check_quorum=False)
    c.elect("a")
    c["a"].propose(b"x")
    c.deliver()
    c.blocked.add("a")
    votes = {MsgType.PRE_VOTE, MsgType.PRE_VOTE_RESP, MsgType.VOTE, MsgType.VOTE_RESP}
    for _ in range(100):
        c.tick("b")
        c.deliver(keep=lambda m: m.type in votes)
        if c["b"].role is Role.LEADER:
            break
    b = c["b"]
    assert b.role is Role.LEADER and b.commit < b.log.last_index()
    assert b.leader_commit == b.log.last_index()
    c.tick("b")
    c.process("b")
    for m in [m for m in c.queue if m.to == "c"]:
        c["c"].step(m)
    c.queue.clear()
    assert c["c"].leader_id == "b" and c["c"].leader_commit == b.log.last_index()
    c.deliver()
    c.heartbeat("b")
    assert b.commit == b.log.last_index() == b.leader_commit == c["c"].leader_commit


def test_a_cut_off_leader_ages_like_its_followers() -> None:
    # A deposed leader that does not know it yet must not look fresh: on
    # the leader ticks_since_leader counts from the last quorum of answers.
    c = Cluster(ABC, check_quorum=False)
    c.elect("a")
    c.heartbeat("a")
    assert c["a"].ticks_since_leader == 0
    c.blocked.add("c")
    c.heartbeat("a")
    assert c["a"].ticks_since_leader == 0  # a and b are a quorum
    c.blocked.add("b")
    for _ in range(7):
        c.heartbeat("a")
    assert c["a"].role is Role.LEADER and c["a"].ticks_since_leader == 7
    c.blocked.clear()
    c.heartbeat("a")
    assert c["a"].ticks_since_leader == 0


def test_a_deleted_data_dir_gives_the_native_engine_an_unbootstrapped_core(tmp_path: Path) -> None:
    # What NativeEngine.start does with a data dir that does not exist: a
    # real WAL is created empty, recovery finds no snapshot, and the core
    # it builds is unbootstrapped.
    from raftkv.engines.native.recovery import recover
    from raftkv.storage import WAL

    wal = WAL.open(tmp_path / "gone" / "wal")
    try:
        restored = recover(None, wal.recovered).restored
    finally:
        wal.close()
    assert restored == RestoredState()
    assert not RaftCore(RaftConfig("a", ABC), random.Random(0), restored).bootstrapped


def test_a_follower_whose_storage_gave_back_an_older_log_commits_none_of_it() -> None:
    # a's disk loses its latest writes: the entries b's append replaced come
    # back, as long as the ones that replaced them. The leader's heartbeat
    # names its entry at the commit index it hands a; a lacks it, so it
    # commits nothing and says so, and the leader repairs it.
    c = Cluster(ABC, pre_vote=False)
    c.restore("a", entries(1, 1, 1), term=1)  # 2 and 3 were never committed
    c.restore("b", entries(1), term=1)
    c.restore("c", entries(1), term=1)
    old = [Entry(e.index, e.term, e.kind, e.data) for e in c.storage["a"].entries]
    c.blocked.add("a")
    c.elect("b")
    c["b"].propose(b"x")
    c.deliver()
    c.blocked.clear()
    c.heartbeat("b")
    c.heartbeat("b")
    assert [c["a"].log.term(i) for i in (1, 2, 3)] == [1, 2, 2] and c["b"].progress["a"].match == 3
    st = c.storage["a"]
    st.entries = old
    st.hard_state = st.hard_state._replace(commit=1)
    c.restart("a")
    assert c["a"].log.last_index() == 3 and c["a"].log.term(3) == 1
    c.sent.clear()
    c.heartbeat("b")
    assert [m.reject for m in c.sent if m.type == MsgType.HEARTBEAT_RESP and m.frm == "a"] == [True]
    c.heartbeat("b")
    assert [c["a"].log.term(i) for i in (1, 2, 3)] == [1, 2, 2]
    assert c["a"].commit == c["b"].commit == 3
    assert [e.term for e in c.applied["a"]] == [1, 2, 2] and c.data_applied("a")[-1] == b"x"


def test_a_follower_of_a_cut_off_leader_ages_with_it() -> None:
    c = Cluster(tuple("abcde"), check_quorum=False)
    for node in "abcde":
        c.restore(node, [], term=1)  # not fresh: a alone timing out can win
    c.elect("a")
    c.heartbeat("a")
    side = {"a", "b"}
    for _ in range(6):
        c.tick("a")
        c.tick("b")
        c.deliver(keep=lambda m: (m.frm in side) == (m.to in side))
    assert c["a"].role is Role.LEADER and c["b"].leader_id == "a"
    assert c["a"].ticks_since_leader == 6
    assert c["b"].ticks_since_leader >= 6  # heard from a just now, but a's evidence is old
