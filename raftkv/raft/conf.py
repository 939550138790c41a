"""Membership changes: their wire form inside log entries and their effect.

One server at a time (Raft dissertation, ch. 4): any majority of the old
configuration overlaps any majority of the new one, so no joint consensus
is needed as long as only one change is in flight.
"""

from __future__ import annotations

import msgpack

from raftkv.raft.types import ConfChange, ConfChangeKind, ConfState, InvalidConfChange


def encode_conf_change(change: ConfChange) -> bytes:
    return msgpack.packb((int(change.kind), change.node_id, change.context))


def decode_conf_change(data: bytes) -> ConfChange:
    try:
        kind, node_id, context = msgpack.unpackb(data)
        return ConfChange(ConfChangeKind(kind), str(node_id), bytes(context))
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise InvalidConfChange(f"undecodable membership change entry: {exc}") from exc


def apply_conf_change(conf: ConfState, change: ConfChange) -> ConfState:
    """The configuration after ``change``; raises InvalidConfChange if it does not apply."""
    node = change.node_id
    if not node:
        raise InvalidConfChange("membership change needs a non-empty node id")
    if change.kind == ConfChangeKind.ADD_LEARNER:
        if node in conf.voters or node in conf.learners:
            raise InvalidConfChange(f"{node!r} is already a member")
        return ConfState(conf.voters, conf.learners + (node,))
    if change.kind == ConfChangeKind.PROMOTE:
        if node not in conf.learners:
            raise InvalidConfChange(f"{node!r} is not a learner, so it cannot be promoted")
        return ConfState(conf.voters + (node,), tuple(n for n in conf.learners if n != node))
    if change.kind == ConfChangeKind.REMOVE:
        if node in conf.learners:
            return ConfState(conf.voters, tuple(n for n in conf.learners if n != node))
        if node not in conf.voters:
            raise InvalidConfChange(f"{node!r} is not a member")
        if len(conf.voters) == 1:
            raise InvalidConfChange("cannot remove the last voter")
        return ConfState(tuple(n for n in conf.voters if n != node), conf.learners)
    raise InvalidConfChange(f"unknown membership change kind {change.kind!r}")
