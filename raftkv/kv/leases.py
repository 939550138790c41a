"""Leases in the replicated state: what a lease is, which keys it holds,
and the logged commands that grant, renew, revoke and expire it.

Pure logic, like the rest of raftkv/kv: no clock. When a lease runs out is
decided by the leader (raftkv/server/lease_keeper.py) with its monotonic
clock, which then proposes ``lease_expire``; this module only applies what
the log says. docs/leases.md argues the design.

Layout of the ``lease`` side table (raftkv.kv.store.EXTRA_TABLES; snapshots
carry it byte for byte):

* ``b"l" + id(8)`` -> ``[ttl, stamp]``: a live lease. ``stamp`` names its
  last grant or renewal (see ``b"s"``).
* ``b"k" + id(8) + latest_key(key)`` -> the key (UTF-8): the keys attached
  to a lease, so revoke and expiry find them without a scan of the key space.
* ``b"K" + latest_key(key)`` -> ``id(8)``: the lease a key is attached to,
  so a put or delete of the key without the lease detaches it, and reads
  show it. Kept here rather than in the key's ``latest`` record so the
  record format (and the snapshot's history) stays as it was.
* ``b"s"`` -> ``stamp(8)``: a counter bumped by every grant and renewal.
  ``lease_expire`` carries the stamp the leader saw when it set the
  deadline it found passed: a renewal committed before the expiry changed
  the stamp, so the expiry is refused and the renewed lease lives on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from raftkv.kv import commands
from raftkv.kv.commands import Command, InvalidCommand
from raftkv.kv.mvcc import latest_key, pack, unpack
from raftkv.kv.store import ReadTxn, WriteTxn

TABLE = "lease"
# etcd's MaxLeaseTTL: long enough for anything, small enough for any clock.
MAX_TTL = 9_000_000_000
MAX_ID = (1 << 63) - 1

_LEASE = b"l"
_KEY_OF_LEASE = b"k"
_LEASE_OF_KEY = b"K"
_STAMP = b"s"
_LEASE_AFTER = b"m"  # the first table key above every b"l" item

Result = dict[str, Any]
# (lease id, ttl seconds, stamp) of a grant or renewal; (id, 0, 0) a removal.
LeaseEvent = tuple[int, int, int]
LeaseListener = Callable[[LeaseEvent], None]


def _id_bytes(lease_id: int) -> bytes:
    return lease_id.to_bytes(8, "big")


def format_id(lease_id: int) -> str:
    """How leases are named outside: 16 lowercase hex digits (as etcd prints them)."""
    return f"{lease_id:016x}"


def parse_id(text: str) -> int | None:
    """The lease id ``text`` names (1 to 16 hex digits, not 0), or None."""
    if not 1 <= len(text) <= 16 or any(c not in "0123456789abcdefABCDEF" for c in text):
        return None
    lease_id = int(text, 16)
    return lease_id if 0 < lease_id <= MAX_ID else None


# ---- reads ---------------------------------------------------------------


def lease_record(txn: ReadTxn, lease_id: int) -> tuple[int, int] | None:
    """(ttl, stamp) of a live lease, or None."""
    data = txn.get(TABLE, _LEASE + _id_bytes(lease_id))
    if data is None:
        return None
    ttl, stamp = unpack(data)
    return ttl, stamp


def all_leases(txn: ReadTxn) -> Iterator[tuple[int, int, int]]:
    """(id, ttl, stamp) of every live lease, in id order."""
    for table_key, data in txn.scan(TABLE, _LEASE, _LEASE_AFTER):
        ttl, stamp = unpack(data)
        yield int.from_bytes(table_key[1:9], "big"), ttl, stamp


def keys_of(txn: ReadTxn, lease_id: int) -> list[str]:
    """The keys attached to a lease, in table order (the same on every replica)."""
    start = _KEY_OF_LEASE + _id_bytes(lease_id)
    stop = _KEY_OF_LEASE + _id_bytes(lease_id + 1) if lease_id < MAX_ID else _KEY_OF_LEASE + b"\xff" * 9
    return [key.decode() for _, key in txn.scan(TABLE, start, stop)]


def lease_of(txn: ReadTxn, key: str) -> int:
    """The lease ``key`` is attached to (0: none)."""
    if not txn.count(TABLE):  # the common case, one O(1) look
        return 0
    data = txn.get(TABLE, _LEASE_OF_KEY + latest_key(key.encode()))
    return 0 if data is None else int.from_bytes(data, "big")


# ---- writes ----------------------------------------------------------------


def set_key_lease(txn: WriteTxn, key: str, lease_id: int) -> None:
    """Attach ``key`` to ``lease_id`` (0: to none), detaching it from any
    other: every write of a key calls this, deletes with 0."""
    if not lease_id and not txn.count(TABLE):
        return
    encoded = key.encode()
    bounded = latest_key(encoded)
    data = txn.get(TABLE, _LEASE_OF_KEY + bounded)
    old = 0 if data is None else int.from_bytes(data, "big")
    if old == lease_id:
        return
    if old:
        txn.delete(TABLE, _KEY_OF_LEASE + _id_bytes(old) + bounded)
    if lease_id:
        txn.put(TABLE, _LEASE_OF_KEY + bounded, _id_bytes(lease_id))
        txn.put(TABLE, _KEY_OF_LEASE + _id_bytes(lease_id) + bounded, encoded)
    else:
        txn.delete(TABLE, _LEASE_OF_KEY + bounded)


def _next_stamp(txn: WriteTxn) -> int:
    data = txn.get(TABLE, _STAMP)
    stamp = (0 if data is None else int.from_bytes(data, "big")) + 1
    txn.put(TABLE, _STAMP, stamp.to_bytes(8, "big"))
    return stamp


def require_lease_id(command: Command, field: str = "id") -> int:
    lease_id = commands.require_int(command, field)
    if not 0 < lease_id <= MAX_ID:
        raise InvalidCommand(f"{field!r} must be a lease id from 1 to 2**63-1, got {lease_id}")
    return lease_id


def not_found(lease_id: int, revision: int) -> Result:
    return {
        "ok": False,
        "revision": revision,
        "error": {
            "code": "lease_not_found",
            "message": f"lease {format_id(lease_id)} does not exist (it expired, was revoked or never existed)",
        },
    }


class LeaseCommands:
    """The lease commands, applied by KVStateMachine inside its batch.

    ``txn`` gives the open write transaction; ``delete_keys(keys)`` deletes
    existing keys at one new revision and returns the revision after it;
    ``revision()`` the current revision. Listeners hear of every grant,
    renewal and removal as it is applied (the leader's keeper sets
    deadlines from them); they must be quick and must not raise.
    """

    def __init__(
        self,
        txn: Callable[[], WriteTxn],
        delete_keys: Callable[[list[str]], int],
        revision: Callable[[], int],
    ) -> None:
        self._txn = txn
        self._delete_keys = delete_keys
        self._revision = revision
        self._listeners: list[LeaseListener] = []

    def add_listener(self, listener: LeaseListener) -> None:
        self._listeners.append(listener)

    def _tell(self, event: LeaseEvent) -> None:
        for listener in self._listeners:
            listener(event)

    def handlers(self) -> dict[str, Callable[[Command], Result]]:
        return {
            "lease_grant": self.grant,
            "lease_keepalive": self.keepalive,
            "lease_revoke": self.revoke,
            "lease_expire": self.expire,
        }

    def grant(self, command: Command) -> Result:
        lease_id = require_lease_id(command)
        ttl = commands.require_int(command, "ttl")
        if not 1 <= ttl <= MAX_TTL:
            raise InvalidCommand(f"'ttl' must be from 1 to {MAX_TTL} seconds, got {ttl}")
        txn = self._txn()
        if lease_record(txn, lease_id) is not None:
            return {
                "ok": False,
                "revision": self._revision(),
                "error": {"code": "lease_exists", "message": f"lease {format_id(lease_id)} already exists"},
            }
        stamp = _next_stamp(txn)
        txn.put(TABLE, _LEASE + _id_bytes(lease_id), pack([ttl, stamp]))
        self._tell((lease_id, ttl, stamp))
        return {"ok": True, "revision": self._revision(), "id": lease_id, "ttl": ttl}

    def keepalive(self, command: Command) -> Result:
        lease_id = require_lease_id(command)
        txn = self._txn()
        found = lease_record(txn, lease_id)
        if found is None:
            return not_found(lease_id, self._revision())
        ttl = found[0]
        stamp = _next_stamp(txn)
        txn.put(TABLE, _LEASE + _id_bytes(lease_id), pack([ttl, stamp]))
        self._tell((lease_id, ttl, stamp))
        return {"ok": True, "revision": self._revision(), "id": lease_id, "ttl": ttl}

    def revoke(self, command: Command) -> Result:
        lease_id = require_lease_id(command)
        if lease_record(self._txn(), lease_id) is None:
            return not_found(lease_id, self._revision())
        deleted = self._remove(lease_id)
        return {"ok": True, "revision": self._revision(), "id": lease_id, "deleted": deleted}

    def expire(self, command: Command) -> Result:
        """Expire a lease unless it was renewed after the leader's decision."""
        lease_id = require_lease_id(command)
        stamp = commands.require_int(command, "stamp")
        found = lease_record(self._txn(), lease_id)
        if found is None:
            return {"ok": True, "revision": self._revision(), "id": lease_id, "expired": False}
        if found[1] != stamp:
            # Renewed (or granted anew) since the deadline the leader saw.
            return {"ok": True, "revision": self._revision(), "id": lease_id, "expired": False}
        deleted = self._remove(lease_id)
        return {"ok": True, "revision": self._revision(), "id": lease_id, "expired": True, "deleted": deleted}

    def _remove(self, lease_id: int) -> int:
        """Delete the lease and all its keys (at one revision)."""
        txn = self._txn()
        keys = keys_of(txn, lease_id)
        if keys:
            self._delete_keys(keys)  # detaches each key as it deletes it
        txn.delete(TABLE, _LEASE + _id_bytes(lease_id))
        self._tell((lease_id, 0, 0))
        return len(keys)


def grant(lease_id: int, ttl: int) -> Command:
    return {"op": "lease_grant", "id": lease_id, "ttl": ttl}


def keepalive(lease_id: int) -> Command:
    return {"op": "lease_keepalive", "id": lease_id}


def revoke(lease_id: int) -> Command:
    return {"op": "lease_revoke", "id": lease_id}


def expire(lease_id: int, stamp: int) -> Command:
    return {"op": "lease_expire", "id": lease_id, "stamp": stamp}


LEASE_OPS = frozenset({"lease_grant", "lease_keepalive", "lease_revoke", "lease_expire"})
