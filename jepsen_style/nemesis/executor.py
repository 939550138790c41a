"""Carries out a fault plan against a running cluster and records each fault
in the history (process "nemesis", phases "start" and "end")."""
from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from raftkv.local_cluster import LocalCluster

from jepsen_style.nemesis.link_proxies import LinkProxies
from jepsen_style.nemesis.membership import MembershipNemesis
from jepsen_style.nemesis.partitions import Partition, bridge, isolate, one_way, random_halves
from jepsen_style.nemesis.schedule import PlannedFault, choose_nodes

LATENCY_MS = 50
JITTER_MS = 25

# (function, value, phase): appends one nemesis event to the history.
RecordNemesis = Callable[[str, Any, str], None]


class NemesisSetupError(RuntimeError):
    """A fault needs link proxies but the run has none."""


@dataclass
class ActiveFault:
    kind: str
    nodes: list[str] = field(default_factory=list)
    partition: Partition | None = None

    def describe(self) -> dict[str, Any]:
        value: dict[str, Any] = {"nodes": self.nodes}
        if self.partition is not None:
            value["partition"] = self.partition.description
        return value


class Nemesis:
    def __init__(self, cluster: LocalCluster, proxies: LinkProxies | None, rng: random.Random,
                 record: RecordNemesis) -> None:
        self.cluster = cluster
        self.proxies = proxies
        self.rng = rng
        self.record = record
        self.faults_injected = 0
        self._paused: set[str] = set()
        self._latency = False
        self.membership = MembershipNemesis(cluster, rng)

    @property
    def node_ids(self) -> list[str]:
        return [n.node_id for n in self.cluster.nodes]

    async def run(self, plan: list[PlannedFault], started_at: float, stop: asyncio.Event) -> None:
        """Follow `plan` (times relative to `started_at`, monotonic) until it
        ends or `stop` is set; a fault in progress is healed either way."""
        for planned in plan:
            if not await _sleep_until(started_at + planned.start, stop):
                return
            fault = await self.inject(planned.kind)
            await _sleep_until(started_at + planned.end, stop)
            await self.heal(fault)

    async def inject(self, kind: str) -> ActiveFault:
        if kind == "membership":
            # Chosen and done in one step: which voter goes depends on who leads now.
            change = await asyncio.to_thread(self.membership.replace_start)
            fault = ActiveFault(kind, [n for n in (change.get("removed"), change.get("added")) if n])
            self.record(kind, {**fault.describe(), **change}, "start")
            self.faults_injected += "added" in change
            return fault
        if kind in ("kill", "kill-leader", "kill-minority", "pause", "pause-leader"):
            leader = await asyncio.to_thread(self.cluster.leader) if kind.endswith("-leader") else None
            fault = ActiveFault(kind, choose_nodes(kind, self.node_ids, leader, self.rng))
        elif kind == "latency":
            fault = ActiveFault(kind)
        else:
            fault = ActiveFault(kind, partition=await self._choose_partition(kind))
        self.record(kind, fault.describe(), "start")
        self.faults_injected += 1
        await asyncio.to_thread(self._apply, fault)
        return fault

    async def _choose_partition(self, kind: str) -> Partition:
        nodes = self.node_ids
        if kind == "partition":
            return random_halves(nodes, self.rng)
        if kind == "partition-bridge":
            return bridge(nodes, self.rng)
        if kind == "partition-one-way":
            return one_way(nodes, self.rng)
        leader = await asyncio.to_thread(self.cluster.leader)
        return isolate(leader or self.rng.choice(nodes), nodes)

    def _apply(self, fault: ActiveFault) -> None:
        if fault.kind.startswith("kill"):
            for node in fault.nodes:
                self.cluster.kill(node)
        elif fault.kind.startswith("pause"):
            for node in fault.nodes:
                self.cluster.pause(node)
                self._paused.add(node)
        else:
            proxies = self._require_proxies(fault.kind)
            if fault.partition is not None:
                proxies.cut(fault.partition.cut)
            else:
                proxies.add_latency(LATENCY_MS, JITTER_MS)
                self._latency = True

    def _require_proxies(self, kind: str) -> LinkProxies:
        if self.proxies is None:
            raise NemesisSetupError(f"nemesis {kind!r} needs link proxies, and this run has none")
        return self.proxies

    async def heal(self, fault: ActiveFault) -> None:
        if fault.kind == "membership":
            promoted = await asyncio.to_thread(self.membership.promote, fault.nodes[1]) if len(fault.nodes) == 2 else {}
            self.record(fault.kind, {**fault.describe(), **promoted}, "end")
            return
        await asyncio.to_thread(self._heal, fault)
        self.record(fault.kind, fault.describe(), "end")

    def _heal(self, fault: ActiveFault) -> None:
        if fault.kind.startswith("kill"):
            for node in fault.nodes:
                self.cluster.start_node(node)
        elif fault.kind.startswith("pause"):
            for node in fault.nodes:
                self.cluster.resume(node)
                self._paused.discard(node)
        elif fault.partition is not None:
            self._require_proxies(fault.kind).heal()
        else:
            self._require_proxies(fault.kind).remove_latency()
            self._latency = False

    async def heal_everything(self) -> None:
        """Whatever state the run left: resume, restart, reconnect."""
        await asyncio.to_thread(self._heal_everything)

    def _heal_everything(self) -> None:
        for node in sorted(self._paused):
            self.cluster.resume(node)
        self._paused.clear()
        for node in self.cluster.nodes:
            if not node.running:
                self.cluster.start_node(node.node_id)
        self.membership.promote_all()  # a replacement left a learner by the end of the run
        if self.proxies is not None:
            self.proxies.heal()
            if self._latency:
                self.proxies.remove_latency()
                self._latency = False


async def _sleep_until(deadline: float, stop: asyncio.Event) -> bool:
    """Wait until `deadline` (monotonic); False if `stop` was set first."""
    delay = deadline - time.monotonic()
    if delay <= 0:
        return not stop.is_set()
    try:
        await asyncio.wait_for(stop.wait(), delay)
        return False
    except asyncio.TimeoutError:
        return True
