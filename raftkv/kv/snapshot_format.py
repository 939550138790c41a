"""Byte format of a state machine snapshot.

Format 4: ``msgpack([4, revision, compact_revision, history, idempotency,
tables])``: format 3 plus ``tables``, a map from the name of each side
table (leases, auth: ``EXTRA_TABLES`` of raftkv.kv.store) to a flat
``[key, value, ...]`` list of its items in key order, bytes to bytes. The
modules that own those tables give their bytes meaning; a snapshot only
carries them.

Format 3 (MVCC): ``msgpack([3, revision, compact_revision, history,
idempotency])`` where ``history`` is one flat list ``[revision, sub, key,
value, create_revision, version, ...]`` of every retained write in revision
order (``value`` nil for a deletion's tombstone; flat because it packs and
unpacks several times faster than a list of lists), and ``idempotency`` is
``[idem_key, fingerprint, result, ...]`` oldest first (``result`` nil when
the byte bound dropped it). The same state always produces the same bytes,
so replicas can be compared byte for byte.

Still read: format 3 (no side tables); format 2 (``[2, revision, records, idempotency]``, the current
keys only: ``[key, value, create_revision, mod_revision, version, ...]`` in
key order), which comes back as a history holding each key's last write and
compacted at its revision; and format 1 (format 2 with ``[idem_key, result,
...]``, no fingerprints), whose keys come back with no fingerprint, so a
retry with one is refused rather than matched blindly.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgpack

from raftkv.kv.commands import FINGERPRINT_BYTES

FORMAT_VERSION = 4
_FORMAT_WITHOUT_TABLES = 3
_FORMAT_CURRENT_KEYS_ONLY = 2
_FORMAT_WITHOUT_FINGERPRINTS = 1

# (value, create_revision, mod_revision, version): the per-key record.
Record = tuple[bytes, int, int, int]
# (revision, sub, key, value or None for a tombstone, create_revision, version)
HistoryRecord = tuple[int, int, str, bytes | None, int, int]
IdemEntry = tuple[str, bytes | None, dict[str, Any] | None]
# side table name -> its items in key order
Tables = dict[str, list[tuple[bytes, bytes]]]


@dataclass(frozen=True)
class SnapshotContents:
    revision: int
    compact_revision: int
    history: list[HistoryRecord]  # in (revision, sub) order
    # (idempotency key, request fingerprint or None, result or None), oldest first
    idempotency: list[IdemEntry]
    tables: Tables = field(default_factory=dict)


def encode(
    revision: int,
    compact_revision: int,
    history: Iterable[HistoryRecord],
    idempotency: Iterable[IdemEntry],
    tables: dict[str, Iterable[tuple[bytes, bytes]]] | None = None,
) -> bytes:
    flat_history: list[Any] = []
    for record in history:
        flat_history += record
    flat_idempotency: list[Any] = []
    for idem, fingerprint, result in idempotency:
        flat_idempotency += (idem, fingerprint, result)
    packer = msgpack.Packer(use_bin_type=True)
    parts = [packer.pack_array_header(6), packer.pack(FORMAT_VERSION), packer.pack(revision), packer.pack(compact_revision)]
    parts += _packed_array(packer, flat_history)
    parts += _packed_array(packer, flat_idempotency)
    named = sorted((tables or {}).items())
    parts.append(packer.pack_map_header(len(named)))
    for name, items in named:
        flat_items: list[Any] = []
        for key, value in items:
            flat_items += (key, value)
        parts.append(packer.pack(name))
        parts += _packed_array(packer, flat_items)
    return b"".join(parts)


# Elements packed per call: the snapshot is encoded on a worker thread, and
# one packb of a million-element list would hold the GIL (and so stall the
# event loop) for the whole call.
_PACK_CHUNK = 6_000


def _packed_array(packer: msgpack.Packer, items: list[Any]) -> list[bytes]:
    """``packer.pack(items)`` in pieces (the same bytes)."""
    parts = [packer.pack_array_header(len(items))]
    for i in range(0, len(items), _PACK_CHUNK):
        chunk = items[i : i + _PACK_CHUNK]
        packed = packer.pack(chunk)
        parts.append(packed[len(packer.pack_array_header(len(chunk))) :])
    return parts


def decode(data: bytes) -> SnapshotContents:
    """Parse and check a snapshot; raises ValueError saying what is wrong."""
    try:
        top = msgpack.unpackb(data, raw=False)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise ValueError(f"snapshot is not valid msgpack: {exc}") from None
    if type(top) is not list or not top:
        raise ValueError("snapshot must be a msgpack array starting with the format version")
    version = top[0]
    readable = (FORMAT_VERSION, _FORMAT_WITHOUT_TABLES, _FORMAT_CURRENT_KEYS_ONLY, _FORMAT_WITHOUT_FINGERPRINTS)
    if type(version) is not int or version not in readable:
        raise ValueError(
            f"unsupported snapshot format {version!r} "
            f"(this build reads {', '.join(str(v) for v in sorted(readable))})"
        )
    fields = {FORMAT_VERSION: 6, _FORMAT_WITHOUT_TABLES: 5}.get(version, 4)
    if len(top) != fields:
        raise ValueError(f"snapshot format {version} has {fields} fields, got {len(top)}")
    tables: Tables = {}
    if version == FORMAT_VERSION:
        tables = _checked_tables(top.pop())
    revision = top[1]
    if type(revision) is not int or revision < 0:
        raise ValueError(f"snapshot revision must be a non-negative integer, got {revision!r}")
    width = 2 if version == _FORMAT_WITHOUT_FINGERPRINTS else 3
    flat_idempotency = top[-1]
    if type(flat_idempotency) is not list or len(flat_idempotency) % width:
        raise ValueError(f"snapshot idempotency table must be a flat list of {width}-field entries")
    idempotency = list(_checked_idempotency(flat_idempotency, width))
    if version in (FORMAT_VERSION, _FORMAT_WITHOUT_TABLES):
        compact_revision, flat_history = top[2], top[3]
        if type(compact_revision) is not int or not 0 <= compact_revision <= revision:
            raise ValueError(
                f"snapshot compact revision must be an integer from 0 to the revision, got {compact_revision!r}"
            )
        if type(flat_history) is not list or len(flat_history) % 6:
            raise ValueError("snapshot history must be a flat list of 6-field records")
        history = list(_checked_history(flat_history, revision))
        return SnapshotContents(revision, compact_revision, history, idempotency, tables)
    flat_records = top[2]
    if type(flat_records) is not list or len(flat_records) % 5:
        raise ValueError("snapshot records must be a flat list of 5-field records")
    records = list(_checked_records(flat_records, revision))
    # The current keys only: each one's last write is its history, in
    # revision order (keys written by one txn share a revision: key order).
    history = sorted(
        (mod_revision, key, value, create_revision, version)
        for key, (value, create_revision, mod_revision, version) in records
    )
    subs: list[HistoryRecord] = []
    for i, (mod_revision, key, value, create_revision, version) in enumerate(history):
        sub = subs[-1][1] + 1 if i and subs[-1][0] == mod_revision else 0
        subs.append((mod_revision, sub, key, value, create_revision, version))
    return SnapshotContents(revision, revision, subs, idempotency)


def _checked_history(flat: list[Any], revision: int) -> Iterator[HistoryRecord]:
    previous = (0, -1)
    for i in range(0, len(flat), 6):
        rev, sub, key, value, create_revision, version = flat[i : i + 6]
        where = f"snapshot history record {i // 6}"
        if type(rev) is not int or type(sub) is not int or not (1 <= rev <= revision and 0 <= sub < 1 << 32):
            raise ValueError(f"{where}: revision must be from 1 to {revision} and sub from 0 to 2**32-1")
        if (rev, sub) <= previous:
            raise ValueError(f"{where}: revisions are not in strictly increasing order")
        if type(key) is not str or not key:
            raise ValueError(f"{where}: key must be a non-empty string")
        if value is None:
            if create_revision != 0 or version != 0:
                raise ValueError(f"{where}: a tombstone has create_revision and version 0")
        elif not (
            type(value) is bytes
            and type(create_revision) is int
            and type(version) is int
            and 1 <= create_revision <= rev
            and version >= 1
        ):
            raise ValueError(f"{where}: inconsistent value/revisions/version")
        previous = (rev, sub)
        yield rev, sub, key, value, create_revision, version


def _checked_records(flat: list[Any], revision: int) -> Iterator[tuple[str, Record]]:
    previous_key: str | None = None
    for i in range(0, len(flat), 5):
        key, value, create_revision, mod_revision, version = flat[i : i + 5]
        if type(key) is not str or not key:
            raise ValueError(f"snapshot record {i // 5}: key must be a non-empty string")
        if previous_key is not None and key <= previous_key:
            raise ValueError(f"snapshot record {i // 5}: keys are not in strictly increasing order")
        if type(value) is not bytes:
            raise ValueError(f"snapshot record {i // 5}: value must be bytes")
        if not (
            type(create_revision) is int
            and type(mod_revision) is int
            and type(version) is int
            and 1 <= create_revision <= mod_revision <= revision
            and version >= 1
        ):
            raise ValueError(f"snapshot record {i // 5}: inconsistent revisions/version")
        previous_key = key
        yield key, (value, create_revision, mod_revision, version)


def _checked_idempotency(
    flat: list[Any], width: int
) -> Iterator[tuple[str, bytes | None, dict[str, Any] | None]]:
    seen: set[str] = set()
    for i in range(0, len(flat), width):
        if width == 2:  # format 1: no fingerprints were kept
            idem, fingerprint, result = flat[i], None, flat[i + 1]
            fingerprint_ok = True
        else:
            idem, fingerprint, result = flat[i : i + 3]
            fingerprint_ok = type(fingerprint) is bytes and len(fingerprint) == FINGERPRINT_BYTES
        if type(idem) is not str or not fingerprint_ok or not (result is None or type(result) is dict):
            raise ValueError(
                f"snapshot idempotency entry {i // width}: must be a string key, "
                f"a {FINGERPRINT_BYTES}-byte fingerprint and a result map or nil"
            )
        if idem in seen:
            raise ValueError(f"snapshot idempotency entry {i // width}: duplicate key {idem!r}")
        seen.add(idem)
        yield idem, fingerprint, result


def _checked_tables(raw: Any) -> Tables:
    from raftkv.kv.store import EXTRA_TABLES

    if type(raw) is not dict:
        raise ValueError("snapshot side tables must be a map from table name to a flat item list")
    tables: Tables = {}
    for name, flat in raw.items():
        if name not in EXTRA_TABLES:
            raise ValueError(f"snapshot side table {name!r} is unknown (this build knows {', '.join(EXTRA_TABLES)})")
        if type(flat) is not list or len(flat) % 2:
            raise ValueError(f"snapshot side table {name!r} must be a flat [key, value, ...] list")
        items: list[tuple[bytes, bytes]] = []
        for i in range(0, len(flat), 2):
            key, value = flat[i], flat[i + 1]
            if type(key) is not bytes or type(value) is not bytes or not key:
                raise ValueError(f"snapshot side table {name!r} item {i // 2}: key and value must be bytes")
            if items and key <= items[-1][0]:
                raise ValueError(f"snapshot side table {name!r} item {i // 2}: keys are not in increasing order")
            items.append((key, value))
        tables[name] = items
    return tables
