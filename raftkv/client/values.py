"""How keys and values travel over HTTP: URL paths and the JSON value shape."""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import quote

from raftkv.client.errors import InvalidResponse


def to_bytes(value: bytes | bytearray | memoryview | str) -> bytes:
    """Accept text (stored as UTF-8) or bytes; reject anything else loudly."""
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"value must be bytes or str, not {type(value).__name__}")


def check_key(key: str) -> str:
    if not isinstance(key, str):
        raise TypeError(f"key must be str, not {type(key).__name__}")
    if key == "":
        raise ValueError("key must not be empty")
    return key


def key_path(key: str) -> str:
    """The already-encoded URL path for a key.

    Every reserved character is percent-encoded, including ``/`` and ``.``,
    so keys like ``a/../b`` or ``/x`` reach the server byte for byte instead
    of being normalised away by an HTTP library on either side.
    """
    return "/v1/kv/" + quote(check_key(key), safe="").replace(".", "%2E")


def encode_value(value: bytes) -> dict[str, str]:
    """The JSON shape of a value: text when it is UTF-8, else base64."""
    try:
        return {"value": value.decode("utf-8")}
    except UnicodeDecodeError:
        return {"value": base64.b64encode(value).decode("ascii"), "encoding": "base64"}


def decode_value(obj: dict[str, Any]) -> bytes:
    """Inverse of :func:`encode_value` for a JSON object holding ``value``."""
    raw = obj.get("value")
    if not isinstance(raw, str):
        raise InvalidResponse(f"'value' must be a string, got {raw!r}")
    encoding = obj.get("encoding", "utf-8")
    if encoding in ("utf-8", "utf8", None):
        return raw.encode("utf-8")
    if encoding == "base64":
        try:
            return base64.b64decode(raw, validate=True)
        except binascii.Error as exc:
            raise InvalidResponse(f"'value' is not valid base64: {exc}") from None
    raise InvalidResponse(f"unknown value encoding {encoding!r}")
