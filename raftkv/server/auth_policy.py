"""Who may call what, once auth is enabled: one check before every route.

HttpApi._route runs its request guards (raftkv/server/auth_routes.py
installs :meth:`AuthPolicy.check` as one) with the decoded path before
dispatching. With auth off it returns at once. With auth on it checks the
bearer token (401 when missing, malformed, expired or revoked), works out
what the request needs (:func:`requirement`) and checks the user's
permissions (403). The table below is the whole policy (docs/api.md#auth):

=====================================  ========================================
route                                  needs
=====================================  ========================================
/healthz, /readyz, /v1/status          nothing (open, as in etcd: probes
                                       carry no tokens; they show no keys or
                                       values)
GET /metrics                           any authenticated user, by bearer
                                       token or HTTP Basic (Prometheus'
                                       basic_auth: a scraper cannot renew a
                                       token)
POST /v1/auth/authenticate,            nothing
GET /v1/auth/status
GET/HEAD /v1/kv/{key}                  read on key
PUT/DELETE /v1/kv/{key}                write on key (+ read with If-Match or
                                       If-None-Match: the 412 tells the
                                       current mod_revision)
GET /v1/kv?prefix=P                    read on the range P
DELETE /v1/kv?prefix=P                 write on the range P
POST /v1/txn                           read on every compared or read key,
                                       write on every written key or range
                                       (add: read and write)
GET /v1/watch?key=K | prefix=P         read on K | on the range P
GET /v1/leases/{id}                    read on every key attached to it
DELETE /v1/leases/{id}                 write on every key attached to it (as
                                       etcd's revoke: it deletes them)
POST /v1/locks/{name},                 read and write on the range
DELETE /v1/locks/{name},               __locks/NAME/ (a holder reads the
POST /v1/elections/{name}/campaign|    other contenders' keys to know it is
proclaim|resign                        first), __elections/NAME/ likewise
GET /v1/elections/{name}/leader|       read on the range __elections/NAME/
observe
/v1/watch/{id}/..., other /v1/leases*  any authenticated user (a key joins
                                       a lease through a put, which needs
                                       write on the key)
everything else (/v1/auth/* admin,     the root role
members, snapshot, compaction,
leadership, hotkeys, unknown routes)
=====================================  ========================================

A route nobody listed is root-only, so a new route is never open by
mistake. A permission on prefix Q covers key K when K starts with Q and the
range P when P starts with Q.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Union

from aiohttp import web

from raftkv.auth import passwords, tokens
from raftkv.kv import leases
from raftkv.kv.auth_state import READ, WRITE, AuthView, User
from raftkv.kv.state_machine import KVStateMachine
from raftkv.server.http_api import STREAM_GUARD, StreamGuard
from raftkv.server.lock_routes import ELECTIONS_PREFIX, LOCKS_PREFIX
from raftkv.server.responses import ApiError

_OPEN_PATHS = frozenset({"/healthz", "/readyz", "/v1/status"})
METRICS_PATH = "/metrics"
WATCH_PATH = "/v1/watch"
# Basic credentials checked recently, so a scrape every few seconds does not
# cost a password hash each time; entries name the user's record revision,
# so a password change or a revoked role is seen at once.
_BASIC_CACHE_SIZE = 64
_OPEN_AUTH = frozenset({("POST", "/v1/auth/authenticate"), ("GET", "/v1/auth/status"), ("HEAD", "/v1/auth/status")})
_KEY_PREFIX = "/v1/kv/"


@dataclass(frozen=True)
class Grant:
    """One permission a request needs: ``permission`` on a key or a range."""

    permission: str  # READ or WRITE
    target: str
    is_range: bool = False

    def describe(self) -> str:
        what = f"the keys under prefix {self.target!r}" if self.is_range else f"key {self.target!r}"
        return f"{self.permission} on {what}"


class _Open:
    """Anyone, authenticated or not."""


class _AnyUser:
    """Any authenticated user."""


class _Root:
    """Users with the root role."""


OPEN, ANY_USER, ROOT_ONLY = _Open(), _AnyUser(), _Root()
Requirement = Union[_Open, _AnyUser, _Root, list[Grant]]
# Reads and parses a request body (the txn route's) the way its handler does.
BodyParser = Callable[[web.BaseRequest], Any]
# The keys attached to a lease (by id), now.
LeaseKeys = Callable[[int], list[str]]
# Checks a user name and password (a slow KDF): the user, or ApiError 401.
CheckLogin = Callable[[AuthView, str, str], Awaitable[User]]
_LEASE_PREFIX = "/v1/leases/"
_LOCK_PATH = "/v1/locks/"
_ELECTION_PATH = "/v1/elections/"


async def requirement(
    request: web.BaseRequest, path: str, parse_txn_body: BodyParser, lease_keys: LeaseKeys = lambda _: []
) -> Requirement:
    """What ``request`` (to the decoded ``path``) needs; reads the body only for txns."""
    method = request.method
    if is_open(request, path):
        return OPEN
    if path.startswith(_KEY_PREFIX):
        key = path[len(_KEY_PREFIX):]
        if not key:
            return ANY_USER  # the handler answers 400 empty_key
        if method in ("GET", "HEAD"):
            return [Grant(READ, key)]
        if method in ("PUT", "DELETE"):
            grants = [Grant(WRITE, key)]
            if "If-Match" in request.headers or "If-None-Match" in request.headers:
                grants.append(Grant(READ, key))
            return grants
        return ANY_USER  # the handler answers 405
    if path == "/v1/kv":
        if method in ("GET", "HEAD"):
            return [Grant(READ, request.query.get("prefix", ""), is_range=True)]
        if method == "DELETE" and "prefix" in request.query:
            return [Grant(WRITE, request.query["prefix"], is_range=True)]
        return ANY_USER  # the handler answers 400 or 405
    if path == "/v1/txn":
        if method != "POST":
            return ANY_USER
        return txn_grants(await parse_txn_body(request))
    if path == WATCH_PATH:
        query = request.query
        if "key" in query and "prefix" not in query:
            return [Grant(READ, query["key"])]
        if "prefix" in query and "key" not in query:
            return [Grant(READ, query["prefix"], is_range=True)]
        return ANY_USER  # the handler answers 400
    if path.startswith(_LEASE_PREFIX) and method in ("GET", "HEAD", "DELETE"):
        lease_id = leases.parse_id(path[len(_LEASE_PREFIX):])
        if lease_id is None:
            return ANY_USER  # the handler answers 400 or 404
        permission = WRITE if method == "DELETE" else READ
        return [Grant(permission, key) for key in lease_keys(lease_id)]
    if path.startswith("/v1/watch/") or path == "/v1/leases" or path.startswith(_LEASE_PREFIX):
        return ANY_USER
    if path == METRICS_PATH:
        return ANY_USER  # figures only, no keys or values; the handler checks the method
    if path.startswith(_LOCK_PATH):
        name = path[len(_LOCK_PATH):]
        if not name or "/" in name:
            return ANY_USER  # the handler answers 400
        return [Grant(READ, f"{LOCKS_PREFIX}{name}/", True), Grant(WRITE, f"{LOCKS_PREFIX}{name}/", True)]
    if path.startswith(_ELECTION_PATH):
        name, _, action = path[len(_ELECTION_PATH):].partition("/")
        if not name:
            return ANY_USER  # the handler answers 400
        grants = [Grant(READ, f"{ELECTIONS_PREFIX}{name}/", True)]
        if action not in ("leader", "observe"):
            grants.append(Grant(WRITE, f"{ELECTIONS_PREFIX}{name}/", True))
        return grants
    return ROOT_ONLY


def is_open(request: web.BaseRequest, path: str) -> bool:
    """Routes anyone may call with auth on (no body is read to tell)."""
    return path in _OPEN_PATHS or (request.method, path) in _OPEN_AUTH


def txn_grants(command: dict[str, Any]) -> list[Grant]:
    """Every permission a parsed txn command needs, both branches included
    (which one runs is only known when it applies)."""
    grants = [Grant(READ, item["key"]) for item in command["compare"]]
    for op in (*command["success"], *command["failure"]):
        name = op["op"]
        if name == "delete_prefix":
            grants.append(Grant(WRITE, op["prefix"], is_range=True))
            continue
        if name in ("get", "add"):
            grants.append(Grant(READ, op["key"]))
        if name != "get":
            grants.append(Grant(WRITE, op["key"]))
    return grants


class AuthPolicy:
    """Enforces :func:`requirement` with the machine's replicated auth view."""

    def __init__(
        self,
        machine: KVStateMachine,
        parse_txn_body: BodyParser,
        lease_keys: LeaseKeys,
        check_login: CheckLogin,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.machine = machine
        self.parse_txn_body = parse_txn_body
        self.lease_keys = lease_keys
        self.check_login = check_login
        self.clock = clock
        self._basic_seen: OrderedDict[tuple[str, bytes, int], None] = OrderedDict()

    async def check(self, request: web.BaseRequest, path: str) -> None:
        """Return if the request may go on; raise ApiError 401 or 403 if not."""
        view = self.machine.auth
        if not view.enabled or is_open(request, path):
            return
        # Who first, then what: an anonymous request gets its 401 without
        # its body being read (only a txn's requirement needs the body).
        if path == METRICS_PATH:
            user = await self.authenticate_scraper(request, view)
        else:
            user = self.authenticate(request, view)
        needs = await requirement(request, path, self.parse_txn_body, self.lease_keys)
        if needs is OPEN or needs is ANY_USER:
            return
        if needs is ROOT_ONLY:
            if not user.is_root:
                raise forbidden(f"user {user.name!r} lacks the root role, which {request.method} {path} needs")
            return
        assert isinstance(needs, list)
        missing = _missing_grant(view, user, needs)
        if missing is not None:
            raise forbidden(f"user {user.name!r} has no {missing.describe()}")
        if path == WATCH_PATH:
            request[STREAM_GUARD] = self._stream_guard(view, user, needs)

    def _stream_guard(self, view: AuthView, user: User, needs: list[Grant]) -> StreamGuard:
        """What a watch asks before each write: None while its user may still
        read what it watches, else the error to end the stream with.

        Only revocation ends it: the user's password or roles changed, the
        user was deleted, auth was enabled again with a new key, or a role
        lost the permission. The token's TTL passing does not: the token was
        checked when the stream started, and ending every watch each TTL
        would make every watcher log in again (a password hash each).
        """
        signing_key, name, revision = view.signing_key, user.name, user.revision

        def still_allowed() -> ApiError | None:
            now = self.machine.auth
            if not now.enabled:
                return None
            current = now.users.get(name)
            if now.signing_key != signing_key or current is None or current.revision != revision:
                return unauthenticated(
                    "invalid_token",
                    "this watch's token was revoked (its user's password or roles changed, the user was "
                    "deleted, or auth was enabled again): authenticate again and resume",
                )
            missing = _missing_grant(now, current, needs)
            if missing is not None:
                return forbidden(f"user {name!r} no longer has {missing.describe()}")
            return None

        return still_allowed

    async def authenticate_scraper(self, request: web.BaseRequest, view: AuthView) -> User:
        """/metrics takes a bearer token or Basic credentials; its 401 offers both
        (only here: elsewhere a Basic challenge would make browsers prompt)."""
        try:
            if request.headers.get("Authorization", "")[:6].lower() == "basic ":
                return await self.authenticate_basic(request, view)
            return self.authenticate(request, view)
        except ApiError as exc:
            if exc.status == 401:
                bearer = (exc.headers or {}).get("WWW-Authenticate", 'Bearer realm="raftkv"')
                exc.headers = {**(exc.headers or {}), "WWW-Authenticate": f'{bearer}, Basic realm="raftkv"'}
            raise

    async def authenticate_basic(self, request: web.BaseRequest, view: AuthView) -> User:
        """The user whose name and password an ``Authorization: Basic`` header holds."""
        encoded = request.headers["Authorization"][6:].strip()
        try:
            name, sep, password = base64.b64decode(encoded, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            name, sep, password = "", "", ""
        if not sep or not name or len(password) > passwords.MAX_PASSWORD_CHARS:
            raise unauthenticated("invalid_token", "the Authorization header must be 'Basic base64(name:password)'")
        user = view.users.get(name)
        digest = hashlib.sha256(password.encode("utf-8")).digest()
        if user is not None and (name, digest, user.revision) in self._basic_seen:
            self._basic_seen.move_to_end((name, digest, user.revision))
            return user
        try:
            user = await self.check_login(view, name, password)
        except ApiError as exc:
            raise unauthenticated(exc.code, exc.message) from None
        self._basic_seen[(name, digest, user.revision)] = None
        if len(self._basic_seen) > _BASIC_CACHE_SIZE:
            self._basic_seen.popitem(last=False)
        return user

    def authenticate(self, request: web.BaseRequest, view: AuthView) -> User:
        """The user a valid bearer token names; 401 otherwise."""
        header = request.headers.get("Authorization")
        if header is None:
            raise unauthenticated(
                "unauthenticated",
                "auth is enabled: send Authorization: Bearer <token> (POST /v1/auth/authenticate gives one)",
            )
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthenticated("invalid_token", "the Authorization header must be 'Bearer <token>'")
        try:
            claims = tokens.verify(view.signing_key, token.strip(), self.clock())
        except tokens.TokenError as exc:
            raise unauthenticated(exc.code, exc.message) from None
        user = view.users.get(claims.user)
        if user is None or user.revision != claims.revision:
            raise unauthenticated(
                "invalid_token",
                "the token was revoked (the user's password or roles changed, or the user was deleted): "
                "authenticate again",
            )
        return user


def _missing_grant(view: AuthView, user: User, needs: list[Grant]) -> Grant | None:
    """The first of ``needs`` that ``user`` lacks, or None."""
    for grant in needs:
        allowed = (
            view.allows_range(user, grant.permission, grant.target)
            if grant.is_range
            else view.allows_key(user, grant.permission, grant.target)
        )
        if not allowed:
            return grant
    return None


def unauthenticated(code: str, message: str) -> ApiError:
    return ApiError(401, code, message, headers={"WWW-Authenticate": f'Bearer realm="raftkv", error="{code}"'})


def forbidden(message: str) -> ApiError:
    return ApiError(403, "permission_denied", message)

