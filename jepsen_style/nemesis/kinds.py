"""The faults the nemesis can inject, and which engines support them."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class NemesisKind:
    name: str
    description: str
    # Needs a Toxiproxy proxy on every directed link between nodes.
    needs_link_proxies: bool = False


KINDS: dict[str, NemesisKind] = {kind.name: kind for kind in [
    NemesisKind("kill", "kill -9 a random node, restart it when the fault ends"),
    NemesisKind("kill-leader", "kill -9 the leader, restart it when the fault ends"),
    NemesisKind("kill-minority", "kill -9 a random minority of nodes, restart them when the fault ends"),
    NemesisKind("pause", "SIGSTOP a random node, SIGCONT it when the fault ends"),
    NemesisKind("pause-leader", "SIGSTOP the leader, SIGCONT it when the fault ends"),
    NemesisKind("partition", "cut the network between a random minority and the majority", True),
    NemesisKind("partition-leader", "cut the leader off from every other node", True),
    NemesisKind("partition-bridge", "split the nodes in two halves joined only through one bridge node", True),
    NemesisKind("partition-one-way", "one random node receives nothing but can still send", True),
    NemesisKind("latency", "add 50 ms +/- 25 ms to every link between nodes", True),
    NemesisKind("membership", "replace a non-leader voter: remove it, join a new node as a learner, "
                "promote it when the fault ends (native engine; not with link-proxy kinds)"),
]}

# Names that stand for several kinds on the command line.
GROUPS: dict[str, tuple[str, ...]] = {
    "kills": ("kill", "kill-leader", "kill-minority"),
    "pauses": ("pause", "pause-leader"),
    "partitions": ("partition", "partition-leader", "partition-bridge", "partition-one-way"),
    "all": tuple(KINDS),
}

# PySyncObj names nodes by their address, so one node cannot be given a
# different address for each peer and no proxy can sit on a single link.
ENGINES_WITHOUT_LINK_PROXIES = frozenset({"pysyncobj"})
# Only the native engine changes its members.
ENGINES_WITH_MEMBERSHIP = frozenset({"native"})


class NemesisChoiceError(ValueError):
    """The requested nemeses are unknown or unsupported by the engine."""


def parse_nemeses(text: str, engine: str) -> list[str]:
    """Turn "kill,pause,partition" into kind names, checking the engine
    supports them. "none" or "" means no faults. "all" expands to what the
    engine supports; naming an unsupported kind is an error saying why."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if names in ([], ["none"]):
        return []
    chosen: list[str] = []
    for name in names:
        if name == "all":
            # Not membership: it cannot share a run with the link-proxy kinds (see below).
            expanded = [k for k in KINDS if supports(engine, k) and k != "membership"]
        elif name in GROUPS:
            expanded = list(GROUPS[name])
        elif name in KINDS:
            expanded = [name]
        else:
            known = ", ".join([*KINDS, *GROUPS, "none"])
            raise NemesisChoiceError(f"unknown nemesis {name!r}; choose from {known}")
        for kind in expanded:
            if not supports(engine, kind):
                raise NemesisChoiceError(
                    f"nemesis {kind!r} needs a proxy on each link between nodes, which the "
                    f"{engine} engine cannot use (it names nodes by address, so a node cannot "
                    f"reach each peer through its own proxy); with --engine {engine} use kill or "
                    f"pause nemeses, or use --engine native")
            if kind not in chosen:
                chosen.append(kind)
    if "membership" in chosen and any(KINDS[k].needs_link_proxies for k in chosen):
        # A joined node's links bypass the proxies, which exist for the founding nodes only.
        raise NemesisChoiceError(
            "nemesis 'membership' cannot run with the link-proxy kinds (partitions, latency): "
            "a replacement node's links would bypass the proxies; combine it with kill or pause nemeses")
    return chosen


def supports(engine: str, kind: str) -> bool:
    if kind == "membership":
        return engine in ENGINES_WITH_MEMBERSHIP
    return not (KINDS[kind].needs_link_proxies and engine in ENGINES_WITHOUT_LINK_PROXIES)
