"""Round trips and malformed input for the Raft message codec."""

from __future__ import annotations

import random
import time
from pathlib import Path

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftkv.raft.codec import CodecError, decode_message, encode_message
from raftkv.raft.conf import encode_conf_change
from raftkv.raft.core import RaftCore
from raftkv.raft.messages import FORCE_VOTE, Message, MsgType
from raftkv.raft.types import (
    ConfChange,
    ConfChangeKind,
    ConfState,
    Entry,
    HardState,
    RaftConfig,
    RestoredState,
    Role,
    SnapshotMeta,
)
from raftkv.raft.validation import MAX_WIRE_INT
from raftkv.storage import WAL, LogRecord
from tests.raft_messages import message_invariant_problem, messages

META = SnapshotMeta(40, 3, ConfState(("a", "b", "c"), ("d",)))
ADD_D = encode_conf_change(ConfChange(ConfChangeKind.ADD_LEARNER, "d", b"127.0.0.1:7004"))

SAMPLES = [
    Message(MsgType.APP, "b", "a", 3, 2, 10, [Entry(11, 3, 0, b"x" * 100), Entry(12, 3, 1, ADD_D)], 9),
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


@settings(max_examples=200, deadline=None)
@given(messages())
def test_arbitrary_well_formed_messages_round_trip(m: Message) -> None:
    decoded = decode_message(encode_message(m))
    assert _norm(decoded) == _norm(m)
    assert message_invariant_problem(decoded) is None


def _pack(*fields: object) -> bytes:
    return msgpack.packb(fields, use_bin_type=True)


_HB = (int(MsgType.HEARTBEAT), "b", "a")
_APP = (int(MsgType.APP), "b", "a")
_PROP = (int(MsgType.PROP), "a", "b")
_SNAP = (int(MsgType.SNAP), "b", "a")
_SNAP_TAIL = (0, 0, (), 0, False, 0, b"", 0)  # log_term .. read_seq


@pytest.mark.parametrize(
    "data, message",
    [
        (b"\xc1", "not a msgpack"),
        (b"", "not a msgpack"),
        (msgpack.packb({"type": 0}), "array"),
        (msgpack.packb({1: 0}), "not a msgpack"),  # map keys must be strings
        (msgpack.packb([0, "a", "b"]), "array of 4"),
        (msgpack.packb([99, "a", "b", 1]), "unknown message type"),
        (msgpack.packb([True, "a", "b", 1]), "unknown message type"),
        (msgpack.packb([0, 1, "b", 1]), "strings"),
        (msgpack.packb([0, "", "b", 1]), "1..255 characters"),
        (msgpack.packb([0, "a", "b" * 256, 1]), "1..255 characters"),
        (msgpack.packb([0, "a", "b", -1]), "must be in 0.."),
        (_pack(*_HB, 2**64 - 1), "must be in 0..9223372036854775807"),
        (_pack(*_HB, 2**63), "must be in 0.."),
        (_pack(*_HB, 1, 0, 0, (), -5), "must be in 0.."),
        (_pack(*_HB, 1, 0, 0, (), 0, False, 2**63), "must be in 0.."),
        (_pack(*_HB, True), "must be integers"),
        (_pack(*_HB, 1.0), "must be integers"),
        (_pack(*_HB, msgpack.Timestamp(1)), "must be integers"),
        (_pack(*_HB, 1) + b"garbage", "not a msgpack"),
        (_pack(*_HB, 2**63 - 1) + b"\xff" * 9, "not a msgpack"),
        (_pack(*_HB, 1, 0, 0, (), 0, 1), "booleans"),
        (_pack(*_HB, 1, 0, 0, (), 0, False, 0, "text"), "must be bytes"),
        (_pack(*_HB, 1, 0, 0, (), 0, False, 0, b"x" * 1025), "context of 1025 bytes"),
        (_pack(*_HB, 1, 0, 0, 0), "entries must be an array"),
        (_pack(int(MsgType.TRANSFER_LEADER), "a", "b", 1, 0, 0, (), 0, False, 0, b"\xff"), "node id in UTF-8"),
        (_pack(*_HB, 1, 0, 0, ((1, 1, 0, b"x"),)), "HEARTBEAT message carries no entries"),
        (_pack(*_HB, 1, *_SNAP_TAIL, (1, 1, (("a",), ()))), "carries no snapshot"),
        (_pack(*_HB, 1, *_SNAP_TAIL, None, 0, b"chunk"), "carries no snapshot"),
        (msgpack.packb([0, "a", "b", 1, 0, 0, [[1, 1, 0]]]), "entries must be"),
        (msgpack.packb([0, "a", "b", 1, 0, 0, [7]]), "entries must be"),
        (msgpack.packb([0, "a", "b", 1, 0, 0, [[1, 1, 0, "text"]]], use_bin_type=True), "bytes data"),
        (_pack(*_APP, 1, 0, 0, ((1, 1, True, b"x"),)), "int kind"),
        (_pack(*_APP, 1, 0, 0, ((1, 1, 7, b"x"),)), "unknown entry kind"),
        (_pack(*_APP, 1, 0, 0, ((1, 1, 0, b"x"), (2, "t", 0, b"y"), (3, 1, 0, b"z"))), "int term"),
        (_pack(*_APP, 1, 0, 0, ((1, 1, 0, b"x"), (3, 1, 0, b"y"))), "without gaps"),
        (_pack(*_APP, 1, 0, 5, ((5, 1, 0, b"x"),)), "without gaps"),
        (_pack(*_APP, 1, 0, MAX_WIRE_INT, ((2**63, 1, 0, b"x"),)), "without gaps"),
        (_pack(*_APP, 3, 0, 0, ((1, 4, 0, b"x"),)), "terms must be within 0..3"),
        (_pack(*_APP, 3, 2, 0, ((1, 1, 0, b"x"),)), "terms must be within 2..3"),
        (_pack(*_APP, 1, 0, 0, ((1, 1, 1, b"\xc1"),)), "undecodable membership change"),
        (_pack(*_APP, 1, 0, 0, ((1, 1, 1, msgpack.packb([0, "d"])),)), "(kind, node id, context)"),
        (_pack(*_APP, 1, 0, 0, ((1, 1, 1, msgpack.packb([9, "d", b""])),)), "membership change kind"),
        (_pack(*_APP, 1, 0, 0, ((1, 1, 1, msgpack.packb([0, "", b""])),)), "node id of 1..255"),
        # bytes(2**40) would allocate a terabyte in the core's decoder.
        (_pack(*_APP, 1, 0, 0, ((1, 1, 1, msgpack.packb([0, "d", 2**40])),)), "context is at most"),
        (_pack(*_PROP, 1, 0, 0, ((5, 0, 0, b"forged"),)), "index 0 and term 0"),
        (_pack(*_PROP, 1, 0, 0, ((0, 1, 0, b"forged"),)), "index 0 and term 0"),
        (_pack(*_SNAP, 1), "needs snapshot metadata"),
        (_pack(*_SNAP, 1, *_SNAP_TAIL, (1, 2)), "snapshot metadata"),
        (msgpack.packb([8, "a", "b", 1, 0, 0, [], 0, False, 0, b"", 0, [1, 2]]), "snapshot metadata"),
        (_pack(*_SNAP, 1, *_SNAP_TAIL, (2**63, 1, (("a",), ()))), "snapshot index and term"),
        (_pack(*_SNAP, 1, *_SNAP_TAIL, (1, 1, ("a", ()))), "voters and learners must be arrays"),
        (_pack(*_SNAP, 1, *_SNAP_TAIL, (1, 1, (("a", 2), ()))), "members must be node id strings"),
        (_pack(*_SNAP, 1, *_SNAP_TAIL, (1, 1, (("a", ""), ()))), "member ids must be 1..255"),
        (_pack(*_SNAP, 1, *_SNAP_TAIL, (1, 1, (("a",), ("a",)))), "distinct"),
        (_pack(*_SNAP, 1, *_SNAP_TAIL, (1, 1, (tuple(map(str, range(1025))), ()))), "1025 members"),
        (_pack(*_SNAP, 1, *_SNAP_TAIL, (1, 1, (("a",), ())), MAX_WIRE_INT, b"x"), "ends beyond"),
        (_pack(*_SNAP, 1, *_SNAP_TAIL, (1, 1, (("a",), ())), 0, bytes((16 << 20) + 1)), "snapshot chunk of"),
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


# -- the wire bound leaves room for term + 1 ------------------------------------


def test_the_largest_wire_values_decode_and_one_more_does_not() -> None:
    m = Message(MsgType.HEARTBEAT, "b", "a", MAX_WIRE_INT, commit=MAX_WIRE_INT, read_seq=MAX_WIRE_INT)
    assert decode_message(encode_message(m)) == m
    for field in ("term", "commit", "read_seq", "log_term", "index", "hint"):
        with pytest.raises(CodecError, match="must be in 0.."):
            decode_message(encode_message(m._replace(**{field: MAX_WIRE_INT + 1})))


def _drive(core: RaftCore, wal: WAL) -> list[Message]:
    """Work through every Ready like the native driver: persist, then send (encode), then advance."""
    sent: list[Message] = []
    while core.has_ready():
        rd = core.ready()
        wal.append([LogRecord(*e) for e in rd.entries])
        if rd.hard_state is not None:
            wal.set_hard_state(*rd.hard_state)
        wal.sync()
        for m in rd.messages:
            encode_message(m)  # a term of 2**63 still fits msgpack's uint64
            sent.append(m)
        core.advance(rd)
    return sent


def test_a_core_at_the_largest_wire_term_campaigns_commits_and_persists(tmp_path: Path) -> None:
    """A node that adopted the largest term a peer may send can still campaign
    (term + 1 = 2**63), and the WAL stores that term and reads it back."""
    restored = RestoredState(HardState(MAX_WIRE_INT, None, 0))
    core = RaftCore(RaftConfig("a", ("a",)), random.Random(1), restored)
    with WAL.open(tmp_path / "wal") as wal:
        for _ in range(40):
            core.tick()
            _drive(core, wal)
            if core.role is Role.LEADER:
                break
        assert core.role is Role.LEADER and core.term == MAX_WIRE_INT + 1
        core.propose(b"still working")
        _drive(core, wal)
        assert core.commit == core.log.last_index() == 2
    with WAL.open(tmp_path / "wal") as reopened:
        recovered = reopened.recovered
        assert recovered.hard_state is not None and recovered.hard_state.term == MAX_WIRE_INT + 1
        assert [(e.index, e.term, e.data) for e in recovered.entries][-1] == (2, MAX_WIRE_INT + 1, b"still working")


def test_a_voter_steps_a_vote_request_at_the_largest_wire_term(tmp_path: Path) -> None:
    core = RaftCore(RaftConfig("a", ("a", "b", "c")), random.Random(1), RestoredState(HardState(5, None, 0)))
    vote = decode_message(encode_message(Message(MsgType.VOTE, "a", "b", MAX_WIRE_INT)))
    core.step(vote)
    with WAL.open(tmp_path / "wal") as wal:
        sent = _drive(core, wal)
    assert core.term == MAX_WIRE_INT and core.vote == "b"
    assert [(m.type, m.reject) for m in sent] == [(MsgType.VOTE_RESP, False)]
    assert decode_message(encode_message(sent[0])).term == MAX_WIRE_INT


def test_the_wal_refuses_a_term_beyond_its_64_bit_field_with_a_clear_error(tmp_path: Path) -> None:
    # A second line of defence behind the codec's bound: never an OverflowError.
    with WAL.open(tmp_path / "wal") as wal:
        with pytest.raises(ValueError, match="term 18446744073709551616 is outside the WAL's range"):
            wal.set_hard_state(2**64, None, 0)
        with pytest.raises(ValueError, match="term 18446744073709551616 is outside the WAL's range"):
            wal.append([LogRecord(1, 2**64, 0, b"x")])
        with pytest.raises(ValueError, match="index -1 is outside the WAL's range"):
            wal.append([LogRecord(-1, 1, 0, b"x")])
        wal.set_hard_state(2**64 - 1, None, 0)  # the largest value still fits
        wal.sync()
