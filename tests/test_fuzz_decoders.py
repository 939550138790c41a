"""Fuzzing every decoder that reads peer bytes.

Each decoder gets random bytes and mutations of valid encodings (byte
flips, cuts, splices, and whole fields replaced by hostile values such as
2**64-1, booleans, floats and timestamps). It may raise only its documented
error type, and what it accepts must be sound: a decoded message satisfies
every validation rule (restated independently in tests/raft_messages.py)
and re-encodes to an equal message.

The inputs under tests/fuzz_corpus/<decoder>/ seed the mutations and are
replayed one by one (see the README there). RAFTKV_FUZZ_EXAMPLES raises
the number of examples per test (default 100, a few seconds in all).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raftkv.engines.native.entry_codec import EntryFormatError, frame, origin_prefix, unframe
from raftkv.raft.codec import CodecError, decode_message, encode_message
from raftkv.raft.messages import MsgType
from raftkv.transport.framing import (
    LENGTH,
    REJECT_MAGIC,
    FrameDecoder,
    FrameTooLargeError,
    HandshakeError,
    decode_hello,
    decode_reject,
    encode_hello,
    encode_reject,
)
from tests.raft_messages import message_invariant_problem, messages

CORPUS = Path(__file__).parent / "fuzz_corpus"
EXAMPLES = int(os.environ.get("RAFTKV_FUZZ_EXAMPLES", "100"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
FRAME_LIMIT = 1 << 12  # the FrameDecoder limit under test


def _corpus(decoder: str) -> list[Path]:
    return sorted(p for p in (CORPUS / decoder).iterdir() if p.suffix == ".bin")


# -- what each decoder may do with any input --------------------------------------


def check_decode_message(data: bytes) -> bool:
    """True if accepted (and sound), False if refused with CodecError."""
    try:
        m = decode_message(data)
    except CodecError:
        return False
    problem = message_invariant_problem(m)
    assert problem is None, f"decode_message accepted a message breaking {problem!r}: {m!r}"
    again = decode_message(encode_message(m))
    assert again._replace(entries=tuple(again.entries)) == m._replace(entries=tuple(m.entries))
    return True


def check_decode_hello(data: bytes) -> bool:
    try:
        hello = decode_hello(data)
    except HandshakeError:
        return False
    assert type(hello.node_id) is str and hello.node_id and type(hello.cluster_id) is str
    assert decode_hello(encode_hello(hello.node_id, hello.cluster_id)) == hello
    return True


def check_decode_reject(data: bytes) -> bool:
    try:
        reason = decode_reject(data)
    except HandshakeError:
        return False
    assert type(reason) is str and data.startswith(REJECT_MAGIC)
    assert decode_reject(encode_reject(reason)) == reason
    return True


def check_unframe(data: bytes) -> bool:
    try:
        framed = unframe(data)
    except EntryFormatError:
        return False
    assert frame(origin_prefix(framed.origin), framed.seq, framed.command) == data
    return True


def _reference_frames(stream: bytes) -> tuple[list[bytes], bool]:
    """The frames in ``stream`` by the obvious slow reading, and whether an
    oversized header stops it."""
    frames, pos = [], 0
    while len(stream) - pos >= LENGTH.size:
        (size,) = LENGTH.unpack_from(stream, pos)
        if size > FRAME_LIMIT:
            return frames, True
        if len(stream) - pos - LENGTH.size < size:
            break
        frames.append(stream[pos + LENGTH.size : pos + LENGTH.size + size])
        pos += LENGTH.size + size
    return frames, False


def check_frame_decoder(stream: bytes, chunk_sizes: list[int] | None = None) -> bool:
    """Feeds ``stream`` in chunks; the frames must match the reference reading."""
    expected, too_large = _reference_frames(stream)
    decoder = FrameDecoder(FRAME_LIMIT)
    got: list[bytes] = []
    sizes = chunk_sizes or [len(stream) or 1]
    pos, i = 0, 0
    try:
        while pos < len(stream):
            step = max(1, sizes[i % len(sizes)])
            decoder.extend(stream[pos : pos + step])
            pos += step
            i += 1
            frame_ = decoder.pop_frame()
            while frame_ is not None:
                got.append(frame_)
                frame_ = decoder.pop_frame()
    except FrameTooLargeError:
        assert too_large, "FrameTooLargeError without an oversized header"
        assert got == expected
        return False
    assert not too_large and got == expected
    return True


CHECKS: dict[str, Callable[[bytes], bool]] = {
    "decode_message": check_decode_message,
    "decode_hello": check_decode_hello,
    "decode_reject": check_decode_reject,
    "entry_unframe": check_unframe,
    "frame_decoder": check_frame_decoder,
}


# -- replaying the corpus ---------------------------------------------------------


@pytest.mark.parametrize(
    "decoder, path",
    [(d, p) for d in sorted(CHECKS) for p in _corpus(d)],
    ids=lambda v: v.name if isinstance(v, Path) else v,
)
def test_corpus_input(decoder: str, path: Path) -> None:
    """``ok-*`` files must be accepted, ``bad-*`` files refused, others only stay within the contract."""
    accepted = CHECKS[decoder](path.read_bytes())
    if path.name.startswith("ok-"):
        assert accepted, f"{path.name} should decode"
    elif path.name.startswith("bad-"):
        assert not accepted, f"{path.name} should be refused"


def test_every_decoder_has_a_corpus() -> None:
    for decoder in CHECKS:
        names = [p.name for p in _corpus(decoder)]
        assert any(n.startswith("ok-") for n in names) and any(n.startswith("bad-") for n in names), decoder


# -- mutations --------------------------------------------------------------------

_HOSTILE_INTS = [0, 1, -1, 2**31, 2**32, 2**63 - 1, 2**63, 2**64 - 1, -(2**63)]
hostile_values = st.one_of(
    st.sampled_from(_HOSTILE_INTS),
    st.integers(-(2**63), 2**64 - 1),
    st.booleans(),
    st.none(),
    st.floats(),
    st.text(max_size=300),
    st.binary(max_size=1100),
    st.just(msgpack.Timestamp(1)),
    st.just(msgpack.ExtType(5, b"x")),
    st.lists(st.sampled_from(_HOSTILE_INTS), max_size=5),
    st.lists(st.lists(st.integers(0, 3), max_size=5), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(0, 3), max_size=2),
)


def _confusions(value: Any) -> list[Any]:
    """Values a careless check would take for ``value``: equal, as truthy, or just out of range."""
    if type(value) is bool:
        return [int(value), float(value), None if not value else b"x"]
    if type(value) is int:
        # Neighbours in range too: they test the shape rules (contiguity, index 0 ...).
        near = [value + 1, 2**63 - 1, -1 - value, value + 2**63, 2**64 - 1]
        out: list[Any] = [n for n in near if -(2**63) <= n < 2**64]  # what msgpack can encode
        out += [float(value), str(value)]
        return out + [bool(value)] if value in (0, 1) else out
    if type(value) is bytes:
        return [value.decode("latin-1"), list(value), None]
    if type(value) is str:
        return [value.encode(), "", "x" * 256]
    if value is None:
        return [0, False, [], b""]
    if isinstance(value, list):
        return [None, value * 2, value[:-1], 0]
    return [None]


def _paths(value: Any, prefix: tuple[int, ...] = ()) -> list[tuple[int, ...]]:
    """Every position in a nest of lists, the lists themselves included."""
    out = [prefix]
    if isinstance(value, list):
        for i, item in enumerate(value):
            out.extend(_paths(item, prefix + (i,)))
    return out


def _replace_at(value: Any, path: tuple[int, ...], new: Any) -> Any:
    if not path:
        return new
    i = path[0]
    return value[:i] + [_replace_at(value[i], path[1:], new)] + value[i + 1 :]


def _get_at(value: Any, path: tuple[int, ...]) -> Any:
    for i in path:
        value = value[i]
    return value


def _replace_somewhere(draw: st.DrawFn, value: Any) -> Any:
    """``value`` with one position (drawn uniformly, at any depth) replaced by
    a value confusable with the original or a hostile one."""
    path = draw(st.sampled_from(_paths(value)))
    old = _get_at(value, path)
    new = draw(st.sampled_from(_confusions(old))) if draw(st.booleans()) else draw(hostile_values)
    return _replace_at(value, path, new)


# Every field of a Message on the wire, as encode_message would send it if
# none were left off: mutating a padded message reaches the trailing fields.
_WIRE_DEFAULTS = [0, [], 0, False, 0, b"", 0, None, 0, b"", False]  # log_term .. snap_done


@st.composite
def field_mutations(draw: st.DrawFn, seeds: st.SearchStrategy[bytes]) -> bytes:
    """A msgpack encoding with some of its values replaced, added or removed."""
    seed = draw(seeds)
    try:
        value = msgpack.unpackb(seed, strict_map_key=False)
    except (ValueError, msgpack.UnpackException):
        return seed
    if isinstance(value, list) and 4 <= len(value) < 16 and draw(st.booleans()):
        value = value + _WIRE_DEFAULTS[len(value) - 4 :]
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["replace", "replace", "append", "drop"]))
        if op == "replace" or not isinstance(value, list):
            value = _replace_somewhere(draw, value)
        elif op == "append":
            value = value + [draw(hostile_values)]
        elif value:
            del value[draw(st.integers(0, len(value) - 1))]
    return msgpack.packb(value, use_bin_type=True)


@st.composite
def byte_mutations(draw: st.DrawFn, seeds: st.SearchStrategy[bytes]) -> bytes:
    """``seeds`` with bytes flipped, inserted, deleted, cut off or spliced in."""
    data = bytearray(draw(seeds))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "splice"]))
        pos = draw(st.integers(0, len(data)))
        if op == "flip" and pos < len(data):
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
        elif op == "truncate":
            del data[pos:]
        else:
            data[pos : pos + draw(st.integers(0, 8))] = msgpack.packb(draw(hostile_values), use_bin_type=True)
    return bytes(data)


def _seeds(decoder: str, valid: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    corpus = [p.read_bytes() for p in _corpus(decoder)]
    return st.one_of(st.sampled_from(corpus), valid) if corpus else valid


def _fuzz_inputs(decoder: str, valid: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    seeds = _seeds(decoder, valid)
    return st.one_of(st.binary(max_size=512), seeds, byte_mutations(seeds), field_mutations(seeds))


_valid_messages = messages().map(encode_message)
_valid_hellos = st.builds(encode_hello, st.text(min_size=1, max_size=20), st.text(max_size=20))
_valid_rejects = st.text(max_size=100).map(encode_reject)
_valid_entries = st.builds(
    lambda origin, seq, command: frame(origin_prefix(origin), seq, command),
    st.binary(min_size=1, max_size=255),
    st.integers(0, 2**64 - 1),
    st.binary(max_size=64),
)


@FUZZ
@given(_fuzz_inputs("decode_message", _valid_messages))
def test_fuzz_decode_message(data: bytes) -> None:
    check_decode_message(data)


@FUZZ
@given(_fuzz_inputs("decode_hello", _valid_hellos))
def test_fuzz_decode_hello(data: bytes) -> None:
    check_decode_hello(data)


@FUZZ
@given(_fuzz_inputs("decode_reject", _valid_rejects))
def test_fuzz_decode_reject(data: bytes) -> None:
    check_decode_reject(data)


@FUZZ
@given(_fuzz_inputs("entry_unframe", _valid_entries))
def test_fuzz_entry_unframe(data: bytes) -> None:
    check_unframe(data)


_valid_streams = st.lists(st.binary(max_size=300), max_size=6).map(
    lambda payloads: b"".join(LENGTH.pack(len(p)) + p for p in payloads)
)


@FUZZ
@given(
    st.one_of(st.binary(max_size=512), byte_mutations(_seeds("frame_decoder", _valid_streams))),
    st.lists(st.integers(1, 64), min_size=1, max_size=8),
)
def test_fuzz_frame_decoder(stream: bytes, chunk_sizes: list[int]) -> None:
    check_frame_decoder(stream, chunk_sizes)


@pytest.mark.parametrize("msg_type", list(MsgType), ids=lambda t: t.name)
@settings(FUZZ, max_examples=max(1, EXAMPLES // 5))
@given(data=st.data())
def test_fuzz_decode_message_field_by_field(msg_type: MsgType, data: st.DataObject) -> None:
    """Valid messages of each type with fields swapped for hostile or
    confusable values: the mutations most likely to slip a wrong type or
    range past the checks, so every type gets its own share of examples."""
    check_decode_message(data.draw(field_mutations(messages([msg_type]).map(encode_message))))
