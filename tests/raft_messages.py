"""Hypothesis strategies for well-formed Raft messages, and an independent
statement of what every decoded message must satisfy.

``message_invariant_problem`` restates the rules of raftkv/raft/validation.py
field by field, the slow obvious way, so the fuzz tests check the fast
validation against something that was not derived from it.
"""

from __future__ import annotations

from typing import Any

import msgpack
from hypothesis import strategies as st

from raftkv.raft.conf import encode_conf_change
from raftkv.raft.messages import FORCE_VOTE, Message, MsgType
from raftkv.raft.types import ConfChange, ConfChangeKind, ConfState, Entry, EntryKind, SnapshotMeta

MAX = 2**63 - 1
INTS = st.one_of(st.integers(0, 1000), st.integers(0, MAX), st.just(MAX))
IDS = st.text(min_size=1, max_size=12)

_conf_data = st.builds(
    lambda kind, node, ctx: encode_conf_change(ConfChange(kind, node, ctx)),
    st.sampled_from(list(ConfChangeKind)),
    IDS,
    st.binary(max_size=32),
)
_payload = st.one_of(
    st.tuples(st.just(int(EntryKind.NORMAL)), st.binary(max_size=64)),
    st.tuples(st.just(int(EntryKind.CONF_CHANGE)), _conf_data),
)


@st.composite
def append_parts(draw: st.DrawFn) -> dict[str, Any]:
    """An APP's index, log_term, term and entries that follow it."""
    payloads = draw(st.lists(_payload, max_size=6))
    log_term = draw(INTS)
    term = draw(st.integers(log_term, MAX))
    index = draw(st.integers(0, MAX - len(payloads)))
    terms = sorted(draw(st.lists(st.integers(log_term, term), min_size=len(payloads), max_size=len(payloads))))
    entries = [Entry(index + 1 + i, t, k, d) for i, (t, (k, d)) in enumerate(zip(terms, payloads))]
    return {"term": term, "log_term": log_term, "index": index, "entries": entries}


_snapshot_meta = st.builds(
    lambda index, term, members, split: SnapshotMeta(
        index, term, ConfState(tuple(members[:split]), tuple(members[split:]))
    ),
    INTS,
    INTS,
    st.lists(IDS, min_size=1, max_size=5, unique=True),
    st.integers(1, 5),
)


@st.composite
def messages(draw: st.DrawFn, types: list[MsgType] | None = None) -> Message:
    """Any well-formed message (of one of ``types``): the shape its type calls
    for, values anywhere in range."""
    t = draw(st.sampled_from(types or list(MsgType)))
    fields: dict[str, Any] = {
        "term": draw(INTS),
        "log_term": draw(INTS),
        "index": draw(INTS),
        "commit": draw(INTS),
        "reject": draw(st.booleans()),
        "hint": draw(INTS),
        "context": draw(
            IDS.map(str.encode) if t == MsgType.TRANSFER_LEADER else st.one_of(st.binary(max_size=16), st.just(FORCE_VOTE))
        ),
        "read_seq": draw(INTS),
        "snap_offset": draw(INTS) if t == MsgType.SNAP_RESP else 0,
    }
    if t == MsgType.APP:
        fields.update(draw(append_parts()))
    elif t == MsgType.PROP:
        fields["entries"] = [Entry(0, 0, k, d) for k, d in draw(st.lists(_payload, max_size=6))]
    elif t == MsgType.SNAP:
        data = draw(st.binary(max_size=64))
        fields.update(
            snapshot=draw(_snapshot_meta),
            snap_offset=draw(st.integers(0, MAX - len(data))),
            snap_data=data,
            snap_done=draw(st.booleans()),
        )
    return Message(t, draw(IDS), draw(IDS), **fields)


def _is_int(value: object, low: int = 0, high: int = MAX) -> bool:
    return type(value) is int and low <= value <= high


def _is_id(value: object) -> bool:
    return type(value) is str and 1 <= len(value) <= 255


def _conf_change_problem(data: bytes) -> bool:
    try:
        change = msgpack.unpackb(data)
    except Exception:
        return True
    if not isinstance(change, list) or len(change) != 3:
        return True
    kind, node_id, context = change
    return not (_is_int(kind, 0, 2) and _is_id(node_id) and type(context) is bytes and len(context) <= 1024)


def message_invariant_problem(m: Any) -> str | None:
    """Why ``m`` (something decode_message returned) breaks a rule, or None."""
    if type(m) is not Message:
        return f"not a Message: {type(m).__name__}"
    if not _is_int(m.type, 0, max(MsgType)):
        return "type"
    if not (_is_id(m.to) and _is_id(m.frm)):
        return "ids"
    for name in ("term", "log_term", "index", "commit", "hint", "read_seq", "snap_offset"):
        if not _is_int(getattr(m, name)):
            return name
    if type(m.reject) is not bool or type(m.snap_done) is not bool:
        return "booleans"
    if type(m.context) is not bytes or len(m.context) > 1024 or type(m.snap_data) is not bytes:
        return "bytes fields"
    if type(m.entries) not in (list, tuple):
        return "entries container"
    for e in m.entries:
        if type(e) is not Entry or not (_is_int(e.index) and _is_int(e.term)):
            return "entry ints"
        if type(e.kind) is not int or e.kind not in (0, 1) or type(e.data) is not bytes:
            return "entry kind/data"
        if e.kind == EntryKind.CONF_CHANGE and _conf_change_problem(e.data):
            return "membership change data"
    if m.entries and m.type not in (MsgType.APP, MsgType.PROP):
        return "entries on a type without entries"
    if m.type == MsgType.PROP and any(e.index or e.term for e in m.entries):
        return "placed proposal"
    if m.type == MsgType.APP:
        for i, e in enumerate(m.entries):
            if e.index != m.index + 1 + i or not m.log_term <= e.term <= m.term:
                return "append entry out of place"
    if m.type == MsgType.TRANSFER_LEADER:
        try:
            m.context.decode()
        except UnicodeDecodeError:
            return "transfer target not UTF-8"
    if (m.snapshot is not None) != (m.type == MsgType.SNAP):
        return "snapshot presence"
    if m.snapshot is not None:
        s = m.snapshot
        if type(s) is not SnapshotMeta or type(s.conf) is not ConfState:
            return "snapshot types"
        if not (_is_int(s.index) and _is_int(s.term)):
            return "snapshot ints"
        members = list(s.conf.voters) + list(s.conf.learners)
        if type(s.conf.voters) is not tuple or type(s.conf.learners) is not tuple:
            return "conf tuples"
        if not all(_is_id(x) for x in members) or len(set(members)) != len(members) or len(members) > 1024:
            return "conf members"
        if len(m.snap_data) > 16 << 20 or m.snap_offset + len(m.snap_data) > MAX:
            return "snapshot chunk"
    elif m.snap_data or m.snap_done:
        return "snapshot fields on a type without a snapshot"
    return None
