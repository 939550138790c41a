"""Message <-> bytes, as one msgpack array per message.

A Message is a tuple whose nested values (entries, snapshot metadata) are
tuples too, so encoding is a single C-level msgpack call. Trailing fields
that hold their default are left off, which makes heartbeats and
responses a handful of bytes.

Decoding is where peer input enters the Raft core, so every decoded
message passes the checks in :mod:`raftkv.raft.validation` (types, integer
ranges, known kinds, the shape its type calls for); anything else raises
CodecError.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import msgpack

from raftkv.raft.messages import Message
from raftkv.raft.types import ConfState, Entry, SnapshotMeta
from raftkv.raft.validation import check_entries, check_fields, check_snapshot_meta


class CodecError(ValueError):
    """The bytes are not a well-formed Raft message."""


_DEFAULTS: tuple[Any, ...] = tuple(Message._field_defaults.get(f) for f in Message._fields)
_NFIELDS = len(Message._fields)
_MIN_FIELDS = 4  # type, to, frm, term have no defaults
_ENTRIES = Message._fields.index("entries")
_SNAPSHOT = Message._fields.index("snapshot")
_packb = msgpack.Packer(use_bin_type=True).pack
# tuple.__new__ bound to the class skips the Python-level __new__ of a
# NamedTuple: decoding is dominated by per-entry object creation.
_make_entry = partial(tuple.__new__, Entry)
_new_message = partial(tuple.__new__, Message)


def encode_message(m: Message) -> bytes:
    n = _NFIELDS
    while n > _MIN_FIELDS and m[n - 1] == _DEFAULTS[n - 1]:
        n -= 1
    return _packb(m[:n] if n < _NFIELDS else m)


def decode_message(data: bytes) -> Message:
    """The message in ``data``; raises CodecError for anything not well formed."""
    try:
        raw = msgpack.unpackb(data, use_list=False, raw=False, strict_map_key=True)
    except (ValueError, msgpack.UnpackException) as exc:
        raise CodecError(f"not a msgpack Raft message: {exc}") from exc
    if type(raw) is not tuple or not _MIN_FIELDS <= len(raw) <= _NFIELDS:
        raise CodecError(f"a Raft message is an array of {_MIN_FIELDS}..{_NFIELDS} fields, got {type(raw).__name__}")
    n = len(raw)
    fields = raw + _DEFAULTS[n:] if n < _NFIELDS else raw
    problem = check_fields(fields)
    if problem is not None:
        raise CodecError(problem)
    entries, snapshot = fields[_ENTRIES], fields[_SNAPSHOT]
    if not entries and snapshot is None:
        # Fast path: heartbeats, responses and votes carry neither.
        return _new_message(fields)
    out = list(fields)
    if entries:
        problem = check_entries(fields[0], fields[3], fields[4], fields[5], entries)
        if problem is not None:
            raise CodecError(problem)
        out[_ENTRIES] = list(map(_make_entry, entries))
    if snapshot is not None:
        problem = check_snapshot_meta(snapshot)
        if problem is not None:
            raise CodecError(problem)
        index, term, (voters, learners) = snapshot
        out[_SNAPSHOT] = SnapshotMeta(index, term, ConfState(voters, learners))
    return _new_message(out)
