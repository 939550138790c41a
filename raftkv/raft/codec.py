"""Message <-> bytes, as one msgpack array per message.

A Message is a tuple whose nested values (entries, snapshot metadata) are
tuples too, so encoding is a single C-level msgpack call. Trailing fields
that hold their default are left off, which makes heartbeats and
responses a handful of bytes.
"""

from __future__ import annotations

from functools import partial
from operator import itemgetter
from typing import Any

import msgpack

from raftkv.raft.messages import Message, MsgType
from raftkv.raft.types import ConfState, Entry, SnapshotMeta


class CodecError(ValueError):
    """The bytes are not a well-formed Raft message."""


_DEFAULTS: tuple[Any, ...] = tuple(Message._field_defaults.get(f) for f in Message._fields)
_NFIELDS = len(Message._fields)
_MIN_FIELDS = 4  # type, to, frm, term have no defaults
_MAX_TYPE = max(MsgType)
_ENTRIES = Message._fields.index("entries")
_SNAPSHOT = Message._fields.index("snapshot")
_packb = msgpack.Packer(use_bin_type=True).pack
# tuple.__new__ bound to the class skips the Python-level __new__ of a
# NamedTuple: decoding is dominated by per-entry object creation.
_make_entry = partial(tuple.__new__, Entry)
_new_message = partial(tuple.__new__, Message)
_index_of, _term_of, _kind_of, _data_of = (itemgetter(i) for i in range(4))
_FOUR, _BYTES, _INT = {4}, {bytes}, {int}


def encode_message(m: Message) -> bytes:
    n = _NFIELDS
    while n > _MIN_FIELDS and m[n - 1] == _DEFAULTS[n - 1]:
        n -= 1
    return _packb(m[:n] if n < _NFIELDS else m)


def decode_message(data: bytes) -> Message:
    try:
        raw = msgpack.unpackb(data, use_list=False, raw=False, strict_map_key=True)
    except (ValueError, msgpack.UnpackException) as exc:
        raise CodecError(f"not a msgpack Raft message: {exc}") from exc
    if type(raw) is not tuple or not _MIN_FIELDS <= len(raw) <= _NFIELDS:
        raise CodecError(f"a Raft message is an array of {_MIN_FIELDS}..{_NFIELDS} fields, got {type(raw).__name__}")
    t, to, frm, term = raw[0], raw[1], raw[2], raw[3]
    if type(t) is not int or not 0 <= t <= _MAX_TYPE:
        raise CodecError(f"unknown message type {t!r}")
    if type(to) is not str or type(frm) is not str:
        raise CodecError("message sender and receiver must be strings")
    if type(term) is not int or term < 0:
        raise CodecError(f"message term must be a non-negative integer, got {term!r}")
    n = len(raw)
    has_entries = n > _ENTRIES and raw[_ENTRIES]
    has_snapshot = n > _SNAPSHOT and raw[_SNAPSHOT] is not None
    if not (has_entries or has_snapshot):
        # Fast path: heartbeats, responses and votes carry neither.
        return _new_message(raw + _DEFAULTS[n:] if n < _NFIELDS else raw)
    fields = list(raw)
    if n < _NFIELDS:
        fields.extend(_DEFAULTS[n:])
    try:
        if has_entries:
            raw_entries = raw[_ENTRIES]
            # Whole-batch checks with C-level map/set: no Python loop per entry.
            if (
                set(map(len, raw_entries)) != _FOUR
                or set(map(type, map(_data_of, raw_entries))) != _BYTES
                or set(map(type, map(_index_of, raw_entries))) != _INT
                or set(map(type, map(_term_of, raw_entries))) != _INT
                or set(map(type, map(_kind_of, raw_entries))) != _INT
            ):
                raise CodecError("entry fields must be (int index, int term, int kind, bytes data)")
            fields[_ENTRIES] = list(map(_make_entry, raw_entries))
        if has_snapshot:
            index, sterm, (voters, learners) = raw[_SNAPSHOT]
            fields[_SNAPSHOT] = SnapshotMeta(index, sterm, ConfState(tuple(voters), tuple(learners)))
    except CodecError:
        raise
    except (TypeError, ValueError) as exc:
        raise CodecError(f"malformed message body: {exc}") from exc
    return _new_message(fields)
