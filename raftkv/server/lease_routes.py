"""HTTP routes for leases (docs/api.md#leases, docs/leases.md).

    POST   /v1/leases                 {"ttl": S[, "id": HEX]} -> {"id", "ttl", "revision"}
    GET    /v1/leases                 every live lease
    GET    /v1/leases/{id}            ttl, remaining seconds, keys
    POST   /v1/leases/{id}/keepalive  renew: the full TTL again, from now
    DELETE /v1/leases/{id}            revoke: the lease and all its keys go, at one revision

Grant, keepalive and revoke are logged commands, so any node takes them
(a follower's proposal goes to the leader) and the leader's keeper sees
every renewal when it applies it.
"""

from __future__ import annotations

import secrets
from typing import Any

from aiohttp import web

from raftkv.kv import leases
from raftkv.server.http_api import HttpApi, _json_body, _method_not_allowed, _query
from raftkv.server.lease_keeper import LeaseKeeper
from raftkv.server.responses import ApiError, json_response

_GRANT_FIELDS = frozenset({"ttl", "id"})


def parse_lease_id(text: str, field: str = "lease id") -> int:
    lease_id = leases.parse_id(text)
    if lease_id is None:
        raise ApiError(
            400,
            "invalid_argument",
            f"{field} must be 1 to 16 hex digits naming a lease from 1 to 7fffffffffffffff, got {text[:40]!r}",
        )
    return lease_id


def parse_ttl(value: Any, field: str = "ttl") -> int:
    if type(value) is float and value.is_integer():
        value = int(value)  # JSON counts 3.0 as the integer 3
    if type(value) is not int or not 1 <= value <= leases.MAX_TTL:
        raise ApiError(
            400, "invalid_argument", f"{field} must be a whole number of seconds from 1 to {leases.MAX_TTL}, got {value!r}"
        )
    return value


class LeaseRoutes:
    def __init__(self, api: HttpApi, keeper: LeaseKeeper) -> None:
        self.api = api
        self.keeper = keeper

    async def grant(self, request: web.BaseRequest) -> web.Response:
        query = _query(request, {"timeout"})
        body = await _json_body(request, self.api.limits)
        if type(body) is not dict:
            raise ApiError(400, "wrong_type", 'request body must be a JSON object like {"ttl": 10}')
        unknown = set(body) - _GRANT_FIELDS
        if unknown:
            raise ApiError(
                400, "unknown_field", f"unknown field(s): {', '.join(sorted(map(str, unknown)))}; allowed: id, ttl"
            )
        if "ttl" not in body:
            raise ApiError(400, "missing_field", "ttl is required (seconds)")
        ttl = parse_ttl(body["ttl"])
        if "id" in body:
            if type(body["id"]) is not str:
                raise ApiError(400, "wrong_type", "id must be a string of hex digits")
            lease_id = parse_lease_id(body["id"], "id")
        else:
            # Random, as etcd's server picks them: ids of different clusters
            # and of revoked leases are not confused, and a lock key named
            # after its lease is unique.
            lease_id = secrets.randbits(63) or 1
        result = await self.api._propose(leases.grant(lease_id, ttl), query)
        return json_response({"id": leases.format_id(lease_id), "ttl": ttl, "revision": result["revision"]})

    async def list_leases(self, request: web.BaseRequest) -> web.Response:
        query = _query(request, {"consistency", "timeout"})
        await self.api._read_fence(query)
        with self.api.engine.state_lock:
            txn = self.api.machine.store.read()
            try:
                found = list(leases.all_leases(txn))
            finally:
                txn.close()
            revision = self.api.machine.revision
        return json_response(
            {"revision": revision, "leases": [self._lease_json(lease_id, ttl) for lease_id, ttl, _ in found]}
        )

    def _lease_json(self, lease_id: int, ttl: int) -> dict[str, Any]:
        remaining = self.keeper.remaining(lease_id)
        return {
            "id": leases.format_id(lease_id),
            "ttl": ttl,
            "remaining": ttl if remaining is None else round(remaining, 3),
        }

    async def subtree(self, request: web.BaseRequest, rest: str) -> web.Response:
        text, _, action = rest.partition("/")
        method = request.method
        if action == "keepalive":
            if method != "POST":
                raise _method_not_allowed(request, ("POST",))
            return await self.keepalive(request, parse_lease_id(text))
        if action or "/" in rest:
            raise ApiError(404, "not_found", f"no such endpoint: /v1/leases/{rest}")
        if method in ("GET", "HEAD"):
            return await self.show(request, parse_lease_id(text))
        if method == "DELETE":
            return await self.revoke(request, parse_lease_id(text))
        raise _method_not_allowed(request, ("GET", "DELETE"))

    async def show(self, request: web.BaseRequest, lease_id: int) -> web.Response:
        query = _query(request, {"consistency", "timeout"})
        await self.api._read_fence(query)
        with self.api.engine.state_lock:
            txn = self.api.machine.store.read()
            try:
                found = leases.lease_record(txn, lease_id)
                keys = leases.keys_of(txn, lease_id) if found is not None else []
            finally:
                txn.close()
            revision = self.api.machine.revision
        if found is None:
            raise _not_found(lease_id)
        return json_response({**self._lease_json(lease_id, found[0]), "keys": sorted(keys), "revision": revision})

    async def keepalive(self, request: web.BaseRequest, lease_id: int) -> web.Response:
        query = _query(request, {"timeout"})
        await _json_body(request, self.api.limits, empty={})  # a body, if any, is not read
        result = await self.api._propose(leases.keepalive(lease_id), query)
        return json_response({"id": leases.format_id(lease_id), "ttl": result["ttl"], "revision": result["revision"]})

    async def revoke(self, request: web.BaseRequest, lease_id: int) -> web.Response:
        query = _query(request, {"timeout"})
        result = await self.api._propose(leases.revoke(lease_id), query)
        return json_response(
            {"id": leases.format_id(lease_id), "deleted": result["deleted"], "revision": result["revision"]}
        )


def _not_found(lease_id: int) -> ApiError:
    return ApiError(
        404,
        "lease_not_found",
        f"lease {leases.format_id(lease_id)} does not exist (it expired, was revoked or never existed)",
    )


def install(api: HttpApi, keeper: LeaseKeeper) -> LeaseRoutes:
    routes = LeaseRoutes(api, keeper)
    api.add_route("/v1/leases", "POST", routes.grant)
    api.add_route("/v1/leases", "GET", routes.list_leases)
    api.add_subtree("/v1/leases/", routes.subtree)
    return routes
