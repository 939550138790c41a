"""What a peer message must satisfy before the Raft core may see it.

The codec calls these checks on every decoded message, so anything
``decode_message`` returns has the right types, integers the WAL and
msgpack can hold, known message and entry kinds, and the shape its type
calls for. They check form, not Raft semantics: a well-formed message from
a member is trusted (authentication is the transport's job, see
docs/transport.md).

Every check returns the reason a message is refused, or None. The checks
run on the replication path: per-entry work is done with C-level
``map``/``set``/``zip`` passes, never a Python loop per entry.
"""

from __future__ import annotations

from typing import Any

import msgpack

from raftkv.raft.messages import MsgType
from raftkv.raft.types import ConfChangeKind, EntryKind

# Every term, index and counter on the wire is at most 2**63 - 1, so a node
# that adopts the largest one can still campaign (term + 1) and persist the
# result in the WAL's unsigned 64-bit fields.
MAX_WIRE_INT = 2**63 - 1
MAX_NODE_ID_CHARS = 255  # an entry's origin stamp holds the id in at most 255 bytes
MAX_CONTEXT_BYTES = 1024  # read contexts are 8 bytes, a transfer target a node id
MAX_SNAPSHOT_CHUNK_BYTES = 16 << 20  # the engine sends chunks of at most 1 MiB
MAX_MEMBERS = 1024  # voters plus learners in a snapshot's configuration

# Plain ints: comparing with an IntEnum member is several times slower.
_MAX_TYPE = int(max(MsgType))
_APP, _PROP, _SNAP = int(MsgType.APP), int(MsgType.PROP), int(MsgType.SNAP)
_TRANSFER = int(MsgType.TRANSFER_LEADER)
_CONF = int(EntryKind.CONF_CHANGE)
_KINDS = frozenset(int(k) for k in EntryKind)
_CONF_KINDS = frozenset(int(k) for k in ConfChangeKind)
_INT, _BYTES, _ZERO = {int}, {bytes}, {0}


def check_fields(fields: tuple[Any, ...]) -> str | None:
    """Every field but the contents of ``entries`` and ``snapshot``.

    ``fields`` is the message's 16 fields with the defaults filled in.
    """
    (
        t, to, frm, term, log_term, index, entries, commit,
        reject, hint, context, read_seq, snapshot, snap_offset, snap_data, snap_done,
    ) = fields  # fmt: skip
    if type(t) is not int or not 0 <= t <= _MAX_TYPE:
        return f"unknown message type {t!r}"
    if type(to) is not str or type(frm) is not str:
        return "message sender and receiver must be strings"
    if not (0 < len(to) <= MAX_NODE_ID_CHARS and 0 < len(frm) <= MAX_NODE_ID_CHARS):
        return f"node ids must be 1..{MAX_NODE_ID_CHARS} characters"
    if not (
        type(term) is type(log_term) is type(index) is type(commit)
        is type(hint) is type(read_seq) is type(snap_offset) is int
    ):
        return "term, log_term, index, commit, hint, read_seq and snap_offset must be integers"
    # An OR of non-negative integers below 2**63 stays below 2**63; a
    # negative operand makes the OR negative, and >> 63 of either is non-zero.
    if (term | log_term | index | commit | hint | read_seq | snap_offset) >> 63:
        return f"term, index and counter fields must be in 0..{MAX_WIRE_INT}"
    if type(reject) is not bool or type(snap_done) is not bool:
        return "reject and snap_done must be booleans"
    if type(context) is not bytes or type(snap_data) is not bytes:
        return "context and snap_data must be bytes"
    if len(context) > MAX_CONTEXT_BYTES:
        return f"context of {len(context)} bytes exceeds {MAX_CONTEXT_BYTES}"
    if type(entries) is not tuple:
        return "entries must be an array"
    if entries and t != _APP and t != _PROP:
        return f"a {MsgType(t).name} message carries no entries"
    if t == _TRANSFER and context:
        try:
            context.decode()  # the target node id, which the leader decodes
        except UnicodeDecodeError:
            return "a TRANSFER_LEADER context is a node id in UTF-8"
    if t == _SNAP:
        if type(snapshot) is not tuple:
            return "a SNAP message needs snapshot metadata"
        if len(snap_data) > MAX_SNAPSHOT_CHUNK_BYTES:
            return f"snapshot chunk of {len(snap_data)} bytes exceeds {MAX_SNAPSHOT_CHUNK_BYTES}"
        if snap_offset + len(snap_data) > MAX_WIRE_INT:
            return "snapshot chunk ends beyond the largest offset"
    elif snapshot is not None or snap_data or snap_done:
        return f"a {MsgType(t).name} message carries no snapshot"
    return None


def check_entries(t: int, term: int, log_term: int, index: int, entries: tuple[Any, ...]) -> str | None:
    """The entries of an APP or PROP message (``entries`` is non-empty).

    APP entries follow ``index`` without gaps, with terms between
    ``log_term`` and the message's term. PROP entries are proposals the
    leader has not placed yet: index 0, term 0.
    """
    try:
        indexes, terms, kinds, datas = zip(*entries, strict=True)
    except (TypeError, ValueError):
        return "entries must be (index, term, kind, data) arrays"
    if set(map(type, indexes + terms + kinds)) != _INT or set(map(type, datas)) != _BYTES:
        return "entry fields must be (int index, int term, int kind, bytes data)"
    kind_set = set(kinds)
    if not kind_set <= _KINDS:
        return f"unknown entry kind in {sorted(kind_set - _KINDS)!r}"
    if t == _PROP:
        if set(indexes) != _ZERO or set(terms) != _ZERO:
            return "forwarded proposals carry index 0 and term 0"
    else:
        first, count = index + 1, len(indexes)
        if first + count - 1 > MAX_WIRE_INT or indexes != tuple(range(first, first + count)):
            return f"append entries must follow index {index} without gaps"
        if min(terms) < log_term or max(terms) > term:
            return f"append entry terms must be within {log_term}..{term}"
    if _CONF in kind_set:
        for kind, data in zip(kinds, datas):  # membership changes are rare: a loop is fine
            if kind == _CONF:
                problem = check_conf_change(data)
                if problem is not None:
                    return problem
    return None


def check_conf_change(data: bytes) -> str | None:
    """A membership-change entry's data, as raftkv.raft.conf encodes it."""
    try:
        change = msgpack.unpackb(data, use_list=False, raw=False)
    except (ValueError, msgpack.UnpackException) as exc:
        return f"undecodable membership change: {exc}"
    if type(change) is not tuple or len(change) != 3:
        return "a membership change is a (kind, node id, context) array"
    kind, node_id, context = change
    if type(kind) is not int or kind not in _CONF_KINDS:
        return f"unknown membership change kind {kind!r}"
    if type(node_id) is not str or not 0 < len(node_id) <= MAX_NODE_ID_CHARS:
        return f"a membership change names a node id of 1..{MAX_NODE_ID_CHARS} characters"
    if type(context) is not bytes or len(context) > MAX_CONTEXT_BYTES:
        return f"a membership change context is at most {MAX_CONTEXT_BYTES} bytes"
    return None


def check_snapshot_meta(meta: tuple[Any, ...]) -> str | None:
    """A SNAP message's (index, term, (voters, learners))."""
    if len(meta) != 3 or type(meta[2]) is not tuple or len(meta[2]) != 2:
        return "snapshot metadata is (index, term, (voters, learners))"
    index, term, (voters, learners) = meta
    if type(index) is not int or type(term) is not int or (index | term) >> 63:
        return f"snapshot index and term must be integers in 0..{MAX_WIRE_INT}"
    if type(voters) is not tuple or type(learners) is not tuple:
        return "snapshot voters and learners must be arrays"
    members = voters + learners
    if len(members) > MAX_MEMBERS:
        return f"snapshot configuration of {len(members)} members exceeds {MAX_MEMBERS}"
    if set(map(type, members)) - {str}:
        return "snapshot members must be node id strings"
    if not all(0 < len(m) <= MAX_NODE_ID_CHARS for m in members):
        return f"snapshot member ids must be 1..{MAX_NODE_ID_CHARS} characters"
    if len(set(members)) != len(members):
        return "snapshot members must be distinct, and not both voter and learner"
    return None
