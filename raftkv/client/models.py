"""Typed results and the functions that parse server responses into them.

Parsing is pure: it takes decoded JSON (or headers and body bytes) and
either returns a result or raises :class:`InvalidResponse` naming the field
that broke the contract. Unknown extra fields are ignored so newer servers
stay compatible.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from raftkv.client.errors import InvalidResponse
from raftkv.client.values import decode_value, encode_value


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: bytes | None  # None when the server was asked for keys only
    create_revision: int
    mod_revision: int
    version: int
    lease: str | None = None  # the lease the key is attached to (current reads only)

    @property
    def text(self) -> str | None:
        """The value decoded as UTF-8 (raises UnicodeDecodeError if it is not)."""
        return None if self.value is None else self.value.decode("utf-8")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"key": self.key}
        if self.value is not None:
            out.update(encode_value(self.value))
        out.update(
            create_revision=self.create_revision,
            mod_revision=self.mod_revision,
            version=self.version,
        )
        if self.lease is not None:
            out["lease"] = self.lease
        return out


@dataclass(frozen=True)
class GetResult:
    """A single key read: the key and the store revision it was read at."""

    kv: KeyValue
    revision: int


@dataclass(frozen=True)
class PutResult:
    revision: int
    kv: KeyValue
    replayed: bool = False  # True when the server replayed an earlier result

    def to_json(self) -> dict[str, Any]:
        return {"revision": self.revision, "kv": self.kv.to_json()}


@dataclass(frozen=True)
class DeleteResult:
    revision: int
    deleted: int
    replayed: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"revision": self.revision, "deleted": self.deleted}


@dataclass(frozen=True)
class ListResult:
    revision: int
    kvs: list[KeyValue]
    more: bool

    def to_json(self) -> dict[str, Any]:
        return {"revision": self.revision, "kvs": [kv.to_json() for kv in self.kvs], "more": self.more}


@dataclass(frozen=True)
class TxnOpResult:
    """One entry of a txn's results: ``kv`` for get/put/add, ``deleted`` for deletes."""

    kv: KeyValue | None = None
    deleted: int | None = None

    def to_json(self) -> dict[str, Any]:
        if self.deleted is not None:
            return {"deleted": self.deleted}
        return {"kv": None if self.kv is None else self.kv.to_json()}


@dataclass(frozen=True)
class TxnResult:
    succeeded: bool
    revision: int
    results: list[TxnOpResult]
    replayed: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "succeeded": self.succeeded,
            "revision": self.revision,
            "results": [r.to_json() for r in self.results],
        }


@dataclass(frozen=True)
class MemberInfo:
    id: str
    peer_addr: str
    voter: bool


@dataclass(frozen=True)
class NodeStatus:
    endpoint: str  # the HTTP endpoint this status came from
    node_id: str
    role: str
    term: int
    leader_id: str | None
    commit_index: int
    applied_index: int
    engine: str
    revision: int
    members: list[MemberInfo] = field(default_factory=list)
    # The space quota section of /v1/status (quota_bytes, used_bytes,
    # no_space), when the server has one.
    quota: dict[str, Any] | None = None

    @property
    def is_leader(self) -> bool:
        return self.role == "leader"


def _field(obj: Mapping[str, Any], name: str, kind: type | tuple[type, ...], where: str) -> Any:
    if name not in obj:
        raise InvalidResponse(f"{where}: missing field {name!r}")
    value = obj[name]
    # bool is an int subclass; a revision of `true` is a contract breach.
    if isinstance(value, bool) and kind is int:
        raise InvalidResponse(f"{where}: field {name!r} must be int, got {value!r}")
    if not isinstance(value, kind):
        raise InvalidResponse(f"{where}: field {name!r} has wrong type: {value!r}")
    return value


def _object(obj: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping):
        raise InvalidResponse(f"{where}: expected a JSON object, got {type(obj).__name__}")
    return obj


def parse_kv(obj: Any, value: bytes | None = None, where: str = "kv") -> KeyValue:
    """Parse a KV JSON object; ``value`` fills in when the object omits it."""
    o = _object(obj, where)
    return KeyValue(
        key=_field(o, "key", str, where),
        value=decode_value(o) if "value" in o else value,
        create_revision=_field(o, "create_revision", int, where),
        mod_revision=_field(o, "mod_revision", int, where),
        version=_field(o, "version", int, where),
        lease=o["lease"] if isinstance(o.get("lease"), str) else None,
    )


def _header_int(headers: Mapping[str, str], name: str) -> int:
    raw = headers.get(name)
    if raw is None:
        raise InvalidResponse(f"GET response: missing header {name}")
    try:
        return int(raw.strip().strip('"'))
    except ValueError:
        raise InvalidResponse(f"GET response: header {name} is not an integer: {raw!r}") from None


def parse_get(key: str, headers: Mapping[str, str], body: bytes) -> GetResult:
    """A GET /v1/kv/{key} 200 response: raw body plus metadata headers."""
    kv = KeyValue(
        key=key,
        value=body,
        create_revision=_header_int(headers, "X-Raftkv-Create-Revision"),
        mod_revision=_header_int(headers, "X-Raftkv-Mod-Revision"),
        version=_header_int(headers, "X-Raftkv-Version"),
        lease=headers.get("X-Raftkv-Lease"),
    )
    return GetResult(kv=kv, revision=_header_int(headers, "X-Raftkv-Revision"))


def parse_put(obj: Any, value: bytes, replayed: bool = False) -> PutResult:
    o = _object(obj, "PUT response")
    return PutResult(
        revision=_field(o, "revision", int, "PUT response"),
        kv=parse_kv(_field(o, "kv", Mapping, "PUT response"), value=value),
        replayed=replayed,
    )


def parse_delete(obj: Any, replayed: bool = False) -> DeleteResult:
    o = _object(obj, "DELETE response")
    return DeleteResult(
        revision=_field(o, "revision", int, "DELETE response"),
        deleted=_field(o, "deleted", int, "DELETE response"),
        replayed=replayed,
    )


def parse_list(obj: Any) -> ListResult:
    o = _object(obj, "list response")
    kvs = _field(o, "kvs", list, "list response")
    return ListResult(
        revision=_field(o, "revision", int, "list response"),
        kvs=[parse_kv(kv, where=f"list response kvs[{i}]") for i, kv in enumerate(kvs)],
        more=_field(o, "more", bool, "list response"),
    )


def _parse_op_result(obj: Any, i: int) -> TxnOpResult:
    where = f"txn response results[{i}]"
    o = _object(obj, where)
    if "deleted" in o:
        return TxnOpResult(deleted=_field(o, "deleted", int, where))
    if "kv" in o:
        kv = o["kv"]
        return TxnOpResult(kv=None if kv is None else parse_kv(kv, where=where + ".kv"))
    raise InvalidResponse(f"{where}: expected 'kv' or 'deleted'")


def parse_txn(obj: Any, replayed: bool = False) -> TxnResult:
    o = _object(obj, "txn response")
    results = _field(o, "results", list, "txn response")
    return TxnResult(
        succeeded=_field(o, "succeeded", bool, "txn response"),
        revision=_field(o, "revision", int, "txn response"),
        results=[_parse_op_result(r, i) for i, r in enumerate(results)],
        replayed=replayed,
    )


def parse_status(obj: Any, endpoint: str) -> NodeStatus:
    where = f"status from {endpoint}"
    o = _object(obj, where)
    leader_id = o.get("leader_id")
    if leader_id is not None and not isinstance(leader_id, str):
        raise InvalidResponse(f"{where}: field 'leader_id' must be a string or null")
    members = []
    for i, m in enumerate(_field(o, "members", list, where)):
        mo = _object(m, f"{where} members[{i}]")
        members.append(
            MemberInfo(
                id=_field(mo, "id", str, where),
                peer_addr=_field(mo, "peer_addr", str, where),
                voter=_field(mo, "voter", bool, where),
            )
        )
    return NodeStatus(
        endpoint=endpoint,
        node_id=_field(o, "node_id", str, where),
        role=_field(o, "role", str, where),
        term=_field(o, "term", int, where),
        leader_id=leader_id,
        commit_index=_field(o, "commit_index", int, where),
        applied_index=_field(o, "applied_index", int, where),
        engine=_field(o, "engine", str, where),
        revision=_field(o, "revision", int, where),
        members=members,
        quota=dict(o["quota"]) if isinstance(o.get("quota"), Mapping) else None,
    )


def parse_error(status: int, obj: Any) -> tuple[str, str, dict[str, Any]]:
    """(code, message, extra fields) of an error body; tolerant of non-JSON bodies
    because proxies and crashed handlers do not follow our error shape."""
    if isinstance(obj, Mapping) and isinstance(obj.get("error"), Mapping):
        err = dict(obj["error"])
        code = err.pop("code", None)
        message = err.pop("message", None)
        return (
            code if isinstance(code, str) else f"http_{status}",
            message if isinstance(message, str) else "",
            err,
        )
    return f"http_{status}", f"unexpected error body: {str(obj)[:200]}", {}
