"""Builders for POST /v1/txn compares and ops.

They validate what can be checked without the server (operator names,
types) so a typo fails at the call site with a clear message instead of as a
400 after a network round trip.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from raftkv.client.leases import lease_id_text
from raftkv.client.values import check_key, encode_value, to_bytes

COMPARE_OPERATORS = ("==", "!=", "<", "<=", ">", ">=")
COMPARE_TARGETS = ("value", "version", "create_revision", "mod_revision", "number")


def _check_cmp(cmp: str) -> str:
    if cmp not in COMPARE_OPERATORS:
        raise ValueError(f"cmp must be one of {', '.join(COMPARE_OPERATORS)}; got {cmp!r}")
    return cmp


def _check_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    return value


@dataclass(frozen=True)
class Compare:
    """One condition of a txn; build with the class methods."""

    key: str
    target: str
    cmp: str
    operand: int | bytes

    def __post_init__(self) -> None:
        check_key(self.key)
        _check_cmp(self.cmp)
        if self.target not in COMPARE_TARGETS:
            raise ValueError(f"target must be one of {', '.join(COMPARE_TARGETS)}; got {self.target!r}")
        if self.target == "value":
            if not isinstance(self.operand, bytes):
                raise TypeError("a value compare needs bytes (use Compare.value)")
        else:
            _check_int(f"{self.target} compare operand", self.operand)

    @classmethod
    def value(cls, key: str, cmp: str, value: bytes | str) -> Compare:
        """Compare the key's value bytes (lexicographically for < and >)."""
        return cls(key, "value", cmp, to_bytes(value))

    @classmethod
    def version(cls, key: str, cmp: str, version: int) -> Compare:
        return cls(key, "version", cmp, _check_int("version", version))

    @classmethod
    def create_revision(cls, key: str, cmp: str, revision: int) -> Compare:
        return cls(key, "create_revision", cmp, _check_int("revision", revision))

    @classmethod
    def mod_revision(cls, key: str, cmp: str, revision: int) -> Compare:
        return cls(key, "mod_revision", cmp, _check_int("revision", revision))

    @classmethod
    def number(cls, key: str, cmp: str, number: int) -> Compare:
        """Compare the value parsed as a decimal integer; never holds when the
        key is absent or its value is not an integer."""
        return cls(key, "number", cmp, _check_int("number", number))

    @classmethod
    def absent(cls, key: str) -> Compare:
        """True when the key does not exist (its version is 0)."""
        return cls.version(key, "==", 0)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"key": self.key, "target": self.target, "cmp": self.cmp}
        if isinstance(self.operand, bytes):
            out.update(encode_value(self.operand))
        else:
            out["value"] = self.operand
        return out



@dataclass(frozen=True)
class Op:
    """One operation of a txn branch; build with the class methods."""

    body: Mapping[str, Any]

    @classmethod
    def get(cls, key: str) -> Op:
        return cls({"op": "get", "key": check_key(key)})

    @classmethod
    def put(cls, key: str, value: bytes | str, lease: str | int | None = None) -> Op:
        """``lease``: attach the key to that lease (docs/leases.md)."""
        body: dict[str, Any] = {"op": "put", "key": check_key(key), **encode_value(to_bytes(value))}
        if lease is not None:
            body["lease"] = lease_id_text(lease)
        return cls(body)

    @classmethod
    def delete(cls, key: str) -> Op:
        return cls({"op": "delete", "key": check_key(key)})

    @classmethod
    def delete_prefix(cls, prefix: str) -> Op:
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be str, not {type(prefix).__name__}")
        return cls({"op": "delete_prefix", "prefix": prefix})

    @classmethod
    def add(cls, key: str, delta: int) -> Op:
        """Add a signed integer to the key's decimal integer value (absent = 0)."""
        return cls({"op": "add", "key": check_key(key), "delta": _check_int("delta", delta)})

    def to_json(self) -> dict[str, Any]:
        return dict(self.body)


def txn_body(
    compare: list[Compare | Mapping[str, Any]],
    success: list[Op | Mapping[str, Any]],
    failure: list[Op | Mapping[str, Any]],
) -> dict[str, Any]:
    """The JSON body of POST /v1/txn. Raw dicts pass through unchanged so
    callers holding a ready-made body (the CLI) need not rebuild it."""

    def as_json(item: Any, what: str) -> dict[str, Any]:
        if isinstance(item, (Compare, Op)):
            return item.to_json()
        if isinstance(item, Mapping):
            return dict(item)
        raise TypeError(f"each {what} must be a {'Compare' if what == 'compare' else 'Op'} or a dict")

    return {
        "compare": [as_json(c, "compare") for c in compare],
        "success": [as_json(o, "op") for o in success],
        "failure": [as_json(o, "op") for o in failure],
    }
