"""How the state machine lays out its MVCC state in a store (etcd's model).

Tables (raftkv.kv.store.TABLES):

* ``history``: ``rev(8) sub(4)`` -> ``[key, value, create_revision,
  version]``: every retained write, keyed by its revision and its position
  within that revision (a txn writes several keys under one revision).
  A deletion is a tombstone: ``value`` nil, create_revision and version 0.
* ``index`` (the key index): ``escaped key, 00 00, rev(8) sub(4)`` -> empty:
  for each key, the revisions of its retained writes in order. A key's
  entries are contiguous, so "the key as of revision R" is one floor lookup.
* ``latest``: ``key`` -> ``[create_revision, mod_revision, sub, version]``:
  the keys that exist now, pointing at their last write in ``history``;
  current reads and prefix scans use it and never walk history.
* ``meta``: revision, compact revision, applied log index.
* ``idem``: ``seq(8)`` -> ``[idem_key, fingerprint, result]``: the
  idempotency table in recording order.

Keys are UTF-8 bytes, whose byte order is code point order. In ``index`` a
key's 00 bytes are escaped as 00 FF (UTF-8 never holds an FF byte) and it
ends with 00 00, so one key's entries never interleave with another's and
the order of keys is kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgpack

from raftkv.kv.store import ReadTxn

META_REVISION = b"revision"
META_COMPACT_REVISION = b"compact_revision"
META_APPLIED_INDEX = b"applied_index"

_MAX_SUB = (1 << 32) - 1
_KEY_END = b"\x00\x00"
_REV_BYTES = 12

# (value or None, create_revision, mod_revision, version) of one write
Version = tuple[bytes | None, int, int, int]


def rev_key(revision: int, sub: int) -> bytes:
    return revision.to_bytes(8, "big") + sub.to_bytes(4, "big")


def parse_rev_key(data: bytes) -> tuple[int, int]:
    return int.from_bytes(data[:8], "big"), int.from_bytes(data[8:12], "big")


def escape_key(key: bytes) -> bytes:
    return key.replace(b"\x00", b"\x00\xff")


def index_key(key: bytes, revision: int, sub: int) -> bytes:
    return escape_key(key) + _KEY_END + rev_key(revision, sub)


def split_index_key(data: bytes) -> tuple[bytes, bytes]:
    """(escaped key, rev key) of an index entry."""
    return data[: -_REV_BYTES - 2], data[-_REV_BYTES:]


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False)


def int_bytes(value: int) -> bytes:
    return value.to_bytes(8, "big")


def read_int(txn: ReadTxn, name: bytes) -> int:
    data = txn.get("meta", name)
    return 0 if data is None else int.from_bytes(data, "big")


def prefix_successor(prefix: bytes) -> bytes | None:
    """The smallest bytes above every bytes string starting with ``prefix``."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])


def version_at(txn: ReadTxn, key: bytes, revision: int) -> Version | None:
    """The last write of ``key`` at or before ``revision`` (None: never
    written by then, or its history below that point was compacted away)."""
    escaped = escape_key(key) + _KEY_END
    found = txn.floor("index", escaped + rev_key(revision, _MAX_SUB))
    if found is None or not found[0].startswith(escaped) or len(found[0]) != len(escaped) + _REV_BYTES:
        return None
    return history_version(txn, found[0][-_REV_BYTES:])


def history_version(txn: ReadTxn, rk: bytes) -> Version:
    data = txn.get("history", rk)
    if data is None:
        raise ValueError(f"the key index points at revision {parse_rev_key(rk)}, which history lacks")
    _key, value, create_revision, version = unpack(data)
    return value, create_revision, parse_rev_key(rk)[0], version


def range_at(
    txn: ReadTxn, prefix: bytes, start_after: bytes | None, revision: int
) -> Iterator[tuple[bytes, Version]]:
    """The keys that existed at ``revision``, starting with ``prefix`` (and
    after ``start_after``), in key order, each with its write as of then.

    Walks the key index of every key in the range: cost grows with the
    retained history of the range, not only with its keys."""
    low = escape_key(prefix)
    if start_after is not None:
        low = max(low, escape_key(start_after) + _KEY_END + b"\xff")
    successor = prefix_successor(prefix)
    high = None if successor is None else escape_key(successor)
    current: bytes | None = None
    best: bytes | None = None
    for entry, _ in txn.scan("index", low, high):
        escaped, rk = split_index_key(entry)
        if escaped != current:
            if best is not None:
                yield from _live(txn, current, best)
            current, best = escaped, None
        if parse_rev_key(rk)[0] <= revision:
            best = rk
    if best is not None:
        yield from _live(txn, current, best)


def _live(txn: ReadTxn, escaped: bytes | None, rk: bytes) -> Iterator[tuple[bytes, Version]]:
    assert escaped is not None
    version = history_version(txn, rk)
    if version[0] is not None:
        yield escaped.replace(b"\x00\xff", b"\x00"), version


def history_items(txn: ReadTxn) -> Iterator[tuple[int, int, str, bytes | None, int, int]]:
    """Every retained write in revision order (the snapshot's history)."""
    for rk, data in txn.scan("history"):
        key, value, create_revision, version = unpack(data)
        revision, sub = parse_rev_key(rk)
        yield revision, sub, key, value, create_revision, version


def idempotency_items(txn: ReadTxn) -> Iterator[tuple[int, str, bytes | None, dict[str, Any] | None]]:
    for seq, data in txn.scan("idem"):
        idem, fingerprint, result = unpack(data)
        yield int.from_bytes(seq, "big"), idem, fingerprint, result
