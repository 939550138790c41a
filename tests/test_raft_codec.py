"""Round trips and malformed input for the Raft message codec."""

from __future__ import annotations

import time

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftkv.raft.codec import CodecError, decode_message, encode_message
from raftkv.raft.messages import FORCE_VOTE, Message, MsgType
from raftkv.raft.types import ConfState, Entry, SnapshotMeta

META = SnapshotMeta(40, 3, ConfState(("a", "b", "c"), ("d",)))

SAMPLES = [
    Message(MsgType.APP, "b", "a", 3, 2, 10, [Entry(11, 3, 0, b"x" * 100), Entry(12, 3, 1, b"")], 9),
    Message(MsgType.APP, "b", "a", 3, 2, 10, [], 9),
    Message(MsgType.APP_RESP, "a", "b", 3, index=12),
    Message(MsgType.APP_RESP, "a", "b", 3, log_term=2, index=10, reject=True, hint=7),
    Message(MsgType.VOTE, "b", "a", 4, log_term=3, index=12, context=FORCE_VOTE),
    Message(MsgType.VOTE_RESP, "a", "b", 4, reject=True),
    Message(MsgType.PRE_VOTE, "b", "a", 5, log_term=3, index=12),
    Message(MsgType.PRE_VOTE_RESP, "a", "b", 5),
    Message(MsgType.HEARTBEAT, "b", "a", 3, commit=12, read_seq=77),
    Message(MsgType.HEARTBEAT_RESP, "a", "b", 3, read_seq=77),
    Message(MsgType.SNAP, "b", "a", 3, snapshot=META, snap_offset=1024, snap_data=b"\x00\xff" * 10, snap_done=True),
    Message(MsgType.SNAP_RESP, "a", "b", 3, index=40, snap_offset=2048),
    Message(MsgType.PROP, "a", "b", 3, entries=[Entry(0, 0, 0, b"cmd")]),
    Message(MsgType.READ_INDEX, "a", "b", 3, context=b"req-1"),
    Message(MsgType.READ_INDEX_RESP, "b", "a", 3, index=12, context=b"req-1"),
    Message(MsgType.TIMEOUT_NOW, "b", "a", 3),
    Message(MsgType.TRANSFER_LEADER, "a", "b", 3, context=b"c"),
]


@pytest.mark.parametrize("msg", SAMPLES, ids=[MsgType(m.type).name for m in SAMPLES])
def test_every_message_type_round_trips(msg: Message) -> None:
    decoded = decode_message(encode_message(msg))
    assert _norm(decoded) == _norm(msg)
    for e in decoded.entries:
        assert isinstance(e, Entry)
    if msg.snapshot is not None:
        assert isinstance(decoded.snapshot, SnapshotMeta) and isinstance(decoded.snapshot.conf, ConfState)


def _norm(m: Message) -> Message:
    return m._replace(entries=tuple(m.entries))


def test_default_fields_are_left_off_the_wire() -> None:
    hb = Message(MsgType.HEARTBEAT_RESP, "n2", "n1", 7, read_seq=3)
    assert len(encode_message(hb)) < 30


_ids = st.text(min_size=1, max_size=8)
_entries = st.lists(
    st.builds(Entry, st.integers(0, 2**40), st.integers(0, 2**30), st.sampled_from([0, 1]), st.binary(max_size=64)),
    max_size=8,
)


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(list(MsgType)),
    _ids,
    _ids,
    st.integers(0, 2**40),
    st.integers(0, 2**40),
    st.integers(0, 2**40),
    _entries,
    st.booleans(),
    st.binary(max_size=16),
)
def test_arbitrary_messages_round_trip(
    t: MsgType, to: str, frm: str, term: int, index: int, commit: int, entries: list[Entry], reject: bool, ctx: bytes
) -> None:
    m = Message(t, to, frm, term, log_term=term // 2, index=index, entries=entries, commit=commit, reject=reject, context=ctx)
    assert _norm(decode_message(encode_message(m))) == _norm(m)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"\xc1", "not a msgpack"),
        (b"", "not a msgpack"),
        (msgpack.packb({"type": 0}), "array"),
        (msgpack.packb([0, "a", "b"]), "array of 4"),
        (msgpack.packb([99, "a", "b", 1]), "unknown message type"),
        (msgpack.packb([0, 1, "b", 1]), "strings"),
        (msgpack.packb([0, "a", "b", -1]), "non-negative"),
        (msgpack.packb([0, "a", "b", 1, 0, 0, [[1, 1, 0]]]), "entry fields"),
        (msgpack.packb([0, "a", "b", 1, 0, 0, [[1, 1, 0, "text"]]], use_bin_type=True), "bytes data"),
        (msgpack.packb([8, "a", "b", 1, 0, 0, [], 0, False, 0, b"", 0, [1, 2]]), "malformed"),
        (msgpack.packb([0, "a", "b", 1, 0, 0, [[1, 1, 0, b"x"], [2, "t", 0, b"y"], [3, 1, 0, b"z"]]], use_bin_type=True), "int term"),
        (msgpack.packb(list(range(20))), "array of 4"),
    ],
)
def test_malformed_bytes_give_a_clear_error(data: bytes, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        decode_message(data)


def test_append_of_64_entries_encodes_and_decodes_quickly() -> None:
    entries = [Entry(i, 5, 0, b"v" * 100) for i in range(1, 65)]
    m = Message(MsgType.APP, "n2", "n1", 5, 5, 0, entries, 64)
    data = encode_message(m)
    n = 2000
    t0 = time.perf_counter()
    for _ in range(n):
        encode_message(m)
    t1 = time.perf_counter()
    for _ in range(n):
        decode_message(data)
    t2 = time.perf_counter()
    enc_us, dec_us = (t1 - t0) / n * 1e6, (t2 - t1) / n * 1e6
    print(f"AppendEntries 64x100B: {len(data)} bytes, encode {enc_us:.1f} us, decode {dec_us:.1f} us")
    # Generous bound (shared CI cores); the point is no per-entry Python work blow-up.
    assert enc_us + dec_us < 1000
