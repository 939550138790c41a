"""Pure rule for finding the leader's HTTP endpoint from node statuses."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from raftkv.client.models import NodeStatus


def leader_endpoint(statuses: Iterable[NodeStatus], node_endpoints: Mapping[str, str]) -> str | None:
    """The endpoint of the leader, judged from the statuses seen so far.

    A node that says it leads wins. Otherwise a node naming its leader is
    believed when we know that leader's endpoint (``node_endpoints``, node id
    -> endpoint, learned from earlier statuses): its own status may be slow or
    lost, and a stale guess only costs one forwarding hop.
    """
    statuses = list(statuses)
    for s in statuses:
        if s.is_leader:
            return s.endpoint
    for s in statuses:
        if s.leader_id is not None and s.leader_id in node_endpoints:
            return node_endpoints[s.leader_id]
    return None
