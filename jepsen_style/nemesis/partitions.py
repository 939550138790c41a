"""Network partitions as sets of cut directed links (pure functions).

A link (a, b) carries the Raft messages node `a` sends to node `b`; cutting
it drops them while b -> a may still flow.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Iterable, Sequence

Link = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Partition:
    cut: frozenset[Link]
    # Plain words for the history and the report, e.g. "n1 n2 | n3".
    description: str


def all_links(nodes: Sequence[str]) -> list[Link]:
    return [(a, b) for a in nodes for b in nodes if a != b]


def cut_between(side_a: Iterable[str], side_b: Iterable[str]) -> frozenset[Link]:
    """Both directions of every link from a node of one side to the other."""
    a, b = list(side_a), list(side_b)
    return frozenset([(x, y) for x in a for y in b] + [(y, x) for x in a for y in b])


def random_halves(nodes: Sequence[str], rng: random.Random) -> Partition:
    """A random minority on one side, the majority on the other."""
    shuffled = list(nodes)
    rng.shuffle(shuffled)
    minority, majority = sorted(shuffled[: len(nodes) // 2]), sorted(shuffled[len(nodes) // 2:])
    return Partition(cut_between(minority, majority), f"{' '.join(minority)} | {' '.join(majority)}")


def isolate(node: str, nodes: Sequence[str]) -> Partition:
    others = [n for n in nodes if n != node]
    return Partition(cut_between([node], others), f"{node} | {' '.join(others)}")


def bridge(nodes: Sequence[str], rng: random.Random) -> Partition:
    """Two halves that cannot talk, and one node that talks to both: each half
    plus the bridge is a majority, so two leaders could each believe they lead."""
    shuffled = list(nodes)
    rng.shuffle(shuffled)
    middle = shuffled[0]
    rest = shuffled[1:]
    left, right = sorted(rest[: len(rest) // 2]), sorted(rest[len(rest) // 2:])
    return Partition(cut_between(left, right),
                     f"{' '.join(left)} | {' '.join(right)} (bridge {middle})")


def one_way(nodes: Sequence[str], rng: random.Random) -> Partition:
    """One node hears nobody but everybody still hears it."""
    deaf = rng.choice(list(nodes))
    cut = frozenset((other, deaf) for other in nodes if other != deaf)
    return Partition(cut, f"nobody -> {deaf} (it still sends)")
