"""Where members are: peer addresses that travel with the log and snapshots.

The Raft core knows members by id only (its configuration). Their peer
addresses come from three places, later ones overriding earlier ones:

1. ``--peers`` (or the join record of a node that joined): the members the
   node was started with;
2. the ``members`` side table of the state machine's store: every committed
   ``ADD_LEARNER`` writes the new member's address there and every
   ``REMOVE`` deletes it, in the same write transaction as the applied
   index. Side tables travel byte for byte in snapshots, so a node that
   installs a snapshot (a new member catching up, a laggard) learns the
   addresses of members added before the snapshot's index;
3. the membership-change entries in the log, as soon as they are appended,
   since the core adopts a change when it is appended (docs/raft-core.md):
   the leader starts replicating to a new learner before the change commits.

A node that joined also keeps a *join record* (``join.json`` in its data
dir): the configuration and addresses it was given when it was added. It
is the base its log is replayed on, as ``--peers`` is for a founding member
(see docs/operations.md, "How a joining node starts").
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from raftkv.raft.conf import decode_conf_change
from raftkv.raft.types import ConfChange, ConfChangeKind, Entry, EntryKind, InvalidConfChange

MEMBERS_TABLE = "members"
JOIN_RECORD_FILE = "join.json"


def encode_member_context(peer_addr: str) -> bytes:
    """The ``ConfChange.context`` of an ``ADD_LEARNER``: the new member's address."""
    return msgpack.packb({"peer_addr": peer_addr})


def peer_addr_of(change: ConfChange) -> str | None:
    """The address an ``ADD_LEARNER`` carries (None: none, or not readable)."""
    if change.kind != ConfChangeKind.ADD_LEARNER or not change.context:
        return None
    try:
        context = msgpack.unpackb(change.context)
    except (ValueError, msgpack.UnpackException):
        return None
    addr = context.get("peer_addr") if isinstance(context, dict) else None
    return addr if isinstance(addr, str) and addr else None


def conf_changes(entries: Iterable[Entry]) -> list[ConfChange]:
    """The decodable membership changes among ``entries``, in log order."""
    changes = []
    for entry in entries:
        if entry.kind != EntryKind.CONF_CHANGE:
            continue
        try:
            changes.append(decode_conf_change(entry.data))
        except InvalidConfChange:
            continue  # the core skips it too
    return changes


def learn_addresses(addresses: dict[str, str], changes: Iterable[ConfChange]) -> bool:
    """Fold the addresses ``changes`` carry into ``addresses``; True if any changed.

    A removal does not forget the address: the core's configuration says
    who is a member, and a removed node's link is closed because it is no
    longer in it, not because its address is unknown."""
    changed = False
    for change in changes:
        addr = peer_addr_of(change)
        if addr is not None and addresses.get(change.node_id) != addr:
            addresses[change.node_id] = addr
            changed = True
    return changed


def record_committed_change(txn: Any, entry: Entry) -> None:
    """Keep the ``members`` side table in step with a committed change
    (``txn`` is the state machine's open batch)."""
    try:
        change = decode_conf_change(entry.data)
    except InvalidConfChange:
        return
    key = change.node_id.encode()
    if change.kind == ConfChangeKind.ADD_LEARNER:
        addr = peer_addr_of(change)
        if addr is not None:
            txn.put(MEMBERS_TABLE, key, addr.encode())
    elif change.kind == ConfChangeKind.REMOVE:
        txn.delete(MEMBERS_TABLE, key)


def stored_addresses(store: Any) -> dict[str, str]:
    """The addresses in the store's ``members`` side table."""
    txn = store.read()
    try:
        return {k.decode(): v.decode() for k, v in txn.scan(MEMBERS_TABLE)}
    finally:
        txn.close()


@dataclass(frozen=True)
class JoinRecord:
    """What a joining node was told when the cluster added it as a learner."""

    cluster_id: str
    voters: tuple[str, ...]
    learners: tuple[str, ...]
    peers: dict[str, str]  # every member's peer address, this node's included

    def to_json(self) -> dict[str, Any]:
        return {
            "cluster_id": self.cluster_id,
            "voters": list(self.voters),
            "learners": list(self.learners),
            "peers": dict(self.peers),
        }


def load_join_record(data_dir: Path) -> JoinRecord | None:
    path = data_dir / JOIN_RECORD_FILE
    try:
        raw = json.loads(path.read_text())
        return JoinRecord(
            cluster_id=str(raw["cluster_id"]),
            voters=tuple(str(v) for v in raw["voters"]),
            learners=tuple(str(v) for v in raw["learners"]),
            peers={str(k): str(v) for k, v in raw["peers"].items()},
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path} is not a usable join record: {exc!r}") from None


def save_join_record(data_dir: Path, record: JoinRecord) -> None:
    """Write the record durably (temp file, fsync, rename, fsync the dir)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / JOIN_RECORD_FILE
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        json.dump(record.to_json(), f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(data_dir, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
