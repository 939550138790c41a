"""The simulation: nodes running the real RaftDriver on one virtual-time
asyncio loop, clients, nemeses, and the checks.

A run has a *chaos* phase (partitions, crashes, a lossy and duplicating
network, forged frames, snapshots, leadership transfers, membership
changes, wiped data directories, disks that lose synced writes) and then a
*calm* phase (healed network, every node up) in which the cluster must
converge: a liveness check on top of the safety invariants, which are
checked after every tick. The client history is then checked for
linearizability. Everything random draws from generators seeded by the run's
seed, and the loop's clock is virtual, so a seed replays exactly.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from dataclasses import dataclass, field
from typing import Any

from jepsen_style.checker.linearizability import Operation, check
from jepsen_style.checker.models import keyed_register_model
from jepsen_style.checker.operation import UNKNOWN

from raftkv.engines.native import driver as native_driver
from raftkv.errors import EngineStoppedError, NoLeaderError, OutcomeUnknownError, ReadTimeoutError
from raftkv.raft.types import (
    ConfChange,
    ConfChangeKind,
    ConfState,
    InvalidConfChange,
    ProposalDropped,
    RaftConfig,
    Role,
)
from raftsim.disk import NodeCrashed
from raftsim.forgery import Forger
from raftsim.invariants import InvariantChecker, SafetyViolation
from raftsim.kv import encode_command
from raftsim.loop import run_deterministically
from raftsim.network import NetworkFaults, SimNetwork
from raftsim.node import NodeOptions, SimNode
from raftsim.readiness import ReadinessCheck

TICK = 0.05  # virtual seconds per Raft tick (NativeOptions.tick_ms)


class SimulationFailure(AssertionError):
    def __init__(self, seed: int, reason: str) -> None:
        self.seed = seed
        self.reason = reason
        super().__init__(
            f"seed {seed}: {reason}\n  replay: RAFT_SIM_SEED={seed} .venv/bin/pytest tests/test_raft_simulation.py -k replay -q"
        )


@dataclass(frozen=True, slots=True)
class SimConfig:
    chaos_ticks: int = 70
    calm_ticks: int = 400  # upper bound; the run ends as soon as the cluster converged
    calm_op_ticks: int = 10  # clients keep issuing operations this long after healing
    clients: int = 3
    keys: int = 2
    op_timeout_ticks: int = 30
    membership: bool = True
    check_linearizability: bool = True
    # True: a wiped node restarts only once every other node is past the
    # term it last voted in (it has forgotten that vote), for a core that
    # does not keep wiped nodes from voting. raftkv's core does (a node
    # restored from nothing stays unbootstrapped), so by default wiped nodes
    # come back at any time, half of them at once.
    wipe_waits_for_newer_terms: bool = False
    # A run sends about a thousand messages; this many means nodes are stuck
    # in a loop (which in virtual time would run for minutes of CPU).
    max_messages: int = 40_000


@dataclass
class SimResult:
    seed: int
    nodes: int
    ticks: int = 0
    ops_ok: int = 0
    ops_unknown: int = 0
    ops_failed: int = 0
    reads_ok: int = 0
    elections: int = 0
    committed: int = 0
    messages: int = 0
    snapshots_installed: int = 0
    snapshots_saved: int = 0
    conf_changes: int = 0
    transfers: int = 0
    crashes: int = 0
    torn_tails_cut: int = 0
    wipes: int = 0
    lost_tails: int = 0
    forged: int = 0
    rejected_frames: int = 0
    trace: int = 0  # digest of every message delivery (see NetworkStats.trace)


@dataclass
class _Client:
    id: int
    last_seen: dict[str, Any] = field(default_factory=dict)


class Simulation:
    def __init__(self, seed: int, cfg: SimConfig) -> None:
        self.seed = seed
        self.cfg = cfg
        rng = self.rng = random.Random(seed)
        n = 3 if seed % 2 == 0 else 5
        self.all_ids = [f"n{i}" for i in range(1, n + 1)]
        # With membership changes on, one node starts outside the cluster
        # so it can be added (as a learner, then promoted) and removed.
        extra = 1 if cfg.membership and rng.random() < 0.5 else 0
        self.voters = tuple(self.all_ids[: n - extra])
        self.result = SimResult(seed, n)
        self.election_ticks = rng.choice((6, 10))
        # Cluster-wide, as in a real deployment: mixing nodes with and
        # without PreVote can livelock (a pre-candidate one term behind a
        # plain candidate never catches up).
        self.pre_vote = rng.random() < 0.8
        self.check_quorum = rng.random() < 0.8
        self.p_conf = rng.choice((0.0, 0.02)) if cfg.membership else 0.0
        if self.p_conf and not (self.pre_vote or self.check_quorum):
            # A removed node that never learns of its removal keeps
            # campaigning; only PreVote or leader stickiness (CheckQuorum)
            # protects the cluster (Raft dissertation, 4.2.3).
            self.check_quorum = True
        self.faults = NetworkFaults(
            drop=rng.choice((0.0, 0.02, 0.1)),
            duplicate=rng.choice((0.0, 0.02, 0.05)),
            max_delay=TICK * rng.choice((0.05, 0.5, 2.0)),
            forge=rng.choice((0.0, 0.0, 0.02, 0.1)),
        )
        self.p_crash = rng.choice((0.0, 0.01, 0.03))
        self.p_partition = rng.choice((0.0, 0.02, 0.05))
        self.p_transfer = rng.choice((0.0, 0.01, 0.03))
        self.p_wipe = rng.choice((0.0, 0.0, 0.01, 0.03))
        self.p_lose_tail = rng.choice((0.0, 0.02, 0.05))
        self.p_op = rng.choice((0.3, 0.7))
        self.keys = [f"k{i}" for i in range(cfg.keys)]
        self.history: list[Operation] = []
        self._clock = 0.0
        self._next_req = 1
        self._problems: list[str] = []
        self._accepting_ops = True
        self._pending_ops = 0
        # The node that lost data (wipe or lying disk) and the commit index it
        # must reach before another node may lose data; wipes waiting to restart.
        self._impaired: tuple[str, int] | None = None
        self._wiped_waiting: dict[str, int] = {}  # node -> the term it may have voted in
        self.checker = InvariantChecker(ConfState(self.voters))
        # election_ticks of a node's ticks, which run up to 20% slow; a tick
        # of ours between checks; the network's delay.
        self.readiness = ReadinessCheck(TICK * (self.election_ticks * 1.2 + 2) + self.faults.max_delay)
        self.nodes: dict[str, SimNode] = {}

    # ------------------------------------------------------------------
    def run(self) -> SimResult:
        driver_log = logging.getLogger(native_driver.__name__)
        driver_log.addFilter(_drop_simulated_power_cuts)
        try:
            run_deterministically(self._main)
        except SafetyViolation as exc:
            raise SimulationFailure(self.seed, str(exc)) from exc
        finally:
            driver_log.removeFilter(_drop_simulated_power_cuts)
        if self.cfg.check_linearizability and self.history:
            verdict = check(self.history, keyed_register_model(), timeout=20.0)
            if verdict.verdict == "not-linearizable":
                raise SimulationFailure(self.seed, f"history not linearizable: {verdict.failure}")
        return self.result

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(self._on_loop_exception)
        rng = self.rng
        self.forger = Forger(random.Random(self.seed ^ 0xF0F0))
        self.net = SimNetwork(
            loop, random.Random(self.seed ^ 0x5EED), self.faults, self.forger, max_messages=self.cfg.max_messages
        )
        peer_ids = frozenset(self.all_ids)
        for i, node_id in enumerate(self.all_ids):
            rc = RaftConfig(
                node_id,
                self.voters,
                election_ticks=self.election_ticks,
                heartbeat_ticks=rng.choice((1, 2)),
                max_entries_per_msg=rng.choice((1, 3, 64)),
                max_inflight_msgs=rng.choice((1, 4, 64)),
                max_snapshot_chunk=rng.choice((16, 64, 1 << 20)),
                pre_vote=self.pre_vote,
                check_quorum=self.check_quorum,
                stale_snapshot_bytes=rng.choice((None, 0, 64, 1 << 20)),
            )
            options = NodeOptions(random.Random(self.seed * 16 + i), self.election_ticks)
            self.nodes[node_id] = SimNode(
                rc, peer_ids, self.seed * 16 + i, options, self.net, self.checker, self._problems.append
            )
        for node in self.nodes.values():
            node.start()
        clients = [
            loop.create_task(self._client(_Client(i), random.Random(self.seed * 64 + i)), name=f"client {i}")
            for i in range(self.cfg.clients)
        ]
        try:
            for _ in range(self.cfg.chaos_ticks):
                await asyncio.sleep(TICK)
                self._chaos()
                self._check()
            self.net.heal()
            for node in self.nodes.values():
                node.options.p_sync_power_cut = 0.0
            calm_left = self.cfg.calm_ticks
            while True:
                calm_left -= 1
                for node in self.nodes.values():
                    if not node.alive:
                        self._restart(node, calm=True)
                if self.cfg.calm_ticks - calm_left > self.cfg.calm_op_ticks:
                    self._accepting_ops = False
                await asyncio.sleep(TICK)
                self._check()
                if not self._accepting_ops and self._pending_ops == 0 and self._converged():
                    break
                if calm_left <= 0:
                    raise SimulationFailure(self.seed, f"no convergence after the calm period: {self._describe()}")
        finally:
            for task in clients:
                task.cancel()
            for node in self.nodes.values():
                node.crash()
        self._summarise()

    def _on_loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        self._problems.append(f"{context.get('message')}: {exc!r}")

    def _check(self) -> None:
        if self._problems:
            raise SimulationFailure(self.seed, "; ".join(self._problems[:3]))
        if self.forger.stats.problems:
            raise SimulationFailure(self.seed, self.forger.stats.problems[0])
        nodes = list(self.nodes.values())
        try:
            self.checker.check_durable_quorum(nodes)
            self.readiness.check(asyncio.get_running_loop().time(), nodes, self.checker)
        except SafetyViolation as exc:
            raise SimulationFailure(self.seed, f"at {asyncio.get_running_loop().time():.2f}s: {exc}") from exc
        impaired = self._impaired
        if impaired is not None:
            node = self.nodes[impaired[0]]
            if node.alive and node.applied >= impaired[1]:
                self._impaired = None

    def _summarise(self) -> None:
        r = self.result
        r.ticks = round(asyncio.get_running_loop().time() / TICK)
        r.elections = self.checker.elections
        r.committed = self.checker.max_committed
        r.snapshots_installed = self.checker.snapshots_installed
        r.messages = self.net.stats.sent
        r.forged = self.net.stats.forged
        r.trace = self.net.stats.trace
        for node in self.nodes.values():
            r.torn_tails_cut += node.disk.torn_tails_cut
            r.rejected_frames += node.rejected_frames
            r.crashes += node.crashes_in_sync
            r.snapshots_saved += node.snapshots_saved

    def _describe(self) -> str:
        parts = []
        for n in self.nodes.values():
            c = n.core
            parts.append(
                f"{n.id}(alive={n.alive} {c.role.value} t={c.term} lead={c.leader_id} commit={c.commit} "
                f"applied={c.applied} last={c.log.last_index()} voters={c.voters} learners={c.learners})"
            )
        return "; ".join(parts) + f"; pending client ops {self._pending_ops}"

    def _converged(self) -> bool:
        leaders = [n for n in self.nodes.values() if n.is_leader()]
        if len(leaders) != 1:
            return False
        lead = leaders[0].core
        if lead.log.term(lead.commit) != lead.term:
            return False
        members = set(lead.voters) | set(lead.learners)
        return all(
            n.alive and n.core.applied == lead.commit and n.core.leader_id == lead.id
            for n in self.nodes.values()
            if n.id in members
        )

    # ------------------------------------------------------------------
    # nemeses
    def _chaos(self) -> None:
        rng = self.rng
        nodes = list(self.nodes.values())
        alive = [n for n in nodes if n.alive]
        if self.p_crash and alive and rng.random() < self.p_crash:
            rng.choice(alive).crash()
            self.result.crashes += 1
        if self.p_wipe and alive and self._impaired is None and rng.random() < self.p_wipe:
            # Mostly a node that voted in an election still under way: a
            # wipe then forgets a vote that matters.
            voted = [n for n in alive if n.core.vote is not None and n.core.leader_id is None]
            self._wipe(rng.choice(voted if voted and rng.random() < 0.7 else alive))
        if self.p_lose_tail and alive and self._impaired is None and rng.random() < self.p_lose_tail:
            self._lose_tail(rng.choice(alive))
        for n in nodes:
            if not n.alive and rng.random() < 0.08:
                self._restart(n, calm=False)
        if self.p_partition and rng.random() < self.p_partition:
            self._partition()
        if self.net.blocked and rng.random() < 0.06:
            self.net.heal()
        leader = self._leader()
        if leader is not None and self.p_transfer and rng.random() < self.p_transfer:
            try:
                leader.driver.transfer_leadership(rng.choice(self.all_ids))
                self.result.transfers += 1
            except (ValueError, ProposalDropped):
                pass
        if leader is not None and self.p_conf and rng.random() < self.p_conf:
            self._membership_change(leader)

    def _restart(self, node: SimNode, calm: bool) -> None:
        voted_in = self._wiped_waiting.get(node.id)
        if voted_in is not None:
            others = [n for n in self.nodes.values() if n is not node]
            if self.cfg.wipe_waits_for_newer_terms and not all(
                max(n.core.term, n.disk.durable_term_vote[0]) > voted_in for n in others
            ):
                if not calm:
                    return
                # The cluster is calm and its term will not move: the wipe is
                # called off (the disk is restored) rather than risk a double vote.
                node.disk.restore_wiped()
            del self._wiped_waiting[node.id]
        node.start()

    def _wipe(self, node: SimNode) -> None:
        """The node's data directory is lost; it restarts empty.

        Allowed (the restriction the protocol needs, see docs/simulation.md)
        only when no other node lost data and has not caught up since, and
        every entry the node holds durably is durable on a quorum of the
        other voters: then no committed entry depended on its copy. It
        restarts only once every other node's term is past the one it may
        have voted in, unless the config lifts that wait.
        """
        disk = node.disk
        last = disk.durable.last_index
        if not self._others_hold(node, last, from_index=max(1, disk.snapshot_index + 1)):
            return
        if disk.snapshot_index and not self._others_hold(node, disk.snapshot_index, snapshot=True):
            return
        node.crash()
        term = disk.durable_term_vote[0]
        disk.wipe()
        self._impaired = (node.id, self.checker.max_committed)
        self.result.wipes += 1
        self.result.crashes += 1
        if self.cfg.wipe_waits_for_newer_terms:
            self._wiped_waiting[node.id] = term
        elif self.rng.random() < 0.5:
            # Back at once, while vote requests of the election it voted in
            # are still in flight to it.
            node.start()

    def _lose_tail(self, node: SimNode) -> None:
        """A disk that acknowledged fsyncs it did not do: the node loses the
        WAL written since an earlier sync.

        Restricted like a wipe (one node at a time; every entry it loses is
        durable on a quorum of the others), and the cut keeps its durable
        term and vote: a forgotten vote is the wipe's problem, and a disk
        that loses some syncs but not others cannot be made safe for it.
        """
        disk = node.disk
        node.crash()
        self.result.crashes += 1
        term_vote = disk.durable_term_vote
        points = [p for p, tv in disk.sync_points[:-1] if tv == term_vote]
        if not points:
            return
        before = disk.durable.last_index
        old_terms = [disk.durable_term(i) for i in range(before + 1)]
        saved = disk.saved_wal()
        for cut in reversed(points[-4:]):
            disk.lose_tail(cut)
            # Lost: every entry the cut removed or rolled back to an older
            # version (the disk may go back to before a truncation).
            lost = [i for i in range(1, before + 1) if disk.durable_term(i) != old_terms[i]]
            if not lost or self._others_hold_terms(node, {i: old_terms[i] for i in lost}):
                self._impaired = (node.id, self.checker.max_committed)
                self.result.lost_tails += 1
                return
            disk.restore_wal(saved)  # not allowed: the power cut alone stands

    def _others_hold_terms(self, node: SimNode, entries: dict[int, int | None]) -> bool:
        """Each (index, term) in ``entries`` is durable on a quorum of the
        other voters (of every configuration it may count in)."""
        others = [n for n in self.nodes.values() if n is not node]
        for index, term in entries.items():
            holders = [
                n.id
                for n in others
                if n.disk.snapshot_index >= index or (term is not None and n.disk.durable_term(index) == term)
            ]
            if not self.checker.on_a_quorum(holders, index, every=True):
                return False
        return True

    def _others_hold(self, node: SimNode, last: int, from_index: int = 1, snapshot: bool = False) -> bool:
        """Every durable entry of ``node`` in from_index..last is durable on a
        quorum of the other voters (of every configuration it may count in)."""
        disk = node.disk
        others = [n for n in self.nodes.values() if n is not node]
        for index in range(max(from_index, 1), last + 1):
            term = disk.durable_term(index)
            holders = [
                n.id
                for n in others
                if n.disk.snapshot_index >= index or (term is not None and n.disk.durable_term(index) == term)
            ]
            if not self.checker.on_a_quorum(holders, index, every=True):
                return False
        return True

    def _leader(self) -> SimNode | None:
        leaders = [n for n in self.nodes.values() if n.is_leader()]
        if not leaders:
            return None
        return max(leaders, key=lambda n: n.core.term)

    def _partition(self) -> None:
        rng = self.rng
        ids = self.all_ids
        kind = rng.randrange(3)
        if kind == 0:
            shuffled = ids[:]
            rng.shuffle(shuffled)
            cut = rng.randint(1, len(ids) - 1)
            self.net.split(shuffled[:cut], shuffled[cut:])
        elif kind == 1:
            leader = self._leader()
            victim = leader.id if leader is not None else rng.choice(ids)
            self.net.isolate(victim, ids)
        else:
            a, b = rng.sample(ids, 2)
            self.net.cut_one_way(a, b)

    def _membership_change(self, leader: SimNode) -> None:
        rng = self.rng
        core = leader.core
        outsiders = [i for i in self.all_ids if i not in core.voters and i not in core.learners]
        choices: list[ConfChange] = []
        for i in outsiders:
            choices.append(ConfChange(ConfChangeKind.ADD_LEARNER, i))
        for i in core.learners:
            choices.append(ConfChange(ConfChangeKind.PROMOTE, i))
            choices.append(ConfChange(ConfChangeKind.REMOVE, i))
        if len(core.voters) > 2:
            choices.extend(ConfChange(ConfChangeKind.REMOVE, v) for v in core.voters)
        if not choices:
            return
        change = rng.choice(choices)
        try:
            core.propose_conf_change(change)
            leader.driver.wake()
            self.result.conf_changes += 1
        except (ProposalDropped, InvalidConfChange):
            pass

    # ------------------------------------------------------------------
    # clients
    def _stamp(self) -> float:
        self._clock += 1.0
        return self._clock

    async def _client(self, client: _Client, rng: random.Random) -> None:
        timeout = self.cfg.op_timeout_ticks * TICK
        while True:
            await asyncio.sleep(TICK * rng.uniform(0.2, 1.0) / self.p_op)
            if not self._accepting_ops:
                return
            alive = [n for n in self.nodes.values() if n.alive]
            if not alive:
                continue
            node = rng.choice(alive)
            key = rng.choice(self.keys)
            req_id = self._next_req
            self._next_req += 1
            r = rng.random()
            if r < 0.4:
                inp: tuple[str, str, Any] = (key, "read", None)
            elif r < 0.8:
                inp = (key, "write", req_id)
            else:
                expected = client.last_seen.get(key) if rng.random() < 0.7 else rng.choice((None, req_id - 1))
                inp = (key, "cas", (expected, req_id))
            self._pending_ops += 1
            try:
                await self._perform(client, node, inp, req_id, timeout)
            finally:
                self._pending_ops -= 1

    async def _perform(self, client: _Client, node: SimNode, inp: tuple[str, str, Any], req_id: int, timeout: float) -> None:
        key, kind, arg = inp
        call = self._stamp()
        incarnation = node.incarnation
        result = self.result
        try:
            if kind == "read":
                await node.read_fence(timeout)
                if not node.alive or node.incarnation != incarnation:
                    result.ops_failed += 1
                    return
                output: Any = node.kv.read(key)
                result.reads_ok += 1
            elif kind == "write":
                output = (await node.propose(encode_command(req_id, "put", key, arg), timeout))[1]
            else:
                output = (await node.propose(encode_command(req_id, "cas", key, list(arg)), timeout))[1]
        except (NoLeaderError, ReadTimeoutError):
            # Definitely not applied (the engine's promise, which the
            # linearizability check holds it to): not part of the history.
            result.ops_failed += 1
            return
        except (OutcomeUnknownError, EngineStoppedError):
            if kind == "read":
                result.ops_failed += 1
            else:
                # A write may still take effect later, at any time.
                self.history.append(Operation(client.id, inp, call, UNKNOWN, math.inf))
                result.ops_unknown += 1
            return
        self.history.append(Operation(client.id, inp, call, output, self._stamp()))
        if kind == "read":
            client.last_seen[key] = output
        elif kind == "write":
            client.last_seen[key] = arg
        result.ops_ok += 1


def _drop_simulated_power_cuts(record: logging.LogRecord) -> bool:
    """The driver logs a failed sync as critical; a simulated power cut is not news."""
    return not (record.exc_info and isinstance(record.exc_info[1], NodeCrashed))


def run_simulation(seed: int, cfg: SimConfig | None = None) -> SimResult:
    return Simulation(seed, cfg or SimConfig()).run()
