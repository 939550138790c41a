"""Leases in the Python client: result types, id checks, and the keepalive
helpers that renew a lease in the background (docs/leases.md).

A lease id travels as 16 lowercase hex digits, as the server prints it;
the client accepts that string (1 to 16 hex digits) or the int it stands for.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from raftkv.client.errors import ClientError, InvalidResponse, NotFound

if TYPE_CHECKING:
    from raftkv.client.async_client import AsyncClient

log = logging.getLogger(__name__)

MAX_LEASE_ID = (1 << 63) - 1
MAX_TTL = 9_000_000_000
# After a failed renewal, try again this soon (at most ttl/3): an election
# takes about a second, and the lease must not run out meanwhile.
RETRY_AFTER_FAILURE = 0.5

LeaseId = str | int


def lease_id_text(lease_id: LeaseId) -> str:
    """The id as the API writes it (16 lowercase hex digits); ValueError if it names no lease."""
    if isinstance(lease_id, bool):
        raise TypeError("lease id must be a hex string or an int, not bool")
    if isinstance(lease_id, int):
        number = lease_id
    elif isinstance(lease_id, str):
        if not 1 <= len(lease_id) <= 16 or any(c not in "0123456789abcdefABCDEF" for c in lease_id):
            raise ValueError(f"lease id must be 1 to 16 hex digits, got {lease_id!r}")
        number = int(lease_id, 16)
    else:
        raise TypeError(f"lease id must be a hex string or an int, not {type(lease_id).__name__}")
    if not 0 < number <= MAX_LEASE_ID:
        raise ValueError(f"lease id must be from 1 to 7fffffffffffffff, got {lease_id!r}")
    return f"{number:016x}"


def check_ttl(ttl: int) -> int:
    if isinstance(ttl, bool) or not isinstance(ttl, int):
        raise TypeError(f"ttl must be an int (seconds), not {type(ttl).__name__}")
    if not 1 <= ttl <= MAX_TTL:
        raise ValueError(f"ttl must be from 1 to {MAX_TTL} seconds, got {ttl}")
    return ttl


def random_lease_id() -> str:
    # The client picks the id so that a grant resent after a lost answer
    # finds its own lease (409 lease_exists) instead of granting a second one.
    return lease_id_text(secrets.randbits(63) or 1)


@dataclass(frozen=True)
class LeaseGrant:
    """The answer to a grant or a keepalive: the lease now lives ``ttl`` seconds from the leader's now."""

    id: str
    ttl: int
    revision: int


@dataclass(frozen=True)
class LeaseInfo:
    """A live lease. ``remaining`` is the answering node's estimate (exact on
    the leader); ``keys`` is None in a listing (GET /v1/leases omits them)."""

    id: str
    ttl: int
    remaining: float
    keys: list[str] | None
    revision: int

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "ttl": self.ttl, "remaining": self.remaining}
        if self.keys is not None:
            out["keys"] = self.keys
        return out


@dataclass(frozen=True)
class RevokeResult:
    id: str
    deleted: int
    revision: int


def _object(obj: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping):
        raise InvalidResponse(f"{where}: expected a JSON object, got {type(obj).__name__}")
    return obj


def _field(obj: Mapping[str, Any], name: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = obj.get(name)
    if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
        raise InvalidResponse(f"{where}: field {name!r} is missing or not {kind}: {value!r}")
    return value


def parse_grant(obj: Any, where: str = "lease response") -> LeaseGrant:
    o = _object(obj, where)
    return LeaseGrant(
        id=_field(o, "id", str, where), ttl=_field(o, "ttl", int, where), revision=_field(o, "revision", int, where)
    )


def _parse_info(o: Mapping[str, Any], revision: int, where: str) -> LeaseInfo:
    keys = o.get("keys")
    if keys is not None and not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
        raise InvalidResponse(f"{where}: 'keys' must be a list of strings")
    return LeaseInfo(
        id=_field(o, "id", str, where),
        ttl=_field(o, "ttl", int, where),
        remaining=float(_field(o, "remaining", (int, float), where)),
        keys=keys,
        revision=revision,
    )


def parse_info(obj: Any) -> LeaseInfo:
    o = _object(obj, "lease info")
    return _parse_info(o, _field(o, "revision", int, "lease info"), "lease info")


def parse_list(obj: Any) -> list[LeaseInfo]:
    o = _object(obj, "lease list")
    revision = _field(o, "revision", int, "lease list")
    items = _field(o, "leases", list, "lease list")
    return [_parse_info(_object(item, f"leases[{i}]"), revision, f"leases[{i}]") for i, item in enumerate(items)]


def parse_revoke(obj: Any) -> RevokeResult:
    o = _object(obj, "revoke response")
    where = "revoke response"
    return RevokeResult(
        id=_field(o, "id", str, where),
        deleted=_field(o, "deleted", int, where),
        revision=_field(o, "revision", int, where),
    )


class AsyncKeepAlive:
    """Renews one lease every ttl/3 in an asyncio task until stopped.

    Use ``async with client.keep_alive(lease_id):`` (or ``start()`` and
    ``await stop()``). The first renewal is sent at once; its answer gives
    the TTL. A renewal that fails for want of a leader is tried again after
    at most 0.5 s. When the server says the lease is gone (it expired or was
    revoked) the task ends: ``lost`` is then True and ``error`` says why;
    ``wait_lost()`` lets a caller stop its work at that moment.
    """

    def __init__(
        self,
        client: AsyncClient,
        lease_id: LeaseId,
        on_renew: Callable[[LeaseGrant], None] | None = None,
    ) -> None:
        self.lease_id = lease_id_text(lease_id)
        self._client = client
        self._on_renew = on_renew
        self._task: asyncio.Task[None] | None = None
        self.lost = False
        self.error: BaseException | None = None  # the last failure (cleared by a renewal)
        self.renewals = 0
        self.ttl: int | None = None
        self.last_renewed: float | None = None  # time.monotonic() of the last renewal

    def start(self) -> AsyncKeepAlive:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"raftkv keepalive {self.lease_id}"
            )
        return self

    async def stop(self) -> None:
        """Stop renewing (the lease itself lives on until its TTL runs out)."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass

    async def wait_lost(self) -> None:
        """Return when the lease is known to be gone (the renewing task ended)."""
        task = self._task
        if task is None:
            return
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.cancelled():  # we were cancelled, not the renewing task
                raise

    async def __aenter__(self) -> AsyncKeepAlive:
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _run(self) -> None:
        while True:
            try:
                grant = await self._client.lease_keepalive(self.lease_id)
            except NotFound as exc:
                self.lost, self.error = True, exc
                log.warning("lease %s is gone (%s); no longer renewing it", self.lease_id, exc.message)
                return
            except ClientError as exc:
                self.error = exc
                delay = RETRY_AFTER_FAILURE if self.ttl is None else min(RETRY_AFTER_FAILURE, self.ttl / 3)
                log.info("renewing lease %s failed, trying again in %.1f s: %s", self.lease_id, delay, exc)
            else:
                self.ttl, self.error = grant.ttl, None
                self.renewals += 1
                self.last_renewed = time.monotonic()
                if self._on_renew is not None:
                    self._on_renew(grant)
                delay = grant.ttl / 3
            await asyncio.sleep(delay)


class KeepAlive:
    """The synchronous client's keepalive: an :class:`AsyncKeepAlive` run on
    the client's own event loop thread, so the caller's thread stays free.

    ``with client.keep_alive(lease_id) as keeper:`` renews until the block
    ends; ``keeper.lost`` tells whether the lease is gone.
    """

    def __init__(
        self,
        run: Callable[[Awaitable[Any]], Any],
        loop: asyncio.AbstractEventLoop,
        keeper: AsyncKeepAlive,
    ) -> None:
        self._run = run  # runs a coroutine on the client's loop and waits for it
        self._loop = loop
        self._keeper = keeper

    @property
    def lease_id(self) -> str:
        return self._keeper.lease_id

    @property
    def lost(self) -> bool:
        return self._keeper.lost

    @property
    def error(self) -> BaseException | None:
        return self._keeper.error

    @property
    def renewals(self) -> int:
        return self._keeper.renewals

    @property
    def ttl(self) -> int | None:
        return self._keeper.ttl

    def start(self) -> KeepAlive:
        self._run(_start(self._keeper))
        return self

    def stop(self) -> None:
        self._run(self._keeper.stop())

    def wait_lost(self, timeout: float | None = None) -> bool:
        """Block until the lease is gone (True) or ``timeout`` passes (False)."""
        future = asyncio.run_coroutine_threadsafe(self._keeper.wait_lost(), self._loop)
        try:
            future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            return False
        return self.lost

    def __enter__(self) -> KeepAlive:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _start(keeper: AsyncKeepAlive) -> None:
    keeper.start()
