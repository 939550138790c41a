"""The simulation loop: faults, clients, scheduling and the final checks.

A run has a *chaos* phase (partitions, crashes, lossy network, snapshots,
leadership transfers, membership changes) and then a *calm* phase (healed
network, every node up) in which the cluster must converge: a liveness
check on top of the safety invariants. The client history is then checked
for linearizability.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

from jepsen_style.checker.linearizability import Operation, check
from jepsen_style.checker.models import keyed_register_model
from jepsen_style.checker.operation import UNKNOWN

from raftkv.raft.sim.invariants import InvariantChecker, SafetyViolation
from raftkv.raft.sim.kv import encode_command
from raftkv.raft.sim.network import NetworkFaults, SimNetwork
from raftkv.raft.sim.node import CrashPoint, SimNode
from raftkv.raft.types import (
    ConfChange,
    ConfChangeKind,
    ConfState,
    InvalidConfChange,
    ProposalDropped,
    RaftConfig,
    Role,
)


class SimulationFailure(AssertionError):
    def __init__(self, seed: int, reason: str) -> None:
        self.seed = seed
        self.reason = reason
        super().__init__(
            f"seed {seed}: {reason}\n  replay: RAFT_SIM_SEED={seed} .venv/bin/pytest tests/test_raft_simulation.py -k replay -q"
        )


@dataclass(frozen=True, slots=True)
class SimConfig:
    chaos_ticks: int = 120
    calm_ticks: int = 300  # upper bound; the run ends as soon as the cluster converged
    calm_op_ticks: int = 20  # clients keep issuing operations this long after healing
    clients: int = 3
    keys: int = 2
    op_timeout: int = 30
    membership: bool = True
    check_linearizability: bool = True


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
    conf_changes: int = 0
    transfers: int = 0
    crashes: int = 0


@dataclass
class _PendingOp:
    client: int
    input: tuple[str, str, Any]
    call: float
    via: str
    incarnation: int
    deadline: int
    req_id: int


@dataclass
class _Client:
    id: int
    op: _PendingOp | None = None
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
        voters = tuple(self.all_ids[: n - extra])
        self.result = SimResult(seed, n)
        election = rng.choice((6, 10))
        # Cluster-wide, as in a real deployment: mixing nodes with and
        # without PreVote can livelock (a pre-candidate one term behind a
        # plain candidate never catches up).
        pre_vote = rng.random() < 0.8
        check_quorum = rng.random() < 0.8
        p_conf = rng.choice((0.0, 0.02)) if cfg.membership else 0.0
        if p_conf and not (pre_vote or check_quorum):
            # A removed node that never learns of its removal keeps
            # campaigning; only PreVote or leader stickiness (CheckQuorum)
            # protects the cluster (Raft dissertation, 4.2.3).
            check_quorum = True
        send_early = rng.random() < 0.5
        lazy_commit = rng.random() < 0.5
        self.nodes: dict[str, SimNode] = {}
        for i, node_id in enumerate(self.all_ids):
            rc = RaftConfig(
                node_id,
                voters,
                election_ticks=election,
                heartbeat_ticks=rng.choice((1, 2)),
                max_entries_per_msg=rng.choice((1, 3, 64)),
                max_inflight_msgs=rng.choice((1, 4, 64)),
                max_snapshot_chunk=rng.choice((16, 64, 1 << 20)),
                pre_vote=pre_vote,
                check_quorum=check_quorum,
            )
            self.nodes[node_id] = SimNode(rc, seed * 16 + i, send_early=send_early, lazy_commit=lazy_commit)
        faults = NetworkFaults(
            drop=rng.choice((0.0, 0.02, 0.1)),
            duplicate=rng.choice((0.0, 0.02, 0.05)),
            min_delay=0,
            max_delay=rng.choice((1, 2, 4)),
        )
        self.net = SimNetwork(random.Random(seed ^ 0x5EED), faults)
        self.checker = InvariantChecker(ConfState(voters))
        self.now = 0
        self._clock = 0.0
        self.history: list[Operation] = []
        self.clients = [_Client(i) for i in range(cfg.clients)]
        self._by_req: dict[int, _PendingOp] = {}
        self._next_req = 1
        self.keys = [f"k{i}" for i in range(cfg.keys)]
        self.p_crash = rng.choice((0.0, 0.01, 0.03))
        self.p_ready_crash = rng.choice((0.0, 0.01))
        self.p_partition = rng.choice((0.0, 0.02, 0.05))
        self.p_snapshot = rng.choice((0.0, 0.05, 0.2))
        self.p_transfer = rng.choice((0.0, 0.01, 0.03))
        self.p_conf = p_conf
        self.p_op = rng.choice((0.3, 0.7))

    # ------------------------------------------------------------------
    def _stamp(self) -> float:
        self._clock += 1.0
        return self._clock

    def run(self) -> SimResult:
        try:
            for _ in range(self.cfg.chaos_ticks):
                self._chaos()
                self._step_tick()
            self.net.heal()
            for node in self.nodes.values():
                if not node.alive:
                    self._restart(node)
            self.p_ready_crash = 0.0
            calm_left = self.cfg.calm_ticks
            while calm_left > 0:
                calm_left -= 1
                for node in self.nodes.values():
                    if not node.alive:
                        self._restart(node)
                self._step_tick(new_ops=self.cfg.calm_ticks - calm_left <= self.cfg.calm_op_ticks)
                if self._converged() and not any(c.op for c in self.clients):
                    break
            else:
                raise SimulationFailure(self.seed, f"no convergence after calm period: {self._describe()}")
        except SafetyViolation as exc:
            raise SimulationFailure(self.seed, f"tick {self.now}: {exc}") from exc
        self._finish_history()
        if self.cfg.check_linearizability and self.history:
            verdict = check(self.history, keyed_register_model(), timeout=20.0)
            if verdict.verdict == "not-linearizable":
                raise SimulationFailure(self.seed, f"history not linearizable: {verdict.failure}")
        r = self.result
        r.ticks = self.now
        r.elections = self.checker.elections
        r.committed = self.checker.max_committed
        r.messages = self.net.sent
        return r

    def _describe(self) -> str:
        parts = []
        for n in self.nodes.values():
            c = n.core
            parts.append(
                f"{n.id}(alive={n.alive} {c.role.value} t={c.term} lead={c.leader_id} commit={c.commit} "
                f"applied={c.applied} last={c.log.last_index()} voters={c.voters} learners={c.learners})"
            )
        return "; ".join(parts)

    def _converged(self) -> bool:
        leaders = [n for n in self.nodes.values() if n.alive and n.core.role is Role.LEADER]
        if len(leaders) != 1:
            return False
        lead = leaders[0].core
        if lead.log.term(lead.commit) != lead.term:
            return False
        members = set(lead.voters) | set(lead.learners)
        return all(
            n.core.applied == lead.commit and n.core.leader_id == lead.id
            for n in self.nodes.values()
            if n.id in members
        )

    # ------------------------------------------------------------------
    def _step_tick(self, new_ops: bool = True) -> None:
        rng = self.rng
        nodes = self.nodes
        for m in self.net.due(self.now):
            node = nodes[m.to]
            if not node.alive:
                continue
            node.core.step(m)
            if rng.random() < 0.3:
                self._drive(node)
        order = list(nodes.values())
        rng.shuffle(order)
        for node in order:
            if node.alive:
                self._drive(node)
        for node in order:
            # Occasional skipped ticks model clocks that run at different speeds.
            if node.alive and rng.random() < 0.95:
                node.core.tick()
        self._clients_act(new_ops)
        self._check_global()
        self.now += 1

    def _drive(self, node: SimNode) -> None:
        rounds = 0
        while node.alive and node.core.has_ready() and rounds < 4:
            rounds += 1
            crash = None
            if self.p_ready_crash and self.rng.random() < self.p_ready_crash:
                crash = self.rng.choice((CrashPoint.BEFORE_PERSIST, CrashPoint.AFTER_PERSIST))
            installs = node.snapshots_installed
            applied, servable = node.process_ready(self.net, self.now, self.checker, crash)
            self.result.snapshots_installed += node.snapshots_installed - installs
            if crash is not None:
                self._on_crash(node)
                return
            for req_id, result in applied:
                op = self._by_req.get(req_id)
                if op is not None and op.via == node.id and op.incarnation == node.incarnation:
                    self._complete(op, result)
            for ctx in servable:
                op = self._by_req.get(int(ctx))
                if op is not None and op.via == node.id and op.incarnation == node.incarnation:
                    self.result.reads_ok += 1
                    self._complete(op, node.kv.read(op.input[0]))

    def _check_global(self) -> None:
        self.checker.check_durable_quorum(list(self.nodes.values()))

    # ------------------------------------------------------------------
    # faults
    def _chaos(self) -> None:
        rng = self.rng
        nodes = list(self.nodes.values())
        alive = [n for n in nodes if n.alive]
        if self.p_crash and alive and rng.random() < self.p_crash:
            victim = rng.choice(alive)
            victim.crash()
            self._on_crash(victim)
        for n in nodes:
            if not n.alive and rng.random() < 0.08:
                self._restart(n)
        if self.p_partition and rng.random() < self.p_partition:
            self._partition()
        if self.net.blocked and rng.random() < 0.06:
            self.net.heal()
        if self.p_snapshot and alive and rng.random() < self.p_snapshot:
            rng.choice(alive).take_snapshot(retain=rng.choice((0, 0, 0, 4)))
        leader = self._leader()
        if leader is not None and self.p_transfer and rng.random() < self.p_transfer:
            target = rng.choice(self.all_ids)
            try:
                leader.core.transfer_leadership(target)
                self.result.transfers += 1
            except ValueError:
                pass
        if leader is not None and self.p_conf and rng.random() < self.p_conf:
            self._membership_change(leader)

    def _leader(self) -> SimNode | None:
        leaders = [n for n in self.nodes.values() if n.alive and n.core.role is Role.LEADER]
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
            self.result.conf_changes += 1
        except (ProposalDropped, InvalidConfChange):
            pass

    def _restart(self, node: SimNode) -> None:
        node.boot()

    def _on_crash(self, node: SimNode) -> None:
        self.result.crashes += 1
        for client in self.clients:
            op = client.op
            if op is not None and op.via == node.id:
                self._give_up(client)

    # ------------------------------------------------------------------
    # clients
    def _clients_act(self, new_ops: bool) -> None:
        rng = self.rng
        for client in self.clients:
            op = client.op
            if op is not None:
                if self.now >= op.deadline:
                    self._give_up(client)
                continue
            if new_ops and rng.random() < self.p_op:
                self._invoke(client)

    def _invoke(self, client: _Client) -> None:
        rng = self.rng
        alive = [n for n in self.nodes.values() if n.alive]
        if not alive:
            return
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
        op = _PendingOp(client.id, inp, self._stamp(), node.id, node.incarnation, self.now + self.cfg.op_timeout, req_id)
        try:
            if inp[1] == "read":
                node.core.read_index(str(req_id).encode())
            elif inp[1] == "write":
                node.core.propose(encode_command(req_id, "put", key, req_id))
            else:
                node.core.propose(encode_command(req_id, "cas", key, list(inp[2])))
        except ProposalDropped:
            self.result.ops_failed += 1  # definitely not submitted: not part of the history
            return
        client.op = op
        self._by_req[req_id] = op

    def _complete(self, op: _PendingOp, output: Any) -> None:
        client = self.clients[op.client]
        if client.op is not op:
            return
        self.history.append(Operation(op.client, op.input, op.call, output, self._stamp()))
        if op.input[1] == "read":
            client.last_seen[op.input[0]] = output
        elif op.input[1] == "write":
            client.last_seen[op.input[0]] = op.input[2]
        self.result.ops_ok += 1
        client.op = None
        del self._by_req[op.req_id]

    def _give_up(self, client: _Client) -> None:
        op = client.op
        assert op is not None
        if op.input[1] != "read":
            # A write may still take effect later, at any time.
            self.history.append(Operation(op.client, op.input, op.call, UNKNOWN, math.inf))
            self.result.ops_unknown += 1
        else:
            self.result.ops_failed += 1
        client.op = None
        del self._by_req[op.req_id]

    def _finish_history(self) -> None:
        for client in self.clients:
            if client.op is not None:
                self._give_up(client)


def run_simulation(seed: int, cfg: SimConfig | None = None) -> SimResult:
    return Simulation(seed, cfg or SimConfig()).run()
