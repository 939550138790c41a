"""Distributed locks and election campaigns on /v1/locks and /v1/elections
(docs/locks.md): a lease kept alive while held, the server's create-if-absent
key named after it, and the fencing token to pass to whatever the lock guards.

    with Lock(client, "backup", ttl=10) as held:
        storage.write(data, fencing_token=held.fencing_token)

Asking for the lock again with the same lease finds the same key, so every
request here is safe to resend. Each request waits at most the client's
timeout on the server; after a ``lock_timeout`` the server has withdrawn the
key and the next request queues anew (a waiter's place is not kept across
requests).
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import orjson

from raftkv.client.async_client import AsyncClient
from raftkv.client.errors import RequestRejected
from raftkv.client.leases import AsyncKeepAlive
from raftkv.client.retry import RequestKind
from raftkv.client.sync_client import Client

_JSON = {"Content-Type": "application/json"}


class LockLost(RuntimeError):
    """The lease under a held lock is gone, or was not renewed within its TTL."""


class AsyncLock:
    """``async with AsyncLock(client, name) as held:`` holds the lock inside."""

    def __init__(self, client: AsyncClient, name: str, ttl: int = 10, wait: float | None = None) -> None:
        if not name or "/" in name:
            raise ValueError(f"a lock name must be non-empty without '/', got {name!r}")
        self.client = client
        self.name = name
        self.ttl = ttl
        self.wait = wait  # None: until acquired
        self.lease_id: str | None = None
        self.key: str | None = None
        self.fencing_token: int | None = None
        self.keeper: AsyncKeepAlive | None = None
        self._granted_at = 0.0

    def _path(self) -> str:
        return f"/v1/locks/{quote(self.name, safe='')}"

    async def acquire(self) -> AsyncLock:
        grant = await self.client.lease_grant(self.ttl)
        self.lease_id, self._granted_at = grant.id, time.monotonic()
        self.keeper = self.client.keep_alive(grant.id).start()
        deadline = None if self.wait is None else time.monotonic() + self.wait
        try:
            while True:
                resp = await self.client._request(
                    "POST", self._path(), RequestKind.READ, body=orjson.dumps({"lease": grant.id}), headers=_JSON
                )
                body: Any = orjson.loads(resp.body) if resp.body else None
                if resp.status == 200:
                    self.key, self.fencing_token = body["key"], body["fencing_token"]
                    return self
                code = body.get("error", {}).get("code") if isinstance(body, dict) else None
                if code != "lock_timeout" or (deadline is not None and time.monotonic() >= deadline):
                    AsyncClient._raise_for_status(resp)
                if self.keeper.lost:
                    raise LockLost(f"lease {grant.id} was lost while waiting for lock {self.name!r}")
        except BaseException:
            await self._drop_lease()
            raise

    def lost(self) -> bool:
        """True once the lease is known gone or went unrenewed for a whole TTL
        (then another client may hold the lock: stop using it)."""
        keeper = self.keeper
        if keeper is None:
            return True
        last = keeper.last_renewed or self._granted_at
        return keeper.lost or time.monotonic() - last > self.ttl

    async def release(self) -> None:
        try:
            if self.key is not None:
                resp = await self.client._request(
                    "DELETE", self._path(), RequestKind.READ, params={"key": self.key}
                )
                if resp.status != 200:
                    AsyncClient._raise_for_status(resp)
        finally:
            self.key = None
            await self._drop_lease()

    async def _drop_lease(self) -> None:
        if self.keeper is not None:
            await self.keeper.stop()
        if self.lease_id is not None:
            try:
                await self.client.lease_revoke(self.lease_id)
            except RequestRejected:
                pass  # already gone
            self.lease_id = None

    async def __aenter__(self) -> AsyncLock:
        return await self.acquire()

    async def __aexit__(self, *exc: object) -> None:
        await self.release()


class Lock:
    """The blocking client's lock: :class:`AsyncLock` run on the client's loop."""

    def __init__(self, client: Client, name: str, ttl: int = 10, wait: float | None = None) -> None:
        self._client = client
        self._lock = AsyncLock(client._async, name, ttl, wait)

    @property
    def key(self) -> str | None:
        return self._lock.key

    @property
    def fencing_token(self) -> int | None:
        return self._lock.fencing_token

    @property
    def lease_id(self) -> str | None:
        return self._lock.lease_id

    def lost(self) -> bool:
        return self._lock.lost()

    def acquire(self) -> Lock:
        self._client._run(self._lock.acquire())
        return self

    def release(self) -> None:
        self._client._run(self._lock.release())

    def __enter__(self) -> Lock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


async def campaign(client: AsyncClient, name: str, lease_id: str, value: str) -> dict[str, Any]:
    """Wait until ``lease_id``'s campaign leads election ``name``; the answer's ``key`` resigns."""
    path = f"/v1/elections/{quote(name, safe='')}/campaign"
    while True:
        resp = await client._request(
            "POST", path, RequestKind.READ, body=orjson.dumps({"lease": lease_id, "value": value}), headers=_JSON
        )
        body: Any = orjson.loads(resp.body) if resp.body else None
        if resp.status == 200:
            return dict(body)
        if not (isinstance(body, dict) and body.get("error", {}).get("code") == "lock_timeout"):
            AsyncClient._raise_for_status(resp)


async def resign(client: AsyncClient, name: str, key: str) -> None:
    path = f"/v1/elections/{quote(name, safe='')}/resign"
    resp = await client._request("POST", path, RequestKind.READ, body=orjson.dumps({"key": key}), headers=_JSON)
    AsyncClient._raise_for_status(resp)
