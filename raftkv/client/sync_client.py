"""Client: the AsyncClient API for synchronous code.

A private event loop runs in a daemon thread and every call is handed to it,
so the synchronous client works the same whether or not the caller's thread
already runs an event loop, and one Client may be shared by threads.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, TypeVar

from raftkv.client.async_client import AsyncClient
from raftkv.client.leases import KeepAlive, LeaseGrant, LeaseId, LeaseInfo, RevokeResult
from raftkv.client.models import (
    DeleteResult,
    GetResult,
    KeyValue,
    ListResult,
    NodeStatus,
    PutResult,
    TxnResult,
)
from raftkv.client.tls import FilePath
from raftkv.client.txn import Compare, Op

T = TypeVar("T")


class Client:
    """Synchronous raftkv client; see :class:`AsyncClient` for semantics."""

    def __init__(
        self,
        endpoints: Sequence[str],
        timeout: float = 5.0,
        retries: int = 5,
        backoff_base: float = 0.05,
        backoff_max: float = 2.0,
        user: str | None = None,
        password: str | None = None,
        ca_file: FilePath | None = None,
        cert_file: FilePath | None = None,
        key_file: FilePath | None = None,
    ) -> None:
        # Validate before starting a thread so bad arguments leak nothing.
        self._async = AsyncClient(
            endpoints, timeout, retries, backoff_base, backoff_max, user, password, ca_file, cert_file, key_file
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="raftkv-client", daemon=True)
        self._thread.start()
        self._closed = False

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coro.close()
            raise RuntimeError("this Client is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def close(self) -> None:
        if self._closed:
            return
        self._run(self._async.close())
        self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def endpoints(self) -> list[str]:
        return self._async.endpoints

    @property
    def leader_endpoint(self) -> str | None:
        return self._async.leader_endpoint

    @property
    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for https:// endpoints (None: the system's trust)."""
        return self._async.ssl_context

    def get(self, key: str, consistency: str = "linearizable") -> KeyValue | None:
        return self._run(self._async.get(key, consistency))

    def get_with_revision(self, key: str, consistency: str = "linearizable") -> GetResult | None:
        return self._run(self._async.get_with_revision(key, consistency))

    def put(
        self,
        key: str,
        value: bytes | str,
        if_mod_revision: int | None = None,
        if_absent: bool = False,
        idempotency_key: str | None = None,
        lease: LeaseId | None = None,
    ) -> PutResult:
        return self._run(self._async.put(key, value, if_mod_revision, if_absent, idempotency_key, lease))

    def delete(
        self, key: str, if_mod_revision: int | None = None, idempotency_key: str | None = None
    ) -> DeleteResult:
        return self._run(self._async.delete(key, if_mod_revision, idempotency_key))

    def list(
        self,
        prefix: str = "",
        limit: int | None = None,
        start_after: str | None = None,
        keys_only: bool = False,
        consistency: str = "linearizable",
    ) -> ListResult:
        return self._run(self._async.list(prefix, limit, start_after, keys_only, consistency))

    def delete_prefix(self, prefix: str, idempotency_key: str | None = None) -> DeleteResult:
        return self._run(self._async.delete_prefix(prefix, idempotency_key))

    def txn(
        self,
        compare: Sequence[Compare | Mapping[str, Any]] = (),
        success: Sequence[Op | Mapping[str, Any]] = (),
        failure: Sequence[Op | Mapping[str, Any]] = (),
        idempotency_key: str | None = None,
    ) -> TxnResult:
        return self._run(self._async.txn(compare, success, failure, idempotency_key))

    def lease_grant(self, ttl: int, lease_id: LeaseId | None = None) -> LeaseGrant:
        return self._run(self._async.lease_grant(ttl, lease_id))

    def lease_keepalive(self, lease_id: LeaseId) -> LeaseGrant:
        return self._run(self._async.lease_keepalive(lease_id))

    def lease_revoke(self, lease_id: LeaseId) -> RevokeResult:
        return self._run(self._async.lease_revoke(lease_id))

    def lease_info(self, lease_id: LeaseId, consistency: str = "linearizable") -> LeaseInfo:
        return self._run(self._async.lease_info(lease_id, consistency))

    def leases(self, consistency: str = "linearizable") -> list[LeaseInfo]:
        return self._run(self._async.leases(consistency))

    def keep_alive(self, lease_id: LeaseId, on_renew: Callable[[LeaseGrant], None] | None = None) -> KeepAlive:
        """Renew ``lease_id`` every ttl/3 on the client's loop thread while
        ``with client.keep_alive(lease.id) as keeper:`` lasts. ``on_renew``
        runs on that thread: keep it quick and do not call the client from it."""
        return KeepAlive(self._run, self._loop, self._async.keep_alive(lease_id, on_renew))

    def status(self, endpoint: str | None = None) -> NodeStatus:
        return self._run(self._async.status(endpoint))

    def status_all(self) -> dict[str, NodeStatus | Exception]:
        return self._run(self._async.status_all())

    def transfer_leadership(self, to: str | None = None) -> str:
        return self._run(self._async.transfer_leadership(to))

    def discover_leader(self) -> str | None:
        return self._run(self._async.discover_leader())
