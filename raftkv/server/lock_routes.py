"""HTTP routes for distributed locks and leader elections (docs/locks.md,
docs/api.md#locks-and-elections), etcd's v3lock and v3election recipes.

    POST   /v1/locks/{name}                  {"lease": ID} -> {"key", "fencing_token", "revision", "lease"}
    DELETE /v1/locks/{name}?key=K            release (delete the holder's key)
    POST   /v1/elections/{name}/campaign     {"lease": ID, "value": V} -> wait to become leader
    POST   /v1/elections/{name}/proclaim     {"key": K, "value": V}: new value, only by the leader
    GET    /v1/elections/{name}/leader       the leader's key and value
    GET    /v1/elections/{name}/observe      NDJSON/SSE stream: one message per leader change
    POST   /v1/elections/{name}/resign       {"key": K}: give up (delete the key)

A contender writes ``<prefix><name>/<lease id>`` with its lease (create if
absent, so a retry after a lost answer finds its own key) and owns the
lock once no key under ``<prefix><name>/`` has a lower create_revision. That
revision is the fencing token: it only grows from one holder to the next.
Waiting rides the watch hub's change waiters (no polling). The decision is
taken on this node's applied state: keys under a name are only ever created
with a higher revision than every older one, so "no lower key at revision R"
stays true once seen.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from aiohttp import web

from raftkv.kv import commands, leases
from raftkv.server.http_api import HttpApi, _check, _json_body, _method_not_allowed, _query, _raise_if_engine_failed
from raftkv.server.json_codec import decode_value, kv_to_json
from raftkv.server.params import parse_seconds
from raftkv.server.responses import ApiError, json_response
from raftkv.server.watch_routes import stream_format
from raftkv.watch.events import SSE

# Reserved prefixes, so lock and election keys never mix with application
# keys named like a lock (etcd uses the bare name; a prefix of our own keeps
# `raftkv get --prefix app/` listings clean and lets auth grant them apart).
LOCKS_PREFIX = "__locks/"
ELECTIONS_PREFIX = "__elections/"
MAX_NAME_BYTES = 256
# The longest a caller may ask a lock or campaign request to wait.
MAX_WAIT = 3600.0
# An observe stream writes a keep-alive this often when nothing changes, so
# proxies keep it open and a vanished client is noticed.
OBSERVE_PING = 15.0


def parse_name(text: str, what: str) -> str:
    if not text or "/" in text or len(text.encode("utf-8")) > MAX_NAME_BYTES:
        raise ApiError(
            400,
            "invalid_argument",
            f"a {what} name must be 1 to {MAX_NAME_BYTES} bytes without '/', got {text[:60]!r}",
        )
    return text


def _object(body: Any, allowed: set[str], required: set[str], example: str) -> dict[str, Any]:
    if type(body) is not dict:
        raise ApiError(400, "wrong_type", f"request body must be a JSON object like {example}")
    unknown = set(body) - allowed
    if unknown:
        raise ApiError(
            400,
            "unknown_field",
            f"unknown field(s): {', '.join(sorted(map(str, unknown)))}; allowed: {', '.join(sorted(allowed))}",
        )
    missing = required - set(body)
    if missing:
        raise ApiError(400, "missing_field", f"{', '.join(sorted(missing))} is required; example: {example}")
    return body


def _lease_field(body: dict[str, Any]) -> int:
    text = body["lease"]
    if type(text) is not str:
        raise ApiError(400, "wrong_type", "lease must be a lease id: a string of hex digits (POST /v1/leases)")
    lease_id = leases.parse_id(text)
    if lease_id is None:
        raise ApiError(400, "invalid_argument", f"lease must be 1 to 16 hex digits naming a lease, got {text[:40]!r}")
    return lease_id


def _key_field(text: Any, prefix: str, where: str) -> str:
    if type(text) is not str:
        raise ApiError(400, "wrong_type", f"{where} must be the key string returned when the lock or campaign succeeded")
    rest = text[len(prefix):]
    if not text.startswith(prefix) or not rest or "/" in rest:
        raise ApiError(400, "invalid_argument", f"{where} {text[:120]!r} is not a key under {prefix!r}")
    return text


class LockRoutes:
    def __init__(self, api: HttpApi) -> None:
        self.api = api

    # -- shared: create a contender key, wait to be first -------------------

    def _wait_bound(self, query: dict[str, str]) -> float | None:
        text = query.get("timeout")
        return None if text is None else parse_seconds(text, "timeout", 0.5, MAX_WAIT)

    async def _enter(self, prefix: str, lease_id: int, value: bytes, replace_value: bool) -> tuple[str, int, bool]:
        """Create ``prefix + lease`` with the lease unless it exists; returns
        the key, its create_revision, and whether this call created it."""
        key = prefix + leases.format_id(lease_id)
        result = await self.api._propose(
            commands.txn(
                [commands.compare(key, "create_revision", "==", 0)],
                [commands.txn_put(key, value, lease_id)],
                [commands.txn_get(key)],
            ),
            {},
        )
        if result["succeeded"]:
            return key, result["revision"], True
        existing = result["results"][0]["kv"]
        if existing is None:  # deleted between the compare and now: impossible in one txn
            raise ApiError(409, "conflict", f"key {key!r} changed during the request; retry")
        create_revision = existing["create_revision"]
        if replace_value and existing["value"] != value:
            await self.api._propose(
                commands.txn(
                    [commands.compare(key, "create_revision", "==", create_revision)],
                    [commands.txn_put(key, value, lease_id)],
                    [],
                ),
                {},
            )
        return key, create_revision, False

    def _contenders(self, prefix: str) -> tuple[list[dict[str, Any]], int]:
        api = self.api
        with api.engine.state_lock:
            kvs, _ = api.machine.range(prefix)
            revision = api.machine.revision
        kvs.sort(key=lambda kv: kv["create_revision"])
        return kvs, revision

    async def _wait_first(self, prefix: str, key: str, create_revision: int, bound: float | None) -> tuple[dict[str, Any], int]:
        """Wait until ``key`` has the lowest create_revision under ``prefix``."""
        api, hub = self.api, self.api.watch_hub
        if hub is None:
            raise ApiError(503, "unavailable", "this node has no watch hub")
        deadline = None if bound is None else time.monotonic() + bound
        while True:
            _raise_if_engine_failed(api.engine.failure)
            if hub.closed:
                raise ApiError(503, "shutting_down", "this node is stopping; retry on another node", headers={"Retry-After": "0"})
            kvs, revision = self._contenders(prefix)
            mine = next((kv for kv in kvs if kv["key"] == key), None)
            if mine is None or mine["create_revision"] != create_revision:
                if revision >= create_revision:
                    raise ApiError(
                        409,
                        "key_deleted",
                        f"{key!r} was deleted while waiting (its lease expired or was revoked, "
                        "or it was released or resigned)",
                    )
            elif kvs[0]["key"] == key:
                return mine, revision
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise _timed_out(key, kvs)
            # Registered before the first await inside: no change can slip
            # between the read above and the wait.
            await hub.wait_for_change(None, prefix, revision, 30.0 if remaining is None else remaining)

    async def _acquire(
        self, request: web.BaseRequest, prefix: str, lease_id: int, value: bytes, replace_value: bool
    ) -> tuple[dict[str, Any], int]:
        bound = self._wait_bound(_query(request, {"timeout"}))
        key, create_revision, created = await self._enter(prefix, lease_id, value, replace_value)
        try:
            return await self._wait_first(prefix, key, create_revision, bound)
        except BaseException as exc:
            if created and not (isinstance(exc, ApiError) and exc.code == "key_deleted"):
                # Leave no contender behind that nobody waits for (etcd's
                # Mutex.Lock does the same on a cancelled context).
                await asyncio.shield(self._delete_quietly(key))
            raise

    async def _delete_quietly(self, key: str) -> None:
        try:
            await self.api._propose(commands.delete(key), {})
        except ApiError:
            pass  # the lease removes it at the latest when it expires

    async def _release(self, key: str) -> web.Response:
        result = await self.api._propose(commands.delete(key), {})
        return json_response({"revision": result["revision"], "deleted": result["deleted"]})

    # -- locks ------------------------------------------------------------------

    async def locks(self, request: web.BaseRequest, rest: str) -> web.Response:
        name = parse_name(rest, "lock")
        prefix = f"{LOCKS_PREFIX}{name}/"
        if request.method == "POST":
            body = _object(await _json_body(request, self.api.limits), {"lease"}, {"lease"}, '{"lease": "<lease id>"}')
            lease_id = _lease_field(body)
            mine, revision = await self._acquire(request, prefix, lease_id, b"", replace_value=False)
            return json_response(
                {
                    "key": mine["key"],
                    "fencing_token": mine["create_revision"],
                    "lease": leases.format_id(lease_id),
                    "revision": revision,
                }
            )
        if request.method == "DELETE":
            query = _query(request, {"key", "timeout"})
            if "key" not in query:
                raise ApiError(400, "missing_field", "DELETE /v1/locks/{name} needs ?key=<the key the lock answered>")
            return await self._release(_key_field(query["key"], prefix, "key"))
        raise _method_not_allowed(request, ("POST", "DELETE"))

    # -- elections --------------------------------------------------------------

    async def elections(self, request: web.BaseRequest, rest: str) -> web.StreamResponse:
        text, _, action = rest.partition("/")
        name = parse_name(text, "election")
        prefix = f"{ELECTIONS_PREFIX}{name}/"
        methods = {"campaign": "POST", "proclaim": "POST", "resign": "POST", "leader": "GET", "observe": "GET"}
        if action not in methods:
            raise ApiError(
                404, "not_found", f"no such endpoint: /v1/elections/{rest}; actions: {', '.join(methods)}"
            )
        if request.method != methods[action] and not (methods[action] == "GET" and request.method == "HEAD"):
            raise _method_not_allowed(request, (methods[action],))
        if action == "campaign":
            return await self.campaign(request, prefix)
        if action == "proclaim":
            return await self.proclaim(request, prefix)
        if action == "resign":
            body = _object(await _json_body(request, self.api.limits), {"key"}, {"key"}, '{"key": "<campaign key>"}')
            _query(request, {"timeout"})
            return await self._release(_key_field(body["key"], prefix, "key"))
        if action == "leader":
            return await self.leader(request, prefix, name)
        return await self.observe(request, prefix)

    async def campaign(self, request: web.BaseRequest, prefix: str) -> web.Response:
        body = _object(
            await _json_body(request, self.api.limits),
            {"lease", "value", "encoding"},
            {"lease", "value"},
            '{"lease": "<lease id>", "value": "node-1"}',
        )
        lease_id = _lease_field(body)
        value = _check(decode_value, body, "body", self.api.limits)
        mine, revision = await self._acquire(request, prefix, lease_id, value, replace_value=True)
        return json_response({"key": mine["key"], "create_revision": mine["create_revision"], "revision": revision})

    async def proclaim(self, request: web.BaseRequest, prefix: str) -> web.Response:
        query = _query(request, {"timeout"})
        body = _object(
            await _json_body(request, self.api.limits),
            {"key", "value", "encoding"},
            {"key", "value"},
            '{"key": "<campaign key>", "value": "node-1"}',
        )
        key = _key_field(body["key"], prefix, "key")
        value = _check(decode_value, body, "body", self.api.limits)
        await self.api._read_fence(query)
        kvs, _ = self._contenders(prefix)
        if not kvs or kvs[0]["key"] != key:
            raise _not_leader(key)
        leader = kvs[0]
        result = await self.api._propose(
            commands.txn(
                [commands.compare(key, "create_revision", "==", leader["create_revision"])],
                [commands.txn_put(key, value, leader.get("lease", 0))],
                [],
            ),
            query,
        )
        if not result["succeeded"]:
            raise _not_leader(key)
        return json_response({"revision": result["revision"], "kv": kv_to_json(result["results"][0]["kv"])})

    async def leader(self, request: web.BaseRequest, prefix: str, name: str) -> web.Response:
        await self.api._read_fence(_query(request, {"consistency", "timeout"}))
        kvs, revision = self._contenders(prefix)
        if not kvs:
            raise ApiError(404, "no_leader_elected", f"election {name!r} has no leader (no campaigner)", revision=revision)
        return json_response({"revision": revision, "kv": kv_to_json(kvs[0])})

    async def observe(self, request: web.BaseRequest, prefix: str) -> web.StreamResponse:
        api, hub = self.api, self.api.watch_hub
        query = _query(request, {"consistency", "timeout"})
        fmt = stream_format(request.headers.get("Accept"))
        if hub is None or hub.closed:
            raise ApiError(503, "shutting_down", "this node is stopping; observe on another node", headers={"Retry-After": "0"})
        await api._read_fence(query)
        headers = {
            "Content-Type": "text/event-stream; charset=utf-8" if fmt == SSE else "application/x-ndjson",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
        if request.method == "HEAD":
            return web.Response(headers=headers)
        response = web.StreamResponse(headers=headers)
        await response.prepare(request)
        last: tuple[str, int] | None | bool = False  # False: nothing sent yet
        try:
            while not hub.closed and api.engine.failure is None:
                kvs, revision = self._contenders(prefix)
                now = (kvs[0]["key"], kvs[0]["mod_revision"]) if kvs else None
                if now != last:
                    message = {"revision": revision, "kv": kv_to_json(kvs[0]) if kvs else None}
                    await response.write(_frame(fmt, message, revision))
                    last = now
                changed = await hub.wait_for_change(None, prefix, revision, OBSERVE_PING)
                if not changed:
                    await response.write(b": ping\n\n" if fmt == SSE else b"\n")
            await response.write_eof()
        except ConnectionError:
            pass  # the observer went away
        return response


def _frame(fmt: str, message: dict[str, Any], revision: int) -> bytes:
    data = orjson.dumps(message)
    if fmt == SSE:
        return b"id: %d\nevent: leader\ndata: %s\n\n" % (revision, data)
    return data + b"\n"


def _timed_out(key: str, kvs: list[dict[str, Any]]) -> ApiError:
    holder = kvs[0]["key"] if kvs else None
    return ApiError(
        409,
        "lock_timeout",
        f"not first within the timeout; {key!r} was withdrawn (holder now: {holder!r})",
        holder=holder,
    )


def _not_leader(key: str) -> ApiError:
    return ApiError(409, "not_leader", f"{key!r} is not the election's leader (it resigned, expired or never led)")


def install(api: HttpApi) -> LockRoutes:
    """Needs the watch hub: install after raftkv.server.watch_routes."""
    routes = LockRoutes(api)
    api.add_subtree("/v1/locks/", routes.locks)
    api.add_subtree("/v1/elections/", routes.elections)
    return routes
