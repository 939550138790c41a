"""The WAL record format: pure encoding and scanning, no I/O.

Every record is ``crc32 (u32) | body_len (u32) | type (u8) | body``, big
endian. The CRC covers everything after itself (length, type and body), so a
damaged length field is detected too, not only a damaged body.
"""

from __future__ import annotations

import enum
import struct
import zlib
from dataclasses import dataclass
from typing import NamedTuple

CRC = struct.Struct(">I")
AFTER_CRC = struct.Struct(">IB")  # body length, record type
HEADER_SIZE = CRC.size + AFTER_CRC.size
ENTRY_FIXED = struct.Struct(">IBQQB")  # body length, type, index, term, kind
ENTRY_FIXED_BODY_SIZE = 17  # index, term, kind
HARD_STATE_FIXED = struct.Struct(">QQB")  # term, commit, has_vote
U64 = struct.Struct(">Q")
U64_MAX = 2**64 - 1

# Larger than any entry the server accepts (requests are capped at a few MiB)
# yet small enough that a damaged length field is recognised at once instead
# of being trusted.
MAX_BODY_BYTES = 256 << 20


class RecordType(enum.IntEnum):
    ENTRY = 1
    HARD_STATE = 2
    TRUNCATE = 3  # entries from this index on are discarded
    COMPACT = 4  # entries up to and including this index are covered by a snapshot


class LogRecord(NamedTuple):
    index: int
    term: int
    kind: int
    data: bytes


class HardState(NamedTuple):
    term: int
    vote: str | None
    commit: int


def encode_entries(entries: list[LogRecord]) -> tuple[list[bytes], int]:
    """Encoded records for ``entries`` as parts to join once per sync, and their total size."""
    parts: list[bytes] = []
    append = parts.append
    pack = ENTRY_FIXED.pack
    crc32 = zlib.crc32
    pack_crc = CRC.pack
    total = 0
    entry_type = RecordType.ENTRY.value
    try:
        for index, term, kind, data in entries:
            record = pack(ENTRY_FIXED_BODY_SIZE + len(data), entry_type, index, term, kind) + data
            append(pack_crc(crc32(record)))
            append(record)
            total += CRC.size + len(record)
    except (struct.error, TypeError, ValueError) as exc:
        bad = entries[len(parts) // 2]
        reason = _u64_problem(("index", bad[0]), ("term", bad[1])) or exc
        raise ValueError(f"invalid log record {bad!r}: {reason}") from exc
    return parts, total


def _u64_problem(*fields: tuple[str, object]) -> str | None:
    """Which integer field does not fit its unsigned 64-bit slot, if any.

    Only called after packing failed, so the hot path pays nothing; it
    turns struct's "argument out of range" into a message naming the field.
    """
    for name, value in fields:
        if type(value) is int and not 0 <= value <= U64_MAX:
            return f"{name} {value} is outside the WAL's range 0..{U64_MAX}"
    return None


def encode_record(rtype: RecordType, body: bytes) -> bytes:
    after_crc = AFTER_CRC.pack(len(body), rtype) + body
    return CRC.pack(zlib.crc32(after_crc)) + after_crc


def encode_hard_state(state: HardState) -> bytes:
    if state.vote is not None and not isinstance(state.vote, str):
        raise ValueError(f"invalid hard state {state!r}: vote must be a node id string or None")
    vote = b"" if state.vote is None else state.vote.encode("utf-8")
    try:
        fixed = HARD_STATE_FIXED.pack(state.term, state.commit, state.vote is not None)
    except (struct.error, TypeError) as exc:
        reason = _u64_problem(("term", state.term), ("commit", state.commit)) or exc
        raise ValueError(f"invalid hard state {state!r}: {reason}") from exc
    return encode_record(RecordType.HARD_STATE, fixed + vote)


def encode_index_marker(rtype: RecordType, index: int) -> bytes:
    return encode_record(rtype, U64.pack(index))


def decode_entry(body: memoryview) -> LogRecord:
    index, term = struct.unpack_from(">QQ", body)
    return LogRecord(index, term, body[16], bytes(body[17:]))


def decode_hard_state(body: memoryview) -> HardState:
    term, commit, has_vote = HARD_STATE_FIXED.unpack_from(body)
    vote = bytes(body[HARD_STATE_FIXED.size :]).decode("utf-8") if has_vote else None
    return HardState(term, vote, commit)


def decode_index_marker(body: memoryview) -> int:
    return U64.unpack_from(body)[0]


_MIN_BODY = {
    RecordType.ENTRY: ENTRY_FIXED_BODY_SIZE,
    RecordType.HARD_STATE: HARD_STATE_FIXED.size,
    RecordType.TRUNCATE: U64.size,
    RecordType.COMPACT: U64.size,
}
_VALID_TYPES = frozenset(int(t) for t in RecordType)


class ScannedRecord(NamedTuple):
    offset: int
    rtype: RecordType
    body: memoryview


@dataclass
class ScanResult:
    records: list[ScannedRecord]
    valid_bytes: int  # offset just past the last valid record
    problem: str | None  # why scanning stopped before the end, None if it reached it


def check_record_at(buf: memoryview, offset: int) -> tuple[int, int] | str:
    """Verify the record at ``offset``: ``(type, body_len)`` or the reason it is bad."""
    remaining = len(buf) - offset
    if remaining < HEADER_SIZE:
        return f"incomplete record header ({remaining} of {HEADER_SIZE} bytes)"
    (crc,) = CRC.unpack_from(buf, offset)
    body_len, rtype = AFTER_CRC.unpack_from(buf, offset + CRC.size)
    if body_len > MAX_BODY_BYTES:
        return f"implausible record length {body_len}"
    if remaining < HEADER_SIZE + body_len:
        return f"incomplete record (needs {HEADER_SIZE + body_len} bytes, {remaining} present)"
    if zlib.crc32(buf[offset + CRC.size : offset + HEADER_SIZE + body_len]) != crc:
        return "checksum mismatch"
    if rtype not in _VALID_TYPES:
        return f"unknown record type {rtype}"
    if body_len < _MIN_BODY[RecordType(rtype)]:
        return f"record body too short for type {RecordType(rtype).name}"
    return rtype, body_len


def scan_records(data: bytes) -> ScanResult:
    """Read records from the start of a segment until the end or the first bad one."""
    buf = memoryview(data)
    records: list[ScannedRecord] = []
    offset = 0
    end = len(buf)
    while offset < end:
        checked = check_record_at(buf, offset)
        if isinstance(checked, str):
            return ScanResult(records, offset, checked)
        rtype, body_len = checked
        body_start = offset + HEADER_SIZE
        records.append(ScannedRecord(offset, RecordType(rtype), buf[body_start : body_start + body_len]))
        offset = body_start + body_len
    return ScanResult(records, offset, None)


def find_valid_record_after(data: bytes, bad_offset: int) -> int | None:
    """Offset of the first verifiable record starting after ``bad_offset``, if any.

    Used to tell a torn tail (nothing valid follows: the last write was cut
    short) from damage in the middle of the log (valid records follow). The
    record's own length is tried first; when the length itself is damaged,
    every later offset is tried.
    """
    buf = memoryview(data)
    if len(buf) - bad_offset >= HEADER_SIZE:
        declared_len = AFTER_CRC.unpack_from(buf, bad_offset + CRC.size)[0]
        candidate = bad_offset + HEADER_SIZE + declared_len
        if declared_len <= MAX_BODY_BYTES and candidate < len(buf):
            if not isinstance(check_record_at(buf, candidate), str):
                return candidate
    for candidate in range(bad_offset + 1, len(buf) - HEADER_SIZE + 1):
        if not isinstance(check_record_at(buf, candidate), str):
            return candidate
    return None
