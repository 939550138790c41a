"""Byte format of a state machine snapshot.

``msgpack([FORMAT_VERSION, revision, records, idempotency])`` where
``records`` is one flat list ``[key, value, create_revision, mod_revision,
version, key, ...]`` in key order (flat because it packs and unpacks several
times faster than a list of lists), and ``idempotency`` is
``[idem_key, result, ...]`` oldest first. The same state always produces the
same bytes, so replicas can be compared byte for byte.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import msgpack

FORMAT_VERSION = 1

# (value, create_revision, mod_revision, version): the per-key record.
Record = tuple[bytes, int, int, int]


@dataclass(frozen=True)
class SnapshotContents:
    revision: int
    records: list[tuple[str, Record]]
    idempotency: list[tuple[str, dict[str, Any]]]


def encode(
    revision: int,
    records: Iterable[tuple[str, Record]],
    idempotency: Iterable[tuple[str, dict[str, Any]]],
) -> bytes:
    flat_records: list[Any] = []
    for key, (value, create_revision, mod_revision, version) in records:
        flat_records += (key, value, create_revision, mod_revision, version)
    flat_idempotency: list[Any] = []
    for idem, result in idempotency:
        flat_idempotency += (idem, result)
    return msgpack.packb(
        [FORMAT_VERSION, revision, flat_records, flat_idempotency], use_bin_type=True
    )


def decode(data: bytes) -> SnapshotContents:
    """Parse and check a snapshot; raises ValueError saying what is wrong."""
    try:
        top = msgpack.unpackb(data, raw=False)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise ValueError(f"snapshot is not valid msgpack: {exc}") from None
    if type(top) is not list or not top:
        raise ValueError("snapshot must be a msgpack array starting with the format version")
    if top[0] != FORMAT_VERSION or type(top[0]) is not int:
        raise ValueError(f"unsupported snapshot format {top[0]!r} (this build reads {FORMAT_VERSION})")
    if len(top) != 4:
        raise ValueError(f"snapshot format {FORMAT_VERSION} has 4 fields, got {len(top)}")
    _, revision, flat_records, flat_idempotency = top
    if type(revision) is not int or revision < 0:
        raise ValueError(f"snapshot revision must be a non-negative integer, got {revision!r}")
    if type(flat_records) is not list or len(flat_records) % 5:
        raise ValueError("snapshot records must be a flat list of 5-field records")
    if type(flat_idempotency) is not list or len(flat_idempotency) % 2:
        raise ValueError("snapshot idempotency table must be a flat list of key/result pairs")
    return SnapshotContents(
        revision,
        list(_checked_records(flat_records, revision)),
        list(_checked_idempotency(flat_idempotency)),
    )


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


def _checked_idempotency(flat: list[Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    seen: set[str] = set()
    for i in range(0, len(flat), 2):
        idem, result = flat[i], flat[i + 1]
        if type(idem) is not str or type(result) is not dict:
            raise ValueError(f"snapshot idempotency entry {i // 2}: must be a string key and a result map")
        if idem in seen:
            raise ValueError(f"snapshot idempotency entry {i // 2}: duplicate key {idem!r}")
        seen.add(idem)
        yield idem, result
