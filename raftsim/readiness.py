"""The invariant "a node that reports itself ready has every committed entry".

Whether a node is ready (``/readyz``) is decided by the pure function
raftkv.engines.native.readiness.readiness, which NativeEngine calls with
``max_ticks_since_leader = election_ticks``. This check is active as soon as
that module imports (``ACTIVE``; the test suite asserts the two agree).

A ready node has heard from its leader within that many of its own ticks,
and applied up to the commit index the leader reported then; entries
committed after that message may be missing by design. So the check is:
a ready node has applied every entry that was committed longer ago than
that window (plus the network's largest delay and the clocks' skew).
"""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING

from raftsim.invariants import SafetyViolation

try:
    from raftkv.engines.native.readiness import readiness as _readiness
except ImportError:
    _readiness = None

if TYPE_CHECKING:
    from raftsim.invariants import InvariantChecker
    from raftsim.node import SimNode

ACTIVE = _readiness is not None


class ReadinessCheck:
    def __init__(self, window: float) -> None:
        self.window = window
        self._times: list[float] = []
        self._committed: list[int] = []
        self.ready_seen = 0

    def check(self, now: float, nodes: list[SimNode], checker: InvariantChecker) -> None:
        if _readiness is None:
            return
        self._times.append(now)
        self._committed.append(checker.max_committed)
        i = bisect.bisect_right(self._times, now - self.window) - 1
        if i < 0:
            return
        committed = self._committed[i]
        for node in nodes:
            if not node.alive:
                continue
            core = node.core
            if _readiness(core, core.applied, None, node.options.election_ticks) is not None:
                continue
            self.ready_seen += 1
            if core.applied < committed:
                raise SafetyViolation(
                    f"readiness: {node.id} reports ready with applied {core.applied}, but {committed} "
                    f"was committed {now - self._times[i]:.2f}s ago (leader {core.leader_id}, "
                    f"leader_commit {core.leader_commit}, {core.ticks_since_leader} ticks since it)"
                )

