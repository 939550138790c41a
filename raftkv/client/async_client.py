"""AsyncClient: the raftkv HTTP API over aiohttp, with leader discovery,
failover, retries and per-write idempotency keys."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from yarl import URL

from raftkv.client.attempts import SingleAttempt
from raftkv.client.discovery import leader_endpoint
from raftkv.client.errors import (
    ClientError,
    InvalidResponse,
    NotFound,
    OutcomeUnknown,
    PreconditionFailed,
    RequestRejected,
    ResultExpired,
    TLSFailure,
    Unavailable,
)
from raftkv.client.leases import (
    AsyncKeepAlive,
    LeaseGrant,
    LeaseId,
    LeaseInfo,
    RevokeResult,
    check_ttl,
    lease_id_text,
    parse_grant,
    parse_info,
    parse_revoke,
    random_lease_id,
)
from raftkv.client.leases import parse_list as parse_lease_list
from raftkv.client.models import (
    DeleteResult,
    GetResult,
    KeyValue,
    ListResult,
    NodeStatus,
    PutResult,
    TxnResult,
    parse_delete,
    parse_error,
    parse_get,
    parse_list,
    parse_put,
    parse_status,
    parse_txn,
)
from raftkv.client.retry import (
    EndpointSelector,
    Failure,
    STALE_TOKEN_CODES,
    RequestKind,
    backoff_delay,
    failure_for_answer,
    is_retryable,
    may_have_applied,
    normalize_endpoint,
    parse_retry_after,
)
from raftkv.client.tls import FilePath, client_ssl_context, is_tls_failure, tls_error_text, tls_failure_hint
from raftkv.client.txn import Compare, Op, txn_body
from raftkv.client.values import key_path, to_bytes

CONSISTENCY_LEVELS = ("linearizable", "serializable")
SERVER_MAX_TIMEOUT = 60.0
# The HTTP timeout exceeds the server-side ?timeout= by a quarter (at most
# 1 s), so the server's definite 503/504 arrives before we give up and must
# guess whether a write happened.
MAX_RESPONSE_GRACE = 1.0
DISCOVERY_TIMEOUT = 1.0
# How long to wait before asking every node "who leads?" again after failing
# to find out; during an election every answer is "nobody".
DISCOVERY_INTERVAL = 0.5


@dataclass(frozen=True)
class RawResponse:
    endpoint: str
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            raise InvalidResponse(
                f"{self.endpoint} answered {self.status} with a body that is not JSON: {self.body[:200]!r}"
            ) from None

    @property
    def replayed(self) -> bool:
        return self.headers.get("Idempotency-Replayed", "").lower() == "true"


def _check_consistency(consistency: str) -> str:
    if consistency not in CONSISTENCY_LEVELS:
        raise ValueError(f"consistency must be 'linearizable' or 'serializable', not {consistency!r}")
    return consistency


def _check_revision(name: str, value: int | None) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    return value


def _write_headers(
    idempotency_key: str, if_mod_revision: int | None, if_absent: bool
) -> dict[str, str]:
    headers = {"Idempotency-Key": idempotency_key}
    if if_mod_revision is not None:
        headers["If-Match"] = f'"{if_mod_revision}"'
    if if_absent:
        headers["If-None-Match"] = "*"
    return headers


def new_idempotency_key() -> str:
    return uuid.uuid4().hex


class AsyncClient:
    """Talks to a raftkv cluster through any of its HTTP endpoints.

    ``timeout`` bounds each attempt (the server is asked to answer within it);
    ``retries`` is how many extra attempts a request gets after a retryable
    failure. Every write carries an Idempotency-Key that stays the same across
    its retries, so a retry after a lost response never applies it twice.
    """

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
        """``user`` and ``password``: for a cluster with auth enabled; the
        client trades them for a token and gets a new one when it expires.
        ``ca_file``: the PEM CA to trust for https:// endpoints (default: the
        system's); ``cert_file``/``key_file``: the client certificate for a
        node started with --client-ca-file."""
        if isinstance(endpoints, str):
            raise TypeError("endpoints must be a list of URLs, not one string")
        if not endpoints:
            raise ValueError("at least one endpoint is required")
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0, got {timeout!r}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries!r}")
        if backoff_base < 0 or backoff_max < 0:
            raise ValueError("backoff_base and backoff_max must be >= 0")
        if (user is None) != (password is None):
            raise ValueError("give both user and password, or neither")
        self._credentials = None if user is None or password is None else (user, password)
        # Built now so that a missing or bad file fails here, before any request.
        self.ssl_context = client_ssl_context(ca_file, cert_file, key_file)
        self._token: str | None = None  # "" once the cluster said auth is off
        self._auth_lock: asyncio.Lock | None = None
        self.endpoints = [normalize_endpoint(e) for e in endpoints]
        self.timeout = float(timeout)
        self.retries = retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._selector = EndpointSelector(self.endpoints)
        self._session: aiohttp.ClientSession | None = None
        self._next_discovery = 0.0
        self._discovery_lock: asyncio.Lock | None = None
        self._node_endpoints: dict[str, str] = {}  # node id -> endpoint, from statuses

    # -- lifecycle ---------------------------------------------------------

    async def __aenter__(self) -> AsyncClient:
        self._get_session()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                # ssl=True: the system's trust (SSL_CERT_FILE included).
                connector=aiohttp.TCPConnector(limit=64, ssl=self.ssl_context or True),
                json_serialize=lambda o: orjson.dumps(o).decode(),
            )
        return self._session

    @property
    def leader_endpoint(self) -> str | None:
        """The endpoint believed to be the leader, if known."""
        return self._selector.leader

    # -- key-value API -----------------------------------------------------

    async def get(self, key: str, consistency: str = "linearizable") -> KeyValue | None:
        """The key's value and metadata, or None when it does not exist."""
        result = await self.get_with_revision(key, consistency)
        return None if result is None else result.kv

    async def get_with_revision(self, key: str, consistency: str = "linearizable") -> GetResult | None:
        """Like :meth:`get`, plus the store revision the read was served at."""
        path = key_path(key)
        params = {"consistency": _check_consistency(consistency)}
        resp = await self._request("GET", path, RequestKind.READ, params=params)
        if resp.status == 404:
            code, message, details = parse_error(resp.status, _json_or_none(resp))
            if code == "key_not_found":
                return None
            raise RequestRejected(404, code, message, details)
        self._raise_for_status(resp)
        return parse_get(key, resp.headers, resp.body)

    async def put(
        self,
        key: str,
        value: bytes | str,
        if_mod_revision: int | None = None,
        if_absent: bool = False,
        idempotency_key: str | None = None,
        lease: LeaseId | None = None,
    ) -> PutResult:
        """Write a value. ``if_mod_revision`` makes it a compare-and-set
        (0 never matches an existing key); ``if_absent`` makes it create-only;
        ``lease`` attaches the key to that lease (it goes when the lease does;
        a put without it detaches the key). Raises PreconditionFailed when the
        condition does not hold, NotFound when the lease does not exist."""
        path = key_path(key)
        data = to_bytes(value)
        _check_revision("if_mod_revision", if_mod_revision)
        params = {} if lease is None else {"lease": lease_id_text(lease)}
        ikey = idempotency_key or new_idempotency_key()
        resp = await self._request(
            "PUT",
            path,
            RequestKind.WRITE,
            params=params,
            body=data,
            headers=_write_headers(ikey, if_mod_revision, if_absent),
            idempotency_key=ikey,
        )
        self._raise_for_status(resp, ikey)
        return parse_put(resp.json(), value=data, replayed=resp.replayed)

    async def delete(
        self,
        key: str,
        if_mod_revision: int | None = None,
        idempotency_key: str | None = None,
    ) -> DeleteResult:
        """Delete one key. Raises NotFound when it does not exist and
        PreconditionFailed when ``if_mod_revision`` does not match."""
        path = key_path(key)
        _check_revision("if_mod_revision", if_mod_revision)
        ikey = idempotency_key or new_idempotency_key()
        resp = await self._request(
            "DELETE",
            path,
            RequestKind.WRITE,
            headers=_write_headers(ikey, if_mod_revision, False),
            idempotency_key=ikey,
        )
        self._raise_for_status(resp, ikey)
        return parse_delete(resp.json(), replayed=resp.replayed)

    async def list(
        self,
        prefix: str = "",
        limit: int | None = None,
        start_after: str | None = None,
        keys_only: bool = False,
        consistency: str = "linearizable",
    ) -> ListResult:
        """Keys starting with ``prefix`` in key order; ``more`` says whether
        the page was cut by ``limit`` (continue with ``start_after``)."""
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be str, not {type(prefix).__name__}")
        params: dict[str, str] = {"prefix": prefix, "consistency": _check_consistency(consistency)}
        if limit is not None:
            if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
                raise ValueError(f"limit must be a positive int, got {limit!r}")
            params["limit"] = str(limit)
        if start_after is not None:
            params["start_after"] = start_after
        if keys_only:
            params["keys_only"] = "true"
        resp = await self._request("GET", "/v1/kv", RequestKind.READ, params=params)
        self._raise_for_status(resp)
        return parse_list(resp.json())

    async def delete_prefix(self, prefix: str, idempotency_key: str | None = None) -> DeleteResult:
        """Delete every key starting with ``prefix`` ("" deletes everything)."""
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be str, not {type(prefix).__name__}")
        ikey = idempotency_key or new_idempotency_key()
        resp = await self._request(
            "DELETE",
            "/v1/kv",
            RequestKind.WRITE,
            params={"prefix": prefix},
            headers={"Idempotency-Key": ikey},
            idempotency_key=ikey,
        )
        self._raise_for_status(resp, ikey)
        return parse_delete(resp.json(), replayed=resp.replayed)

    async def txn(
        self,
        compare: Sequence[Compare | Mapping[str, Any]] = (),
        success: Sequence[Op | Mapping[str, Any]] = (),
        failure: Sequence[Op | Mapping[str, Any]] = (),
        idempotency_key: str | None = None,
    ) -> TxnResult:
        """Atomically: if every compare holds run ``success``, else ``failure``."""
        body = orjson.dumps(txn_body(list(compare), list(success), list(failure)))
        ikey = idempotency_key or new_idempotency_key()
        resp = await self._request(
            "POST",
            "/v1/txn",
            RequestKind.WRITE,
            body=body,
            headers={"Idempotency-Key": ikey, "Content-Type": "application/json"},
            idempotency_key=ikey,
        )
        self._raise_for_status(resp, ikey)
        return parse_txn(resp.json(), replayed=resp.replayed)

    # -- leases (docs/leases.md) ---------------------------------------------

    async def lease_grant(self, ttl: int, lease_id: LeaseId | None = None) -> LeaseGrant:
        """A new lease that lives ``ttl`` seconds unless renewed. Without
        ``lease_id`` the client picks a random one, so a grant resent after a
        lost answer finds the lease it made; a chosen id that exists already
        raises RequestRejected 409 ``lease_exists``."""
        chosen = lease_id is not None
        text = lease_id_text(lease_id) if chosen else random_lease_id()
        body = orjson.dumps({"ttl": check_ttl(ttl), "id": text})
        resp = await self._request(
            "POST", "/v1/leases", RequestKind.WRITE, body=body, headers={"Content-Type": "application/json"}
        )
        if resp.status == 409 and not chosen and parse_error(409, _json_or_none(resp))[0] == "lease_exists":
            # Our own earlier attempt applied; its answer was lost.
            info = await self.lease_info(text)
            return LeaseGrant(id=text, ttl=info.ttl, revision=info.revision)
        self._raise_for_status(resp)
        return parse_grant(resp.json())

    async def lease_keepalive(self, lease_id: LeaseId) -> LeaseGrant:
        """Renew a lease: it lives its full TTL again from the leader's now.
        Raises NotFound (code ``lease_not_found``) when it expired or was revoked."""
        text = lease_id_text(lease_id)
        # Renewing twice does no harm, so a resend is safe.
        resp = await self._request("POST", f"/v1/leases/{text}/keepalive", RequestKind.WRITE)
        self._raise_for_status(resp)
        return parse_grant(resp.json(), "keepalive response")

    async def lease_revoke(self, lease_id: LeaseId) -> RevokeResult:
        """End a lease now and delete its keys (at one revision). Raises
        NotFound when there is no such lease (a revoke resent after a lost
        answer may see its own work that way)."""
        text = lease_id_text(lease_id)
        resp = await self._request("DELETE", f"/v1/leases/{text}", RequestKind.WRITE)
        self._raise_for_status(resp)
        return parse_revoke(resp.json())

    async def lease_info(self, lease_id: LeaseId, consistency: str = "linearizable") -> LeaseInfo:
        """A lease's TTL, remaining seconds and keys; NotFound when it does not exist."""
        text = lease_id_text(lease_id)
        params = {"consistency": _check_consistency(consistency)}
        resp = await self._request("GET", f"/v1/leases/{text}", RequestKind.READ, params=params)
        self._raise_for_status(resp)
        return parse_info(resp.json())

    async def leases(self, consistency: str = "linearizable") -> list[LeaseInfo]:
        """Every live lease, in id order (``keys`` is None in these)."""
        params = {"consistency": _check_consistency(consistency)}
        resp = await self._request("GET", "/v1/leases", RequestKind.READ, params=params)
        self._raise_for_status(resp)
        return parse_lease_list(resp.json())

    def keep_alive(
        self, lease_id: LeaseId, on_renew: Callable[[LeaseGrant], None] | None = None
    ) -> AsyncKeepAlive:
        """Renew ``lease_id`` every ttl/3 in a task while ``async with`` lasts:
        ``async with client.keep_alive(lease.id) as keeper: ...``; see AsyncKeepAlive."""
        return AsyncKeepAlive(self, lease_id, on_renew)

    # -- cluster API -------------------------------------------------------

    async def status(self, endpoint: str | None = None) -> NodeStatus:
        """Status of one node: ``endpoint`` if given (no failover), else the
        first node that answers, leader first."""
        if endpoint is not None:
            resp = await self._send_once(normalize_endpoint(endpoint), "GET", "/v1/status")
            self._raise_for_status(resp)
            return parse_status(resp.json(), resp.endpoint)
        resp = await self._request("GET", "/v1/status", RequestKind.READ)
        self._raise_for_status(resp)
        return parse_status(resp.json(), resp.endpoint)

    async def status_all(self) -> dict[str, NodeStatus | Exception]:
        """Every endpoint's status, or the error that prevented getting it."""
        results = await asyncio.gather(
            *(self._status_quick(e, self.timeout) for e in self.endpoints), return_exceptions=True
        )
        out: dict[str, NodeStatus | Exception] = {}
        for endpoint, result in zip(self.endpoints, results):
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result
            out[endpoint] = result
        self._learn_leader([r for r in out.values() if isinstance(r, NodeStatus)])
        return out

    async def transfer_leadership(self, to: str | None = None) -> str:
        """Ask the cluster to hand leadership to node ``to`` (any caught-up
        voter when None); returns the new leader's node id."""
        body = orjson.dumps({} if to is None else {"to": to})
        for _ in range(2):
            resp = await self._request(
                "POST",
                "/v1/leadership/transfer",
                RequestKind.CONTROL,
                body=body,
                headers={"Content-Type": "application/json"},
            )
            if resp.status != 409 or parse_error(409, _json_or_none(resp))[0] != "not_leader":
                break
            # Only the leader can hand over; our idea of who leads was stale.
            self._selector.forget_leader()
            if await self.discover_leader() is None:
                break
        self._raise_for_status(resp)
        obj = resp.json()
        leader_id = obj.get("leader_id") if isinstance(obj, dict) else None
        if not isinstance(leader_id, str):
            raise InvalidResponse(f"transfer response lacks a string 'leader_id': {obj!r}")
        # The old leader is no longer the leader; find the new one next time.
        self._selector.forget_leader()
        self._next_discovery = 0.0
        return leader_id

    async def discover_leader(self) -> str | None:
        """Ask every endpoint who leads; remember and return the leader's endpoint.

        Returns as soon as the answers so far name the leader, so one paused
        or black-holed node does not delay every discovery by the timeout.
        """
        tasks = [asyncio.ensure_future(self._status_quick(e, DISCOVERY_TIMEOUT)) for e in self.endpoints]
        seen: list[NodeStatus] = []
        leader: str | None = None
        try:
            for next_done in asyncio.as_completed(tasks):
                try:
                    seen.append(await next_done)
                except (ClientError, aiohttp.ClientError, asyncio.TimeoutError, OSError):
                    continue
                leader = self._learn_leader(seen)
                if leader is not None:
                    break
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return leader

    def _learn_leader(self, statuses: list[NodeStatus]) -> str | None:
        for s in statuses:
            self._node_endpoints[s.node_id] = s.endpoint
        leader = leader_endpoint(statuses, self._node_endpoints)
        if leader is not None:
            self._selector.mark_leader(leader)
        return leader

    async def _status_quick(self, endpoint: str, timeout: float) -> NodeStatus:
        resp = await self._send_once(endpoint, "GET", "/v1/status", timeout=timeout)
        self._raise_for_status(resp)
        return parse_status(resp.json(), endpoint)

    async def _maybe_discover(self) -> None:
        if self._selector.leader is not None or time.monotonic() < self._next_discovery:
            return
        if self._discovery_lock is None:
            self._discovery_lock = asyncio.Lock()
        async with self._discovery_lock:
            # Another task may have found the leader while we waited.
            if self._selector.leader is not None or time.monotonic() < self._next_discovery:
                return
            if await self.discover_leader() is None:
                self._next_discovery = time.monotonic() + DISCOVERY_INTERVAL

    async def _send_once(
        self,
        endpoint: str,
        method: str,
        path: str,
        params: Mapping[str, str] | None = None,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        attempt: SingleAttempt | None = None,
    ) -> RawResponse:
        """One HTTP exchange, never re-sent by aiohttp (see attempts.py).
        Connection-level errors propagate as aiohttp / asyncio exceptions for
        the caller to classify with ``attempt``."""
        t = self.timeout if timeout is None else timeout
        if self._token:
            headers = {**(headers or {}), "Authorization": f"Bearer {self._token}"}
        query = dict(params or {})
        query["timeout"] = f"{min(t, SERVER_MAX_TIMEOUT):g}"
        url = URL(endpoint + path, encoded=True).update_query(query)
        client_timeout = aiohttp.ClientTimeout(total=t + min(MAX_RESPONSE_GRACE, t / 4), sock_connect=min(t, 2.0))
        async with self._get_session().request(
            method,
            url,
            data=body,
            headers=headers,
            timeout=client_timeout,
            allow_redirects=False,
            middlewares=(attempt or SingleAttempt(),),
        ) as resp:
            data = await resp.read()
            return RawResponse(endpoint, resp.status, resp.headers, data)

    async def _request(
        self,
        method: str,
        path: str,
        kind: RequestKind,
        params: Mapping[str, str] | None = None,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> RawResponse:
        """Send with failover and retries; returns the first definite answer
        (any status but 5xx) or raises Unavailable / OutcomeUnknown. With
        credentials, sends a token, and a new one after a 401 for a stale
        token: a 401 comes before anything is applied, so resending is safe."""
        if self._credentials is None:
            return await self._request_failover(method, path, kind, params, body, headers, idempotency_key)
        if self._token is None:
            await self._authenticate(None)
        used = self._token
        resp = await self._request_failover(method, path, kind, params, body, headers, idempotency_key)
        if resp.status == 401 and parse_error(401, _json_or_none(resp))[0] in STALE_TOKEN_CODES:
            await self._authenticate(used)
            resp = await self._request_failover(method, path, kind, params, body, headers, idempotency_key)
        return resp

    async def _authenticate(self, stale: str | None) -> None:
        """Get a token unless another request got a newer one than ``stale``."""
        assert self._credentials is not None
        if self._auth_lock is None:
            self._auth_lock = asyncio.Lock()
        async with self._auth_lock:
            if self._token is not None and self._token != stale:
                return
            user, password = self._credentials
            resp = await self._request_failover(
                "POST",
                "/v1/auth/authenticate",
                RequestKind.READ,
                body=orjson.dumps({"name": user, "password": password}),
                headers={"Content-Type": "application/json"},
            )
            if resp.status == 409 and parse_error(409, _json_or_none(resp))[0] == "auth_not_enabled":
                self._token = ""  # none needed; a later 401 makes us ask again
                return
            self._raise_for_status(resp)
            self._token = str(resp.json()["token"])

    async def _request_failover(
        self,
        method: str,
        path: str,
        kind: RequestKind,
        params: Mapping[str, str] | None = None,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> RawResponse:
        await self._maybe_discover()
        maybe_applied = False
        last_error = "no attempt made"
        tls_failed: set[str] = set()  # endpoints whose handshake failed in this request
        order = self._selector.order()
        for attempt in range(self.retries + 1):
            endpoint = self._selector.pick(attempt, order)
            retry_after: float | None = None
            attempt_record = SingleAttempt()
            try:
                resp = await self._send_once(
                    endpoint, method, path, params, body, headers, attempt=attempt_record
                )
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                if attempt_record.proves_not_sent(exc) and is_tls_failure(exc):
                    tls_failed.add(endpoint)
                    failure, last_error = Failure.NOT_SENT, f"{endpoint}: TLS handshake failed: {tls_error_text(exc)}"
                elif attempt_record.proves_not_sent(exc):
                    failure, last_error = Failure.NOT_SENT, f"{endpoint}: cannot connect ({exc})"
                else:
                    failure = Failure.LOST
                    last_error = f"{endpoint}: {type(exc).__name__}: {exc or 'no response in time'}"
                self._selector.mark_failed(endpoint, time.monotonic())
            else:
                # Only error answers are parsed: a 200's body may be a 1 MiB value.
                code, message = "", ""
                if resp.status >= 400:
                    code, message, _ = parse_error(resp.status, _json_or_none(resp))
                failure = failure_for_answer(resp.status, code)
                if failure is None:
                    self._selector.mark_ok(endpoint)
                    return resp
                last_error = f"{endpoint}: {resp.status} {code}: {message}"
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                if failure is Failure.NO_LEADER:
                    self._selector.forget_leader()
            if kind is not RequestKind.READ and may_have_applied(failure):
                maybe_applied = True
            if not is_retryable(kind, failure) or attempt == self.retries:
                break
            if tls_failed.issuperset(self.endpoints):
                break  # a certificate does not change between attempts
            await asyncio.sleep(
                backoff_delay(attempt, self.backoff_base, self.backoff_max, retry_after=retry_after)
            )
            if self._selector.leader is None:
                await self._maybe_discover()
        if maybe_applied:
            raise OutcomeUnknown(
                f"{method} {path}: the write was sent but no definite answer arrived, so it may or "
                f"may not have been applied; retry only with idempotency key {idempotency_key!r} "
                f"(last error: {last_error})",
                idempotency_key,
            )
        if tls_failed.issuperset(self.endpoints):
            raise TLSFailure(
                f"{method} {path}: the TLS handshake failed with every endpoint, nothing was sent: "
                f"{tls_failure_hint(last_error)} (last error: {last_error})",
                last_error,
            )
        raise Unavailable(
            f"{method} {path}: no node could serve the request after {attempt + 1} attempt(s); "
            f"nothing was applied (last error: {last_error})",
            last_error,
        )

    @staticmethod
    def _raise_for_status(resp: RawResponse, idempotency_key: str | None = None) -> None:
        if 200 <= resp.status < 300:
            return
        code, message, details = parse_error(resp.status, _json_or_none(resp))
        if code == "idempotency_result_expired":
            raise ResultExpired(message, idempotency_key)
        if resp.status == 412 or code == "precondition_failed":
            mod_revision = details.get("mod_revision")
            if not isinstance(mod_revision, int):
                raise InvalidResponse(f"412 response lacks an integer 'mod_revision': {details!r}")
            raise PreconditionFailed(message, mod_revision, details)
        if resp.status == 404:
            raise NotFound(404, code, message, details)
        raise RequestRejected(resp.status, code, message, details)


def _json_or_none(resp: RawResponse) -> Any:
    try:
        return orjson.loads(resp.body)
    except orjson.JSONDecodeError:
        return resp.body[:200].decode("utf-8", "replace")


__all__ = ["AsyncClient", "new_idempotency_key"]
