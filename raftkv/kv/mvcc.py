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

LMDB keys hold at most 511 bytes, and raftkv keys up to 4 KiB. A table key
longer than KEY_LIMIT bytes is stored as its first KEY_LIMIT bytes, FF FF
and a 16-byte hash of the whole key (the whole key is in its ``history``
record). Such keys sharing their first KEY_LIMIT bytes sit together, after
any shorter key with that start, in hash order: scans sort each such group
by the whole key (:func:`in_key_order`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from typing import Any

import msgpack

from raftkv.kv import packing
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


KEY_LIMIT = 400
_LONG_MARK = b"\xff\xff"


def _bounded(table_key: bytes, key: bytes) -> bytes:
    if len(table_key) <= KEY_LIMIT:
        return table_key
    return table_key[:KEY_LIMIT] + _LONG_MARK + hashlib.blake2b(key, digest_size=16).digest()


def latest_key(key: bytes) -> bytes:
    """The ``latest`` table's key for ``key``."""
    return _bounded(key, key)


def escape_key(key: bytes) -> bytes:
    return key.replace(b"\x00", b"\x00\xff")


def index_prefix(key: bytes) -> bytes:
    """What every ``index`` entry of ``key`` starts with (before 00 00)."""
    return _bounded(escape_key(key), key)


def index_key(key: bytes, revision: int, sub: int) -> bytes:
    return index_prefix(key) + _KEY_END + rev_key(revision, sub)


def in_key_order(items: Iterable[tuple[bytes, bytes, Any]]) -> Iterator[tuple[bytes, Any]]:
    """``(key, payload)`` in key order from ``(table key, key, payload)`` in
    table order: only groups of long table keys (see the module doc) need sorting."""
    group: list[tuple[bytes, Any]] = []
    group_start = b""
    for table_key, key, payload in items:
        if len(table_key) > KEY_LIMIT:
            start = table_key[:KEY_LIMIT]
            if group and start != group_start:
                group.sort(key=lambda item: item[0])
                yield from group
                group = []
            group_start = start
            group.append((key, payload))
            continue
        if group:
            group.sort(key=lambda item: item[0])
            yield from group
            group = []
        yield key, payload
    group.sort(key=lambda item: item[0])
    yield from group


def scan_latest(txn: ReadTxn, prefix: bytes, start_after: bytes | None) -> Iterator[tuple[bytes, bytes]]:
    """``(key, latest record)`` of the current keys starting with ``prefix``
    (and after ``start_after``), in key order."""
    low = prefix[:KEY_LIMIT]
    if start_after is not None:
        low = max(low, (start_after + b"\x00")[:KEY_LIMIT])
    successor = prefix_successor(prefix[:KEY_LIMIT])

    def with_keys() -> Iterator[tuple[bytes, bytes, bytes]]:
        for table_key, data in txn.scan("latest", low, successor):
            if len(table_key) <= KEY_LIMIT:
                yield table_key, table_key, data
            else:
                _create, mod_revision, sub, _version = unpack(data)
                key = unpack(_history(txn, rev_key(mod_revision, sub)))[0].encode()
                yield table_key, key, data

    for key, data in in_key_order(with_keys()):
        if key.startswith(prefix) and (start_after is None or key > start_after):
            yield key, data


def _history(txn: ReadTxn, rk: bytes) -> bytes:
    data = txn.get("history", rk)
    if data is None:
        raise ValueError(f"a key points at revision {parse_rev_key(rk)}, which history lacks")
    return data


def split_index_key(data: bytes) -> tuple[bytes, bytes]:
    """(escaped key, rev key) of an index entry."""
    return data[: -_REV_BYTES - 2], data[-_REV_BYTES:]


pack = packing.pack


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
    escaped = index_prefix(key) + _KEY_END
    found = txn.floor("index", escaped + rev_key(revision, _MAX_SUB))
    if found is None or not found[0].startswith(escaped) or len(found[0]) != len(escaped) + _REV_BYTES:
        return None
    return history_version(txn, found[0][-_REV_BYTES:])


def previous_write(txn: ReadTxn, key: bytes, revision: int, sub: int) -> tuple[bytes, bytes] | None:
    """(index entry, rev key) of ``key``'s retained write just before
    ``(revision, sub)``, or None."""
    below = rev_key(revision, sub - 1) if sub else rev_key(revision - 1, _MAX_SUB)
    escaped = index_prefix(key) + _KEY_END
    found = txn.floor("index", escaped + below)
    if found is None or not found[0].startswith(escaped) or len(found[0]) != len(escaped) + _REV_BYTES:
        return None
    return found[0], found[0][-_REV_BYTES:]


def history_version(txn: ReadTxn, rk: bytes) -> Version:
    _key, value, create_revision, version = unpack(_history(txn, rk))
    return value, create_revision, parse_rev_key(rk)[0], version


def range_at(
    txn: ReadTxn, prefix: bytes, start_after: bytes | None, revision: int
) -> Iterator[tuple[bytes, Version]]:
    """The keys that existed at ``revision``, starting with ``prefix`` (and
    after ``start_after``), in key order, each with its write as of then.

    Walks the key index of every key in the range: cost grows with the
    retained history of the range, not only with its keys."""
    low = escape_key(prefix)[:KEY_LIMIT]
    if start_after is not None:
        low = max(low, (escape_key(start_after) + _KEY_END + b"\xff")[:KEY_LIMIT])
    high = prefix_successor(escape_key(prefix)[:KEY_LIMIT])

    def newest_per_key() -> Iterator[tuple[bytes, bytes, tuple[bytes, Version]]]:
        current: bytes | None = None
        best: bytes | None = None
        for entry, _ in txn.scan("index", low, high):
            table_key, rk = split_index_key(entry)
            if table_key != current:
                if current is not None and best is not None:
                    yield _at(txn, current, best)
                current, best = table_key, None
            if parse_rev_key(rk)[0] <= revision:
                best = rk
        if current is not None and best is not None:
            yield _at(txn, current, best)

    for key, (_, version) in in_key_order(newest_per_key()):
        if version[0] is not None and key.startswith(prefix) and (start_after is None or key > start_after):
            yield key, version


def _at(txn: ReadTxn, table_key: bytes, rk: bytes) -> tuple[bytes, bytes, tuple[bytes, Version]]:
    key, value, create_revision, version = unpack(_history(txn, rk))
    encoded = key.encode()
    return table_key, encoded, (encoded, (value, create_revision, parse_rev_key(rk)[0], version))


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
