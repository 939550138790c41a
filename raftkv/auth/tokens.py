"""Signed bearer tokens that any node can check on its own.

A token is ``rkv1.<payload>.<mac>``, both parts base64url without padding;
the payload is JSON ``{"sub": user, "rev": user revision, "exp": unix
seconds}`` and the mac is HMAC-SHA256 over ``rkv1.<payload>`` with the
cluster's signing key, which lives in the replicated auth state (drawn when
auth is enabled). So a token made by one node is valid on every node and
after any leader change, with no token table to replicate (etcd's "simple"
tokens live in one node's memory; this is closer to its JWT tokens).

A token stops being valid when it expires, when the user's record changes
(password, roles: its revision moves on), when the user is deleted, or when
auth is disabled and enabled again (a new key). Expiry is checked against
each node's wall clock, so clocks should agree to well within the TTL.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass

import orjson

PREFIX = "rkv1"
DEFAULT_TTL = 300.0
MAX_TOKEN_BYTES = 4096


@dataclass(frozen=True)
class Claims:
    user: str
    revision: int
    expires: int  # unix seconds


class TokenError(Exception):
    """A token that cannot be used; ``code`` is the API error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def issue(key: bytes, user: str, revision: int, now: float, ttl: float) -> str:
    payload = orjson.dumps({"sub": user, "rev": revision, "exp": int(now + ttl)})
    body = f"{PREFIX}.{_b64(payload)}"
    return f"{body}.{_b64(_mac(key, body))}"


def verify(key: bytes, token: str, now: float) -> Claims:
    """The claims of a well-signed, unexpired token (TokenError otherwise).
    Whether its user and revision still stand is the caller's check."""
    if len(token) > MAX_TOKEN_BYTES:
        raise TokenError("invalid_token", "the token is too long to be one of ours")
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != PREFIX:
        raise TokenError("invalid_token", "the token is malformed (expected rkv1.<payload>.<mac>)")
    body = f"{parts[0]}.{parts[1]}"
    try:
        mac = _unb64(parts[2])
        payload = orjson.loads(_unb64(parts[1]))
    except (ValueError, binascii.Error, orjson.JSONDecodeError):
        raise TokenError("invalid_token", "the token is malformed (bad base64 or JSON)") from None
    if not key or not hmac.compare_digest(mac, _mac(key, body)):
        raise TokenError("invalid_token", "the token's signature does not match (made before auth was last enabled, or forged)")
    if (
        type(payload) is not dict
        or type(payload.get("sub")) is not str
        or type(payload.get("rev")) is not int
        or type(payload.get("exp")) is not int
    ):
        raise TokenError("invalid_token", "the token's payload is malformed")
    if payload["exp"] <= now:
        raise TokenError("token_expired", "the token has expired: authenticate again")
    return Claims(payload["sub"], payload["rev"], payload["exp"])


def _mac(key: bytes, body: str) -> bytes:
    return hmac.new(key, body.encode(), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    if not text.isascii():
        raise ValueError("not base64")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
