"""Turns HTTP request JSON into commands and state machine results into JSON.

Pure: it works on already-parsed JSON objects and returns dicts; the server
does the HTTP and byte-level JSON work. Every refusal is a RequestError whose
message names the offending field, so a person using curl can fix the request
without reading the source.

Values travel as ``{"value": "text"}`` when they are UTF-8 and as
``{"value": "<base64>", "encoding": "base64"}`` otherwise, in both directions.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from raftkv.kv import commands, leases
from raftkv.kv.integers import in_int64_range
from raftkv.kv.limits import Limits

ENCODINGS = ("utf-8", "base64")
# HTTP status for each error code a state machine result can carry.
RESULT_ERROR_STATUS = {"not_a_number": 409, "out_of_range": 409, "invalid_command": 400, "lease_not_found": 404}

_TXN_FIELDS = frozenset({"compare", "success", "failure"})
_COMPARE_FIELDS = frozenset({"key", "target", "cmp", "value", "encoding"})
_OP_FIELDS: dict[str, frozenset[str]] = {
    "get": frozenset({"op", "key"}),
    "put": frozenset({"op", "key", "value", "encoding", "lease"}),
    "delete": frozenset({"op", "key"}),
    "delete_prefix": frozenset({"op", "prefix"}),
    "add": frozenset({"op", "key", "delta"}),
}
_OP_REQUIRED: dict[str, tuple[str, ...]] = {
    "get": ("key",),
    "put": ("key", "value"),
    "delete": ("key",),
    "delete_prefix": ("prefix",),
    "add": ("key", "delta"),
}


class RequestError(Exception):
    """A client request that cannot be accepted; nothing was applied."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def to_json(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


# ---- single fields (also used by the server for PUT / DELETE) -------------


def validate_key(key: str, limits: Limits, field: str = "key") -> None:
    if not key:
        raise RequestError(400, "empty_key", f"{field} must not be empty")
    validate_prefix(key, limits, field)


def validate_prefix(prefix: str, limits: Limits, field: str = "prefix") -> None:
    """Like validate_key, but an empty prefix is allowed (it means every key)."""
    size = _utf8_size(prefix, field)
    if size > limits.max_key_bytes:
        raise RequestError(
            413, "key_too_large",
            f"{field} is {size} bytes; the limit is {limits.max_key_bytes} bytes",
        )


def validate_value(value: bytes, limits: Limits, field: str = "value") -> None:
    if len(value) > limits.max_value_bytes:
        raise RequestError(
            413, "value_too_large",
            f"{field} is {len(value)} bytes; the limit is {limits.max_value_bytes} bytes",
        )


def decode_value(obj: dict[str, Any], where: str, limits: Limits) -> bytes:
    """The bytes of ``obj["value"]`` according to ``obj["encoding"]``."""
    field = f"{where}.value"
    if "value" not in obj:
        raise RequestError(400, "missing_field", f"{field} is required")
    text = obj["value"]
    if type(text) is not str:
        raise _wrong_type(field, "a string", text)
    encoding = obj.get("encoding", "utf-8")
    if type(encoding) is not str:
        raise _wrong_type(f"{where}.encoding", "a string", encoding)
    if encoding == "utf-8":
        try:
            value = text.encode("utf-8")
        except UnicodeEncodeError:
            raise RequestError(400, "invalid_argument", f"{field} is not valid Unicode text") from None
    elif encoding == "base64":
        try:
            value = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise RequestError(
                400, "invalid_base64",
                f"{field} is not valid base64 (standard alphabet, with padding)",
            ) from None
    else:
        raise RequestError(
            400, "invalid_argument",
            f"{where}.encoding must be \"utf-8\" or \"base64\", got {_show(encoding)}",
        )
    validate_value(value, limits, field)
    return value


# ---- POST /v1/txn ---------------------------------------------------------


def parse_txn(obj: Any, limits: Limits, idem: str | None = None) -> commands.Command:
    """The txn command for a ``POST /v1/txn`` body (already parsed JSON)."""
    if type(obj) is not dict:
        raise _wrong_type("request body", "a JSON object", obj)
    _reject_unknown_fields(obj, _TXN_FIELDS, "request body")
    sections: dict[str, list[Any]] = {}
    for name in ("compare", "success", "failure"):
        items = obj.get(name, [])
        if type(items) is not list:
            raise _wrong_type(name, "an array", items)
        sections[name] = items
    total = sum(len(items) for items in sections.values())
    if total > limits.max_txn_ops:
        raise RequestError(
            413, "too_many_ops",
            f"txn has {total} compares and ops in total; the limit is {limits.max_txn_ops}",
        )
    return commands.txn(
        [_parse_compare(item, f"compare[{i}]", limits) for i, item in enumerate(sections["compare"])],
        [_parse_op(item, f"success[{i}]", limits) for i, item in enumerate(sections["success"])],
        [_parse_op(item, f"failure[{i}]", limits) for i, item in enumerate(sections["failure"])],
        idem,
    )


def _parse_compare(item: Any, where: str, limits: Limits) -> dict[str, Any]:
    if type(item) is not dict:
        raise _wrong_type(where, "a JSON object", item)
    _reject_unknown_fields(item, _COMPARE_FIELDS, where)
    _require_fields(item, ("key", "target", "cmp", "value"), where)
    key = _parse_key(item, where, limits)
    target = _parse_choice(item, "target", commands.COMPARE_TARGETS, where)
    cmp = _parse_choice(item, "cmp", commands.COMPARE_OPERATORS, where)
    value: bytes | int
    if target == "value":
        value = decode_value(item, where, limits)
    else:
        if "encoding" in item:
            raise RequestError(
                400, "invalid_argument",
                f"{where}.encoding only applies to target \"value\", not {_show(target)}",
            )
        value = _parse_int(item, "value", where, f" (target {_show(target)} compares integers)")
    return commands.compare(key, target, cmp, value)


def _parse_op(item: Any, where: str, limits: Limits) -> dict[str, Any]:
    if type(item) is not dict:
        raise _wrong_type(where, "a JSON object", item)
    if "op" not in item:
        raise RequestError(400, "missing_field", f"{where}.op is required")
    op = _parse_choice(item, "op", commands.TXN_OPS, where)
    _reject_unknown_fields(item, _OP_FIELDS[op], f"{where} (op {_show(op)})")
    _require_fields(item, _OP_REQUIRED[op], f"{where} (op {_show(op)})")
    if op == "delete_prefix":
        prefix = item["prefix"]
        if type(prefix) is not str:
            raise _wrong_type(f"{where}.prefix", "a string", prefix)
        validate_prefix(prefix, limits, f"{where}.prefix")
        return commands.txn_delete_prefix(prefix)
    key = _parse_key(item, where, limits)
    if op == "put":
        return commands.txn_put(key, decode_value(item, where, limits), _parse_lease(item, where))
    if op == "add":
        return commands.txn_add(key, _parse_int(item, "delta", where))
    if op == "delete":
        return commands.txn_delete(key)
    return commands.txn_get(key)


def _parse_lease(item: dict[str, Any], where: str) -> int:
    """A txn put's "lease": the hex id of a lease to attach the key to (absent: none)."""
    if "lease" not in item:
        return 0
    text = item["lease"]
    if type(text) is not str:
        raise _wrong_type(f"{where}.lease", "a string of hex digits (a lease id)", text)
    lease = leases.parse_id(text)
    if lease is None:
        raise RequestError(400, "invalid_argument", f"{where}.lease must be 1 to 16 hex digits naming a lease, got {_show(text)}")
    return lease


def _parse_key(item: dict[str, Any], where: str, limits: Limits) -> str:
    key = item["key"]
    if type(key) is not str:
        raise _wrong_type(f"{where}.key", "a string", key)
    validate_key(key, limits, f"{where}.key")
    return key


def _parse_choice(item: dict[str, Any], field: str, allowed: frozenset[str], where: str) -> str:
    choice = item[field]
    if type(choice) is not str:
        raise _wrong_type(f"{where}.{field}", "a string", choice)
    if choice not in allowed:
        raise RequestError(
            400, "invalid_argument",
            f"{where}.{field} {_show(choice)} is not one of {', '.join(sorted(allowed))}",
        )
    return choice


# JSON (and JSON Schema's "integer") counts 3.0 as the integer 3; a float is
# exact only up to 2**53.
_EXACT_FLOAT_INT = 2**53


def _parse_int(item: dict[str, Any], field: str, where: str, hint: str = "") -> int:
    number = item[field]
    if type(number) is float and number.is_integer() and abs(number) <= _EXACT_FLOAT_INT:
        number = int(number)
    if type(number) is not int:  # JSON true/false arrive as bool, an int subclass
        raise _wrong_type(f"{where}.{field}", "an integer" + hint, number)
    if not in_int64_range(number):
        raise RequestError(
            400, "invalid_argument", f"{where}.{field} {number} is outside the signed 64-bit range"
        )
    return number


def _require_fields(item: dict[str, Any], required: tuple[str, ...], where: str) -> None:
    missing = [name for name in required if name not in item]
    if missing:
        raise RequestError(
            400, "missing_field", f"{where}: missing required field(s) {', '.join(missing)}"
        )


def _reject_unknown_fields(item: dict[str, Any], allowed: frozenset[str], where: str) -> None:
    unknown = sorted(str(name) for name in item if name not in allowed)
    if unknown:
        raise RequestError(
            400, "unknown_field",
            f"{where}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}",
        )


def _wrong_type(field: str, expected: str, got: Any) -> RequestError:
    return RequestError(400, "wrong_type", f"{field} must be {expected}, got {_json_type(got)}")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _show(text: str) -> str:
    shown = text if len(text) <= 100 else text[:100] + "..."
    return '"' + shown.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _utf8_size(text: str, field: str) -> int:
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise RequestError(400, "invalid_argument", f"{field} is not valid Unicode text") from None


# ---- results -> response JSON ---------------------------------------------


def value_to_json(value: bytes) -> dict[str, str]:
    try:
        return {"value": value.decode("utf-8")}
    except UnicodeDecodeError:
        return {"value": base64.b64encode(value).decode("ascii"), "encoding": "base64"}


def kv_to_json(kv: dict[str, Any], with_value: bool = True) -> dict[str, Any]:
    rendered: dict[str, Any] = {"key": kv["key"]}
    if with_value:
        rendered.update(value_to_json(kv["value"]))
    rendered["create_revision"] = kv["create_revision"]
    rendered["mod_revision"] = kv["mod_revision"]
    rendered["version"] = kv["version"]
    if "lease" in kv:
        rendered["lease"] = leases.format_id(kv["lease"])
    return rendered


def result_to_json(result: dict[str, Any], with_value: bool = True) -> dict[str, Any]:
    """The response body for a state machine result.

    Drops ``ok`` (the HTTP status says it) and ``replayed`` (the server turns
    it into the ``Idempotency-Replayed`` header, so a replayed body is
    identical to the first one). ``with_value=False`` leaves the value out of
    a top-level ``kv`` (a PUT response need not echo the body); txn results
    always carry values because a ``get`` op exists to return one.
    """
    rendered: dict[str, Any] = {}
    for name, field in result.items():
        if name == "ok" or name == "replayed":
            continue
        if name == "kv":
            rendered["kv"] = kv_to_json(field, with_value)
        elif name == "results":
            rendered["results"] = [_op_result_to_json(item) for item in field]
        else:
            rendered[name] = field
    return rendered


def result_error_status(result: dict[str, Any]) -> int:
    """The HTTP status for a result: 200 when ok, else by its error code."""
    if result.get("ok"):
        return 200
    return RESULT_ERROR_STATUS.get(result["error"]["code"], 409)


def _op_result_to_json(item: dict[str, Any]) -> dict[str, Any]:
    if "kv" in item:
        kv = item["kv"]
        return {"kv": None if kv is None else kv_to_json(kv)}
    return dict(item)
