"""/v1/auth: authenticate, users, roles and the auth switch (docs/auth.md).

Every change is a logged command (raftkv/kv/auth_state.py), so users and
roles reach every node and survive restarts. Passwords are hashed here,
before proposing, in a thread: scrypt takes a tenth of a second of CPU and
32 MiB, so at most ``_KDF_SLOTS`` run at once per node and the event loop
never waits on one.

Who may call these routes is the request guard's business
(raftkv/server/auth_policy.py): authenticate and status are open, the rest
need the root role once auth is on.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from typing import Any

from aiohttp import web

from raftkv.auth import passwords, tokens
from raftkv.kv import auth_state, leases
from raftkv.kv.auth_state import PERMISSIONS, AuthView
from raftkv.server.auth_policy import AuthPolicy
from raftkv.server.http_api import HttpApi, _check, _json_body, _method_not_allowed, _query
from raftkv.server.json_codec import parse_txn, validate_prefix
from raftkv.server.responses import ApiError, json_response

# Concurrent password hashes or checks per node (each holds 32 MiB).
_KDF_SLOTS = 2
SIGNING_KEY_BYTES = 32
# User and role names over HTTP (api/openapi.yaml has the same pattern): a
# path segment as typed, never needing percent-encoding; the state machine
# itself takes any printable name up to auth_state.MAX_NAME_CHARS.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}\Z")
# Auth command errors that mean "no such thing" rather than a conflict.
_NOT_FOUND = frozenset({"user_not_found", "role_not_found", "role_not_granted", "permission_not_granted"})


def install(api: HttpApi, token_ttl: float = tokens.DEFAULT_TTL) -> AuthRoutes:
    """Route /v1/auth and guard every request of ``api`` with the auth policy."""
    routes = AuthRoutes(api, token_ttl)
    policy = AuthPolicy(api.machine, routes.parse_txn_body, routes.lease_keys, routes.check_login)
    api.request_guards.append(policy.check)
    api.add_route("/v1/auth/authenticate", "POST", routes.authenticate)
    api.add_route("/v1/auth/status", "GET", routes.status)
    api.add_route("/v1/auth/enable", "POST", routes.enable)
    api.add_route("/v1/auth/disable", "POST", routes.disable)
    api.add_route("/v1/auth/users", "GET", routes.list_users)
    api.add_route("/v1/auth/users", "POST", routes.add_user)
    api.add_subtree("/v1/auth/users/", routes.user)
    api.add_route("/v1/auth/roles", "GET", routes.list_roles)
    api.add_route("/v1/auth/roles", "POST", routes.add_role)
    api.add_subtree("/v1/auth/roles/", routes.role)
    return routes


class AuthRoutes:
    def __init__(self, api: HttpApi, token_ttl: float) -> None:
        self.api = api
        self.token_ttl = token_ttl
        self._kdf_slots = asyncio.Semaphore(_KDF_SLOTS)

    async def parse_txn_body(self, request: web.BaseRequest) -> dict[str, Any]:
        """The txn command a POST /v1/txn body holds, parsed as its handler
        will (aiohttp keeps the body, so the handler reads it again)."""
        body = await _json_body(request, self.api.limits)
        return _check(parse_txn, body, self.api.limits, None)

    def lease_keys(self, lease_id: int) -> list[str]:
        with self.api.engine.state_lock:
            txn = self.api.machine.store.read()
            try:
                return leases.keys_of(txn, lease_id)
            finally:
                txn.close()

    async def _kdf(self, func: Any, *args: Any) -> Any:
        async with self._kdf_slots:
            return await asyncio.to_thread(func, *args)

    async def _propose(
        self, request: web.BaseRequest, command: dict[str, Any], params: frozenset[str] = frozenset({"timeout"})
    ) -> dict[str, Any]:
        query = _query(request, set(params))
        try:
            return await self.api._propose(command, query)
        except ApiError as exc:
            if exc.code in _NOT_FOUND:
                raise ApiError(404, exc.code, exc.message) from None
            raise

    async def _view(self, request: web.BaseRequest) -> AuthView:
        """The auth state after a read fence: a user added through another
        node a moment ago is known here."""
        await self.api._read_fence(_query(request, {"timeout", "consistency"}))
        return self.api.machine.auth

    # -- open ----------------------------------------------------------------

    async def check_login(self, view: AuthView, name: str, password: str) -> auth_state.User:
        """The user ``name`` if ``password`` is theirs; 401 otherwise. Takes
        as long for an unknown name, so answer times do not tell which exist."""
        user = view.users.get(name)
        if user is None:
            await self._kdf(passwords.burn_time_like_a_check, password)
            matches = False
        else:
            matches = await self._kdf(passwords.verify_password, password, user.password)
        if not matches:
            raise ApiError(401, "authentication_failed", "wrong user name or password")
        # The view again: the user may have changed while the check ran.
        view = self.api.machine.auth
        current = view.users.get(name)
        if not view.enabled or current is None or current.revision != user.revision:
            raise ApiError(401, "authentication_failed", "the user changed while its password was checked; try again")
        return current

    async def authenticate(self, request: web.BaseRequest) -> web.Response:
        body = await _object(request, self.api, {"name", "password"}, {"name", "password"})
        name, password = _name(body["name"], "name"), _password(body["password"])
        view = await self._view(request)
        if not view.enabled:
            raise ApiError(
                409, "auth_not_enabled", "auth is not enabled: requests need no token (POST /v1/auth/enable turns it on)"
            )
        user = await self.check_login(view, name, password)
        view = self.api.machine.auth
        token = tokens.issue(view.signing_key, name, user.revision, time.time(), self.token_ttl)
        return json_response({"token": token, "ttl": int(self.token_ttl)})

    async def status(self, request: web.BaseRequest) -> web.Response:
        view = await self._view(request)
        return json_response({"enabled": view.enabled, "auth_revision": view.revision})

    # -- the switch ----------------------------------------------------------

    async def enable(self, request: web.BaseRequest) -> web.Response:
        # The key is drawn here and travels in the log, so every node signs
        # and checks with the same key (docs/auth.md "Tokens").
        result = await self._propose(request, auth_state.auth_enable(os.urandom(SIGNING_KEY_BYTES)))
        return json_response({"enabled": True, "auth_revision": result["auth_revision"]})

    async def disable(self, request: web.BaseRequest) -> web.Response:
        result = await self._propose(request, auth_state.auth_disable())
        return json_response({"enabled": False, "auth_revision": result["auth_revision"]})

    # -- users ---------------------------------------------------------------

    async def list_users(self, request: web.BaseRequest) -> web.Response:
        view = await self._view(request)
        return json_response({"users": [_user_json(u) for u in auth_state.iter_users(view)]})

    async def add_user(self, request: web.BaseRequest) -> web.Response:
        body = await _object(request, self.api, {"name", "password"}, {"name", "password"})
        name, password = _name(body["name"], "name"), _password(body["password"])
        record = await self._kdf(passwords.hash_password, password)
        result = await self._propose(request, auth_state.user_add(name, record))
        return json_response({"name": name, "roles": [], "auth_revision": result["auth_revision"]}, status=201)

    async def user(self, request: web.BaseRequest, rest: str) -> web.Response:
        """/v1/auth/users/{name}, .../password, .../roles/{role}."""
        parts = rest.split("/")
        name = _name(parts[0], "the user name")
        method = request.method
        if len(parts) == 1:
            if method in ("GET", "HEAD"):
                view = await self._view(request)
                user = view.users.get(name)
                if user is None:
                    raise ApiError(404, "user_not_found", f"user {name!r} does not exist")
                return json_response(_user_json(user))
            if method == "DELETE":
                result = await self._propose(request, auth_state.user_delete(name))
                return json_response({"name": name, "deleted": True, "auth_revision": result["auth_revision"]})
            raise _method_not_allowed(request, ("GET", "HEAD", "DELETE"))
        if len(parts) == 2 and parts[1] == "password":
            if method != "PUT":
                raise _method_not_allowed(request, ("PUT",))
            body = await _object(request, self.api, {"password"}, {"password"})
            record = await self._kdf(passwords.hash_password, _password(body["password"]))
            result = await self._propose(request, auth_state.user_passwd(name, record))
            return json_response({"name": name, "auth_revision": result["auth_revision"]})
        if len(parts) == 3 and parts[1] == "roles":
            role = _name(parts[2], "the role name")
            if method == "PUT":
                command = auth_state.user_grant(name, role)
            elif method == "DELETE":
                command = auth_state.user_revoke(name, role)
            else:
                raise _method_not_allowed(request, ("PUT", "DELETE"))
            result = await self._propose(request, command)
            user = self.api.machine.auth.users.get(name)
            return json_response({**(_user_json(user) if user else {"name": name}), "auth_revision": result["auth_revision"]})
        raise ApiError(
            404, "not_found",
            f"no such endpoint: {request.path}; use /v1/auth/users/<name>, .../password or .../roles/<role>",
        )

    # -- roles ---------------------------------------------------------------

    async def list_roles(self, request: web.BaseRequest) -> web.Response:
        view = await self._view(request)
        return json_response({"roles": [_role_json(view.roles[n]) for n in sorted(view.roles)]})

    async def add_role(self, request: web.BaseRequest) -> web.Response:
        body = await _object(request, self.api, {"name"}, {"name"})
        name = _name(body["name"], "name")
        result = await self._propose(request, auth_state.role_add(name))
        return json_response({"name": name, "permissions": [], "auth_revision": result["auth_revision"]}, status=201)

    async def role(self, request: web.BaseRequest, rest: str) -> web.Response:
        """/v1/auth/roles/{name} and .../permissions."""
        parts = rest.split("/")
        name = _name(parts[0], "the role name")
        method = request.method
        if len(parts) == 1:
            if method in ("GET", "HEAD"):
                view = await self._view(request)
                role = view.roles.get(name)
                if role is None:
                    raise ApiError(404, "role_not_found", f"role {name!r} does not exist")
                return json_response(_role_json(role))
            if method == "DELETE":
                result = await self._propose(request, auth_state.role_delete(name))
                return json_response({"name": name, "deleted": True, "auth_revision": result["auth_revision"]})
            raise _method_not_allowed(request, ("GET", "HEAD", "DELETE"))
        if len(parts) == 2 and parts[1] == "permissions":
            if method == "POST":
                body = await _object(request, self.api, {"prefix", "permission"}, {"prefix", "permission"})
                prefix = _prefix(body["prefix"], self.api)
                permission = body["permission"]
                if permission not in PERMISSIONS:
                    raise ApiError(
                        400, "invalid_argument", f"permission must be one of {', '.join(PERMISSIONS)}, got {permission!r}"
                    )
                command = auth_state.role_grant(name, prefix, permission)
            elif method == "DELETE":
                query = _query(request, {"prefix", "timeout"})
                if "prefix" not in query:
                    raise ApiError(400, "missing_field", "DELETE .../permissions needs ?prefix=P (the granted prefix)")
                command = auth_state.role_revoke(name, _prefix(query["prefix"], self.api))
            else:
                raise _method_not_allowed(request, ("POST", "DELETE"))
            result = await self._propose(request, command, frozenset({"prefix", "timeout"}))
            role = self.api.machine.auth.roles.get(name)
            return json_response({**(_role_json(role) if role else {"name": name}), "auth_revision": result["auth_revision"]})
        raise ApiError(
            404, "not_found", f"no such endpoint: {request.path}; use /v1/auth/roles/<name> or .../permissions"
        )


def _user_json(user: auth_state.User) -> dict[str, Any]:
    return {"name": user.name, "roles": list(user.roles)}


def _role_json(role: auth_state.Role) -> dict[str, Any]:
    return {"name": role.name, "permissions": [{"prefix": p, "permission": m} for p, m in role.perms]}


async def _object(request: web.BaseRequest, api: HttpApi, required: set[str], allowed: set[str]) -> dict[str, Any]:
    body = await _json_body(request, api.limits)
    if not isinstance(body, dict):
        raise ApiError(400, "wrong_type", f"request body must be a JSON object with {', '.join(sorted(required))}")
    unknown = set(body) - allowed
    if unknown:
        raise ApiError(400, "unknown_field", f"unknown field(s): {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(allowed))}")
    missing = required - set(body)
    if missing:
        raise ApiError(400, "missing_field", f"{', '.join(sorted(missing))} is required")
    return body


def _name(name: Any, what: str) -> str:
    if type(name) is not str or not _NAME.match(name):
        raise ApiError(
            400, "invalid_argument",
            f"{what} must be 1 to 128 of A-Z a-z 0-9 . _ @ - (not starting with . _ @ -), got {str(name)[:200]!r}",
        )
    return name


def _password(password: Any) -> str:
    if type(password) is not str or not password:
        raise ApiError(400, "invalid_argument", "password must be a non-empty string")
    if len(password) > passwords.MAX_PASSWORD_CHARS:
        raise ApiError(400, "invalid_argument", f"password is longer than {passwords.MAX_PASSWORD_CHARS} characters")
    return password


def _prefix(prefix: Any, api: HttpApi) -> str:
    if type(prefix) is not str:
        raise ApiError(400, "wrong_type", "prefix must be a string ('' means every key)")
    _check(validate_prefix, prefix, api.limits)
    return prefix
