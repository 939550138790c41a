"""Commands replicated through the Raft log, and their wire format.

A command is a plain dict (see docs/state-machine.md); on the log it is
msgpack with ``use_bin_type=True`` so keys stay ``str`` and values stay
``bytes`` after a round trip.

The checks here run on every replica for every committed entry, so they are
deliberately limited to structure and types: anything that depends on node
configuration (size limits) is checked by the server before proposing.
Unknown fields are ignored rather than rejected, so a field added by a newer
release does not make older replicas disagree about whether an entry applies.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgpack

from raftkv.kv import packing

WRITE_OPS = frozenset(
    {"put", "delete", "delete_prefix", "txn", "noop", "compact"}
    | {"lease_grant", "lease_keepalive", "lease_revoke", "lease_expire"}  # raftkv/kv/leases.py
)
TXN_OPS = frozenset({"get", "put", "delete", "delete_prefix", "add"})
COMPARE_TARGETS = frozenset({"value", "version", "create_revision", "mod_revision", "number"})
COMPARE_OPERATORS = frozenset({"==", "!=", "<", "<=", ">", ">="})
# Users, roles and the auth switch: applied by raftkv/kv/auth_state.py.
AUTH_OPS = frozenset(
    {"auth_enable", "auth_disable", "user_add", "user_delete", "user_passwd", "user_grant", "user_revoke"}
    | {"role_add", "role_delete", "role_grant", "role_revoke"}
)
WRITE_OPS = WRITE_OPS | AUTH_OPS

Command = dict[str, Any]


class InvalidCommand(ValueError):
    """A command that cannot be applied because it is malformed."""


def encode(command: Command) -> bytes:
    return packing.pack(command)


def decode(data: bytes) -> Command:
    """The command ``data`` holds; raises InvalidCommand for anything else."""
    try:
        command = msgpack.unpackb(data, raw=False)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise InvalidCommand(f"command is not valid msgpack: {exc}") from None
    if type(command) is not dict:
        raise InvalidCommand(f"command must be a map, got {type(command).__name__}")
    return command


# Builders: the one place that spells each command's shape for callers.


def put(key: str, value: bytes, idem: str | None = None, lease: int = 0) -> Command:
    """``lease``: attach the key to that lease (0: none; see raftkv/kv/leases.py)."""
    command: Command = {"op": "put", "key": key, "value": value}
    if lease:
        command["lease"] = lease
    return _with_idem(command, idem)


def delete(key: str, idem: str | None = None) -> Command:
    return _with_idem({"op": "delete", "key": key}, idem)


def delete_prefix(prefix: str, idem: str | None = None) -> Command:
    return _with_idem({"op": "delete_prefix", "prefix": prefix}, idem)


def txn(
    compare: list[dict[str, Any]],
    success: list[dict[str, Any]],
    failure: list[dict[str, Any]],
    idem: str | None = None,
) -> Command:
    return _with_idem({"op": "txn", "compare": compare, "success": success, "failure": failure}, idem)


def noop() -> Command:
    return {"op": "noop"}


def compact(revision: int) -> Command:
    """Forget history below ``revision`` (each key keeps its write as of it)."""
    return {"op": "compact", "revision": revision}


def txn_get(key: str) -> dict[str, Any]:
    return {"op": "get", "key": key}


def txn_put(key: str, value: bytes, lease: int = 0) -> dict[str, Any]:
    op: dict[str, Any] = {"op": "put", "key": key, "value": value}
    if lease:
        op["lease"] = lease
    return op


def txn_delete(key: str) -> dict[str, Any]:
    return {"op": "delete", "key": key}


def txn_delete_prefix(prefix: str) -> dict[str, Any]:
    return {"op": "delete_prefix", "prefix": prefix}


def txn_add(key: str, delta: int) -> dict[str, Any]:
    return {"op": "add", "key": key, "delta": delta}


def compare(key: str, target: str, cmp: str, value: bytes | int) -> dict[str, Any]:
    return {"key": key, "target": target, "cmp": cmp, "value": value}


def _with_idem(command: Command, idem: str | None) -> Command:
    if idem is not None:
        command["idem"] = idem
    return command


FINGERPRINT_BYTES = 16


def fingerprint(data: bytes) -> bytes:
    """What identifies the request an idempotency key was first used for.

    A BLAKE2b digest of the whole encoded command. Two commands that carry
    the same idempotency key differ exactly when their operation or operands
    differ, so the key itself inside ``data`` changes nothing. Replicas
    compare stored fingerprints, so this must stay the same across releases.
    """
    return hashlib.blake2b(data, digest_size=FINGERPRINT_BYTES).digest()


# Checks used by the state machine before it changes anything.


def require_key(command: dict[str, Any]) -> str:
    key = command.get("key")
    if type(key) is not str:
        raise InvalidCommand(f"'key' must be a string, got {_type_name(key)}")
    if not key:
        raise InvalidCommand("'key' must not be empty")
    return key


def require_prefix(command: dict[str, Any]) -> str:
    prefix = command.get("prefix")
    if type(prefix) is not str:
        raise InvalidCommand(f"'prefix' must be a string, got {_type_name(prefix)}")
    return prefix


def require_value(command: dict[str, Any]) -> bytes:
    value = command.get("value")
    if type(value) is not bytes:
        raise InvalidCommand(f"'value' must be bytes, got {_type_name(value)}")
    return value


def require_int(command: dict[str, Any], field: str) -> int:
    number = command.get(field)
    if type(number) is not int:  # bool is an int subclass and is refused here
        raise InvalidCommand(f"{field!r} must be an integer, got {_type_name(number)}")
    return number


def check_txn(command: dict[str, Any]) -> tuple[list[Any], list[Any], list[Any]]:
    """The compare, success and failure lists of a well-formed txn.

    Every compare and op is checked before the txn starts, so a malformed op
    late in a branch cannot surface after earlier ops already wrote.
    """
    sections = []
    for name in ("compare", "success", "failure"):
        items = command.get(name, [])
        if type(items) is not list:
            raise InvalidCommand(f"{name!r} must be a list, got {_type_name(items)}")
        check = _check_compare if name == "compare" else _check_txn_op
        for i, item in enumerate(items):
            try:
                check(item)
            except InvalidCommand as exc:
                # The location is only formatted on failure: this runs for
                # every op of every txn on every replica.
                raise InvalidCommand(f"{name}[{i}]: {exc}") from None
        sections.append(items)
    return sections[0], sections[1], sections[2]


def _check_compare(item: Any) -> None:
    if type(item) is not dict:
        raise InvalidCommand(f"a compare must be a map, got {_type_name(item)}")
    require_key(item)
    target = item.get("target")
    if type(target) is not str or target not in COMPARE_TARGETS:
        raise InvalidCommand(f"unknown compare target {target!r}")
    cmp = item.get("cmp")
    if type(cmp) is not str or cmp not in COMPARE_OPERATORS:
        raise InvalidCommand(f"unknown compare operator {cmp!r}")
    if target == "value":
        require_value(item)
    else:
        require_int(item, "value")


def _check_txn_op(item: Any) -> None:
    if type(item) is not dict:
        raise InvalidCommand(f"a txn op must be a map, got {_type_name(item)}")
    op = item.get("op")
    if type(op) is not str or op not in TXN_OPS:
        raise InvalidCommand(f"unknown txn op {op!r}")
    if op == "delete_prefix":
        require_prefix(item)
        return
    require_key(item)
    if op == "put":
        require_value(item)
        if "lease" in item:
            lease = require_int(item, "lease")
            if not 0 <= lease < 1 << 63:
                raise InvalidCommand(f"'lease' must be a lease id from 1 to 2**63-1 (or 0), got {lease}")
    elif op == "add":
        require_int(item, "delta")


def _type_name(value: Any) -> str:
    return "nothing (missing or nil)" if value is None else type(value).__name__
