"""One node's HTTP API as the workloads need it, with every failure sorted by
what it means for the history.

A request either never reached the node (`RequestNotSent`: the operation
certainly did not happen, so it may be recorded as `fail`) or its outcome is
unknown (`OutcomeUnknown`: timeout, connection lost mid-request; recorded as
`info`). Anything the node answered comes back as a `Reply`.

"Never reached" is claimed only when the connect of the request's one and
only attempt failed: aiohttp would otherwise re-send a PUT on a new
connection after the first one broke (the node may have applied it before it
died), and a refused re-connect would pass for "not sent"
(raftkv/client/attempts.py stops the re-send and keeps the record).
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from raftkv.client.attempts import SingleAttempt

# Server-side deadline for one request; the client waits a little longer so a
# slow node answers 504 outcome_unknown rather than the client giving up first.
DEFAULT_SERVER_TIMEOUT_S = 2.0
CLIENT_GRACE_S = 1.0


class RequestNotSent(Exception):
    """The request's only connect failed; nothing was sent, nothing happened."""


class OutcomeUnknown(Exception):
    """The request may or may not have taken effect (timeout, lost connection)."""


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        return orjson.loads(self.body)

    @property
    def error_code(self) -> str | None:
        try:
            data = orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return None
        error = data.get("error") if isinstance(data, dict) else None
        return error.get("code") if isinstance(error, dict) else None

    def describe(self) -> str:
        return f"HTTP {self.status} {self.error_code or self.body[:80]!r}"


class NodeApi:
    """Requests to one node through a shared aiohttp session."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str,
                 server_timeout_s: float = DEFAULT_SERVER_TIMEOUT_S) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.server_timeout_s = server_timeout_s

    async def request(self, method: str, path: str, *, params: dict[str, str] | None = None,
                      body: bytes | None = None, headers: dict[str, str] | None = None) -> Reply:
        query = {"timeout": f"{self.server_timeout_s:g}", **(params or {})}
        timeout = aiohttp.ClientTimeout(total=self.server_timeout_s + CLIENT_GRACE_S)
        attempt = SingleAttempt()
        try:
            async with self.session.request(method, self.base_url + path, params=query, data=body,
                                            headers=headers, timeout=timeout,
                                            middlewares=(attempt,)) as response:
                data = await response.read()
                return Reply(response.status, data, dict(response.headers))
        except (asyncio.TimeoutError, aiohttp.ClientError, OSError) as error:
            if attempt.proves_not_sent(error):
                raise RequestNotSent(str(error)) from None
            raise OutcomeUnknown(f"{type(error).__name__}: {error}") from None

    async def get(self, key: str, serializable: bool = False) -> Reply:
        params = {"consistency": "serializable"} if serializable else None
        return await self.request("GET", "/v1/kv/" + quote(key, safe=""), params=params)

    async def put(self, key: str, value: bytes) -> Reply:
        return await self.request("PUT", "/v1/kv/" + quote(key, safe=""), body=value)

    async def txn(self, body: dict[str, Any]) -> Reply:
        return await self.request("POST", "/v1/txn", body=orjson.dumps(body),
                                  headers={"Content-Type": "application/json"})

    async def list_keys(self, prefix: str) -> list[str]:
        """Every key under `prefix` (linearizable, following pagination).

        Raises `OutcomeUnknown` or `RequestNotSent`, or `UnexpectedReply` for an
        answer other than 200.
        """
        return [kv["key"] for kv in await self.list_kvs(prefix, keys_only=True)]

    async def list_kvs(self, prefix: str, keys_only: bool = False) -> list[dict[str, Any]]:
        """Every KV object under `prefix`, as `list_keys` (values as JSON gives them)."""
        kvs: list[dict[str, Any]] = []
        start_after: str | None = None
        while True:
            params = {"prefix": prefix, "limit": "1000"}
            if keys_only:
                params["keys_only"] = "true"
            if start_after is not None:
                params["start_after"] = start_after
            reply = await self.request("GET", "/v1/kv", params=params)
            if reply.status != 200:
                raise UnexpectedReply(reply)
            page = reply.json()
            kvs.extend(page["kvs"])
            if not page.get("more") or not page["kvs"]:
                return kvs
            start_after = page["kvs"][-1]["key"]

    async def status(self) -> dict[str, Any]:
        """`GET /v1/status`; raises like `list_kvs`."""
        reply = await self.request("GET", "/v1/status")
        if reply.status != 200:
            raise UnexpectedReply(reply)
        return dict(reply.json())


class UnexpectedReply(Exception):
    """The node answered, but not with success; `reply` says how."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.describe())
        self.reply = reply
