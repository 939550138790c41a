"""The invariant "a node that reports itself ready has every committed entry".

Whether a node is ready (serves /health/ready) is decided by a pure
function in raftkv.engines.native.readiness. This check is active as soon
as that module imports; until then ``ACTIVE`` is False and the test suite
says so (tests/test_raft_simulation.py asserts the two agree).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from raftsim.invariants import SafetyViolation

try:
    from raftkv.engines.native import readiness as _readiness
except ImportError:
    _readiness = None

if TYPE_CHECKING:
    from raftsim.invariants import InvariantChecker
    from raftsim.node import SimNode

ACTIVE = _readiness is not None


def node_is_ready(node: SimNode) -> bool:
    assert _readiness is not None
    return bool(_readiness.is_ready(node.core.status()))


def check_ready_nodes(nodes: list[SimNode], checker: InvariantChecker) -> None:
    if _readiness is None:
        return
    committed = checker.max_committed
    for node in nodes:
        if node.alive and node_is_ready(node) and node.applied < committed:
            raise SafetyViolation(
                f"readiness: {node.id} reports ready with applied {node.applied} but {committed} is committed"
            )
