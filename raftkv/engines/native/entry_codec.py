"""Framing of client commands inside Raft entry data.

Every node applies every entry, but only the node that proposed a command
has a caller waiting for its result. The proposer stamps each command with
an *origin* (its node id plus a random id drawn at start-up, so sequence
numbers reused after a restart can never match an entry proposed before it)
and a per-origin sequence number; whichever node applies the entry strips
the stamp, and the proposer uses it to find the waiting caller.

Layout: ``version (u8) | origin length (u8) | origin | seq (u64 BE) | command``.
An empty entry is the leader's no-op and carries no command.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

VERSION = 1
_SEQ = struct.Struct(">Q")
MAX_ORIGIN_BYTES = 255


class EntryFormatError(ValueError):
    """Entry data that is not a framed command."""


class FramedCommand(NamedTuple):
    origin: bytes
    seq: int
    command: bytes


def origin_prefix(origin: bytes) -> bytes:
    """The bytes every entry proposed by ``origin`` starts with."""
    if not 0 < len(origin) <= MAX_ORIGIN_BYTES:
        raise ValueError(f"origin must be 1..{MAX_ORIGIN_BYTES} bytes, got {len(origin)}")
    return bytes((VERSION, len(origin))) + origin


def frame(prefix: bytes, seq: int, command: bytes) -> bytes:
    """Entry data for ``command``; ``prefix`` comes from :func:`origin_prefix`."""
    return prefix + _SEQ.pack(seq) + command


def unframe(data: bytes) -> FramedCommand:
    """Split entry data into its stamp and command; raises EntryFormatError."""
    if len(data) < 2 or data[0] != VERSION:
        raise EntryFormatError(
            f"entry data does not start with framing version {VERSION} "
            f"(got {data[:1].hex() or 'nothing'})"
        )
    origin_end = 2 + data[1]
    seq_end = origin_end + _SEQ.size
    if data[1] == 0 or len(data) < seq_end:
        raise EntryFormatError(f"entry data of {len(data)} bytes is too short for its header")
    (seq,) = _SEQ.unpack_from(data, origin_end)
    return FramedCommand(data[2:origin_end], seq, data[seq_end:])
