"""Blocking HTTP with the client's TLS and credentials.

For what streams or runs without an event loop: the :class:`Watch`
iterator, and the CLI's member, snapshot and election-observe commands.
They use the same SSL context as the async client (raftkv/client/tls.py)
and the same login (``POST /v1/auth/authenticate``, then ``Authorization:
Bearer``), so one set of --cacert/--cert/--key/--user options works for
every command.
"""

from __future__ import annotations

import http.client
import ssl
from typing import Any
from urllib.parse import urlsplit

import orjson

from raftkv.client.errors import InvalidResponse, RequestRejected
from raftkv.client.retry import STALE_TOKEN_CODES

AUTH_TIMEOUT = 10.0


def connect(endpoint: str, timeout: float, context: ssl.SSLContext | None) -> http.client.HTTPConnection:
    """A connection to ``endpoint`` (not opened yet): HTTPS with ``context``
    (None: the system's trust) for https:// endpoints, else plain HTTP."""
    parts = urlsplit(endpoint)
    if parts.scheme == "https":
        return http.client.HTTPSConnection(parts.hostname or "", parts.port, timeout=timeout, context=context)
    return http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)


def error_of(body: bytes) -> dict[str, Any]:
    """The API's ``error`` object from an error answer's body (code "unknown"
    when the body is not one)."""
    try:
        error = orjson.loads(body)["error"]
        if isinstance(error, dict):
            return error
    except (orjson.JSONDecodeError, KeyError, TypeError):
        pass
    return {"code": "unknown", "message": body[:200].decode("utf-8", "replace")}


class BearerAuth:
    """A token for ``user``/``password``, fetched on first use and again
    after a 401 a new token may cure (expired, revoked, or auth switched on
    since we were told it was off). Without credentials it adds nothing.

    The token comes from the endpoint about to be used: a follower that has
    not applied a new user yet refuses a token made elsewhere for a moment,
    and authenticating there (a linearizable read) settles it.
    """

    def __init__(
        self,
        user: str | None,
        password: str | None,
        context: ssl.SSLContext | None = None,
        timeout: float = AUTH_TIMEOUT,
    ) -> None:
        if (user is None) != (password is None):
            raise ValueError("give both user and password, or neither")
        self._credentials = None if user is None or password is None else (user, password)
        self.context = context
        self.timeout = timeout
        self._token: str | None = None  # "" once a node said auth is off

    @property
    def enabled(self) -> bool:
        return self._credentials is not None

    def headers(self, endpoint: str) -> dict[str, str]:
        """The Authorization header to send to ``endpoint``, logging in there
        first if we hold no token. Raises RequestRejected for a wrong
        password, OSError when the node cannot answer (try another)."""
        if self._credentials is None:
            return {}
        if self._token is None:
            self._token = self._authenticate(endpoint)
        return {"Authorization": f"Bearer {self._token}"} if self._token else {}

    def renew(self, status: int, code: str | None) -> bool:
        """After an answer: True when it was a 401 a new token may cure; the
        old token is dropped, so the next :meth:`headers` logs in again."""
        if self._credentials is None or status != 401 or code not in STALE_TOKEN_CODES:
            return False
        self._token = None
        return True

    def _authenticate(self, endpoint: str) -> str:
        assert self._credentials is not None
        user, password = self._credentials
        conn = connect(endpoint, self.timeout, self.context)
        try:
            conn.request(
                "POST",
                "/v1/auth/authenticate",
                body=orjson.dumps({"name": user, "password": password}),
                headers={"Content-Type": "application/json"},
            )
            resp = conn.getresponse()
            body = resp.read()
        finally:
            conn.close()
        if resp.status == 200:
            try:
                return str(orjson.loads(body)["token"])
            except (orjson.JSONDecodeError, KeyError, TypeError):
                raise InvalidResponse(f"{endpoint}: authenticate answered 200 without a token: {body[:200]!r}") from None
        error = error_of(body)
        code, message = str(error.get("code", "unknown")), str(error.get("message", ""))
        if resp.status == 409 and code == "auth_not_enabled":
            return ""  # no token needed; a later 401 makes us ask again
        if resp.status >= 500:
            raise ConnectionError(f"{endpoint}: authenticate answered {resp.status} {code}: {message}")
        raise RequestRejected(resp.status, code, message, error)
