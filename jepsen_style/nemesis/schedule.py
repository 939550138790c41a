"""When faults happen and which nodes they hit (pure, driven by a seeded RNG)."""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True, slots=True)
class PlannedFault:
    kind: str
    # Seconds from the start of the workload.
    start: float
    end: float


def plan_faults(kinds: Sequence[str], duration_s: float, rng: random.Random,
                quiet_s: tuple[float, float] = (2.0, 4.0),
                fault_s: tuple[float, float] = (2.0, 4.0)) -> list[PlannedFault]:
    """Alternate quiet periods and faults until `duration_s` (every fault ends
    by then). Kinds come in shuffled rounds, each kind once per round, so a
    short run still sees every kind it asked for when time allows."""
    if not kinds:
        return []
    plan: list[PlannedFault] = []
    upcoming: list[str] = []
    moment = rng.uniform(*quiet_s)
    while True:
        length = rng.uniform(*fault_s)
        if moment + length > duration_s:
            return plan
        if not upcoming:
            upcoming = list(kinds)
            rng.shuffle(upcoming)
        plan.append(PlannedFault(upcoming.pop(), round(moment, 3), round(moment + length, 3)))
        moment += length + rng.uniform(*quiet_s)


def choose_nodes(kind: str, nodes: Sequence[str], leader: str | None, rng: random.Random) -> list[str]:
    """The nodes a node-level fault hits. A leader fault with no known leader
    falls back to a random node so the schedule stays the same length."""
    if kind.endswith("-leader") and leader is not None:
        return [leader]
    if kind == "kill-minority":
        return sorted(rng.sample(list(nodes), (len(nodes) - 1) // 2))
    return [rng.choice(list(nodes))]
