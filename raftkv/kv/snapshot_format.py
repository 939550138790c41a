"""Byte format of a state machine snapshot.

``msgpack([FORMAT_VERSION, revision, records, idempotency])`` where
``records`` is one flat list ``[key, value, create_revision, mod_revision,
version, key, ...]`` in key order (flat because it packs and unpacks several
times faster than a list of lists), and ``idempotency`` is
``[idem_key, fingerprint, result, ...]`` oldest first (``result`` nil when
the byte bound dropped it). The same state always produces the same bytes,
so replicas can be compared byte for byte.

Format 1 (``[idem_key, result, ...]``, no fingerprints) is still read: its
keys come back with no fingerprint, so a retry with one is refused rather
than matched blindly.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import msgpack

from raftkv.kv.commands import FINGERPRINT_BYTES

FORMAT_VERSION = 2
_FORMAT_WITHOUT_FINGERPRINTS = 1

# (value, create_revision, mod_revision, version): the per-key record.
Record = tuple[bytes, int, int, int]


@dataclass(frozen=True)
class SnapshotContents:
    revision: int
    records: list[tuple[str, Record]]
    # (idempotency key, request fingerprint or None, result or None), oldest first
    idempotency: list[tuple[str, bytes | None, dict[str, Any] | None]]


def encode(
    revision: int,
    records: Iterable[tuple[str, Record]],
    idempotency: Iterable[tuple[str, bytes | None, dict[str, Any] | None]],
) -> bytes:
    flat_records: list[Any] = []
    for key, (value, create_revision, mod_revision, version) in records:
        flat_records += (key, value, create_revision, mod_revision, version)
    flat_idempotency: list[Any] = []
    for idem, fingerprint, result in idempotency:
        flat_idempotency += (idem, fingerprint, result)
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
    version = top[0]
    if type(version) is not int or version not in (FORMAT_VERSION, _FORMAT_WITHOUT_FINGERPRINTS):
        raise ValueError(
            f"unsupported snapshot format {version!r} "
            f"(this build reads {_FORMAT_WITHOUT_FINGERPRINTS} and {FORMAT_VERSION})"
        )
    if len(top) != 4:
        raise ValueError(f"snapshot format {version} has 4 fields, got {len(top)}")
    _, revision, flat_records, flat_idempotency = top
    if type(revision) is not int or revision < 0:
        raise ValueError(f"snapshot revision must be a non-negative integer, got {revision!r}")
    if type(flat_records) is not list or len(flat_records) % 5:
        raise ValueError("snapshot records must be a flat list of 5-field records")
    width = 3 if version == FORMAT_VERSION else 2
    if type(flat_idempotency) is not list or len(flat_idempotency) % width:
        raise ValueError(f"snapshot idempotency table must be a flat list of {width}-field entries")
    return SnapshotContents(
        revision,
        list(_checked_records(flat_records, revision)),
        list(_checked_idempotency(flat_idempotency, width)),
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
