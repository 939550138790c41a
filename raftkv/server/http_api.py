"""The HTTP/JSON API v1 (see api/openapi.yaml and docs/api.md).

Handlers translate HTTP into state-machine commands and back; consensus is
the engine's business. Reads are served from the local replica after the
engine's read fence (linearizable) or without it (serializable).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from time import perf_counter
from typing import TYPE_CHECKING, Any, Awaitable, Callable

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client.exposition import choose_encoder

from raftkv.engine import Engine
from raftkv.errors import (
    EngineStoppedError,
    NoLeaderError,
    NotLeaderError,
    OutcomeUnknownError,
    ReadTimeoutError,
)
from raftkv.kv import commands
from raftkv.kv.leases import format_id as format_lease_id, parse_id as parse_lease_id
from raftkv.server.json_codec import (
    RequestError,
    kv_to_json,
    parse_txn,
    result_error_status,
    result_to_json,
    validate_key,
    validate_prefix,
    validate_value,
)
from raftkv.kv.limits import Limits
from raftkv.kv.state_machine import CompactedError, FutureRevisionError, KVStateMachine
from raftkv.metrics import UNMATCHED_ROUTE, NodeMetrics
from raftkv.server.connections import ApiServer
from raftkv.server.hot_keys import HotKeys
from raftkv.server.idempotency import IDEMPOTENCY_ERROR_STATUS, InFlightKeys
from raftkv.server.params import UINT63_MAX, decode_path, decode_query, parse_seconds, parse_uint
from raftkv.server.responses import ApiError, json_response, no_leader
from raftkv.watch.conditional import ConditionalRead, key_etag, list_etag, listing_etag, wait_while_unchanged

if TYPE_CHECKING:
    from raftkv.watch.hub import WatchHub

log = logging.getLogger(__name__)

# A request guard may leave a streaming handler (a watch) a StreamGuard under
# this request key: asked before each write, None to go on, or the error to
# end the stream with (raftkv/server/auth_policy.py: access revoked).
STREAM_GUARD = "raftkv.stream_guard"
StreamGuard = Callable[[], ApiError | None]

_KEY_PREFIX = "/v1/kv/"
_KEY_ROUTE = "/v1/kv/{key}"  # the route template /v1/kv/<key> is timed under

MAX_IDEMPOTENCY_KEY_BYTES = 256
# A shorter ?timeout= would turn an ordinary write (a few fsyncs) into a
# 504 whose outcome is unknown.
MIN_TIMEOUT = 0.5
# How long aiohttp keeps reading a body nobody read (after an early 413, say)
# so the client gets the answer rather than a reset.
_LINGER_SECONDS = 2.0
# Statuses after which dispatch closes the connection.
_CLOSE_AFTER = frozenset({408, 413, 417})
# Keys fetched from the state machine per step while filling a list answer.
_LIST_BATCH = 256


Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
SubtreeHandler = Callable[[web.BaseRequest, str], Awaitable[web.StreamResponse]]


class HttpApi:
    def __init__(
        self,
        engine: Engine,
        machine: KVStateMachine,
        limits: Limits,
        default_timeout: float = 5.0,
        max_timeout: float = 60.0,
        metrics: NodeMetrics | None = None,
        hot_keys: HotKeys | None = None,
    ) -> None:
        self.engine = engine
        self.machine = machine
        self.limits = limits
        self.default_timeout = default_timeout
        self.max_timeout = max_timeout
        self._in_flight = InFlightKeys()  # Idempotency-Keys of writes proposed here
        self.metrics = metrics if metrics is not None else NodeMetrics()
        self.hot_keys = hot_keys if hot_keys is not None else HotKeys()
        self.pending_proposals = 0  # writes proposed here and not answered yet
        # Every route but /v1/kv/{key}: path -> method -> handler.
        self._route_table: dict[str, dict[str, Handler]] = {
            "/v1/kv": {"GET": self.list_keys, "DELETE": self.delete_prefix},
            "/v1/txn": {"POST": self.txn},
            "/v1/compaction": {"POST": self.compaction},
            "/v1/status": {"GET": self.status},
            "/v1/leadership/transfer": {"POST": self.transfer_leadership},
            "/healthz": {"GET": self.healthz},
            "/readyz": {"GET": self.readyz},
            "/v1/hotkeys": {"GET": self.hotkeys},
            "/metrics": {"GET": self.scrape_metrics},
        }
        # Routes with a parameter in the path (/v1/leases/{id}, ...): path
        # prefix -> handler given the decoded rest of the path; it checks
        # the method itself.
        self._subtrees: dict[str, SubtreeHandler] = {}
        # Set by raftkv/server/watch_routes.install: blocking reads wait on it.
        self.watch_hub: WatchHub | None = None
        # Called with each command before it is proposed; one raises ApiError
        # to refuse it (the space quota: raftkv/server/quota.py).
        self.write_guards: list[Callable[[dict[str, Any]], None]] = []
        # Awaited with each request and its decoded path before it is routed;
        # one raises ApiError to refuse it (auth: raftkv/server/auth_policy.py).
        # Every route, present and future, passes through them.
        self.request_guards: list[Callable[[web.BaseRequest, str], Awaitable[None]]] = []
        # Extra top-level fields of /v1/status: name -> what to show.
        self.status_sections: dict[str, Callable[[], Any]] = {}

    def add_route(self, path: str, method: str, handler: Handler) -> None:
        """Serve ``method path`` (an exact path) with ``handler``; feature
        modules call this from their ``install(api)``."""
        methods = self._route_table.setdefault(path, {})
        if method in methods:
            raise ValueError(f"{method} {path} is already routed")
        methods[method] = handler

    def add_subtree(self, prefix: str, handler: SubtreeHandler) -> None:
        """Serve every path under ``prefix`` (which ends in "/") with
        ``handler(request, rest)``, ``rest`` being the decoded path after it."""
        if not prefix.endswith("/") or prefix in self._subtrees or prefix == _KEY_PREFIX:
            raise ValueError(f"bad or duplicate subtree {prefix!r}")
        self._subtrees[prefix] = handler

    def make_server(self) -> web.Server:
        """An aiohttp low-level server with our own routing.

        The HTTP path is most of the leader's CPU. aiohttp's Application
        (URL dispatcher, middleware chain, Request objects) served half the
        requests/s of the low-level server in a bare benchmark here, and
        dropping it gave the cluster 10-15% more writes and reads at 64
        connections. access_log=None matters: the low-level server would
        otherwise format a log line per request.
        """
        loop = asyncio.get_running_loop()
        max_body = self.limits.max_request_bytes

        def make_request(
            message: Any, payload: Any, protocol: Any, writer: Any, task: Any
        ) -> web.BaseRequest:
            return web.BaseRequest(
                message, payload, protocol, writer, task, loop, client_max_size=max_body
            )

        # A legal key percent-encodes to up to 3x its bytes in the request line.
        max_line = 3 * self.limits.max_key_bytes + 1024
        return ApiServer(
            self.dispatch,
            limits=self.limits,
            request_factory=make_request,
            max_line_size=max_line,
            lingering_time=_LINGER_SECONDS,
            access_log=None,
        )

    async def dispatch(self, request: web.BaseRequest) -> web.StreamResponse:
        start = perf_counter()
        try:
            return await self._answer(request)
        finally:
            raw = request.rel_url.raw_path
            if raw.startswith(_KEY_PREFIX):
                route = _KEY_ROUTE
            elif raw in self._route_table:
                route = raw
            else:
                route = next((p + "*" for p in self._subtrees if raw.startswith(p)), UNMATCHED_ROUTE)
            self.metrics.observe_http(request.method, route, perf_counter() - start)

    async def _answer(self, request: web.BaseRequest) -> web.StreamResponse:
        try:
            _check_body_headers(request, self.limits)
            return await self._route(request)
        except ApiError as exc:
            response = exc.response()
            if exc.status in _CLOSE_AFTER:
                # The body was not (fully) read: it must not be parsed as the
                # next request, and a client that is this far off is done.
                response.force_close()
            return response
        except ConnectionError as exc:
            # The client went away (writing 100 Continue, say): no traceback.
            log.info("client gone during %s %s: %r", request.method, request.path, exc)
            return ApiError(400, "incomplete_body", "the client closed the connection").response()
        except web.HTTPRequestEntityTooLarge as exc:
            response = ApiError(
                413, "request_too_large", f"request body is too large: {exc.text}"
            ).response()
            response.force_close()
            return response
        except Exception:
            # A bug, not the client's fault: keep the JSON error shape, and
            # say whether anything may have changed.
            log.exception("unhandled error serving %s %s", request.method, request.path)
            return ApiError(
                500,
                "internal_error",
                "the server failed while handling this request (see the node's log); "
                "if it was a write, it may or may not have been applied",
            ).response()

    async def _route(self, request: web.BaseRequest) -> web.StreamResponse:
        path = decode_path(request.rel_url.raw_path)
        method = request.method
        for guard in self.request_guards:
            await guard(request, path)
        if path.startswith(_KEY_PREFIX):
            key = path[len(_KEY_PREFIX):]
            if not key:
                raise ApiError(400, "empty_key", "the key is empty: use /v1/kv/<key>")
            if method == "GET" or method == "HEAD":
                return await self.get_key(request, key)
            if method == "PUT":
                return await self.put_key(request, key)
            if method == "DELETE":
                return await self.delete_key(request, key)
            raise _method_not_allowed(request, ("GET", "HEAD", "PUT", "DELETE"))
        methods = self._route_table.get(path)
        if methods is None:
            for prefix, subtree in self._subtrees.items():
                if path.startswith(prefix):
                    return await subtree(request, path[len(prefix):])
            raise ApiError(404, "not_found", f"no such endpoint: {path}")
        handler = methods.get("GET" if method == "HEAD" else method)
        if handler is None:
            raise _method_not_allowed(request, tuple(methods))
        return await handler(request)

    # -- reads -------------------------------------------------------------

    async def get_key(self, request: web.BaseRequest, key: str) -> web.Response:
        query = _query(request, {"consistency", "timeout", "revision", "wait"})
        _check(validate_key, key, self.limits)
        at = _revision(query)
        conditional = ConditionalRead.from_request(request, query, self.watch_hub)
        self.hot_keys.read(key)
        await self._read_fence(query)
        await wait_while_unchanged(conditional, lambda: key_etag(self, key), key, None, lambda: self._read_fence(query))
        with self.engine.state_lock:
            with _history_errors():
                kv = self.machine.get(key, at)
            revision = self.machine.revision
        if kv is None:
            raise ApiError(404, "key_not_found", f"key {key!r} does not exist")
        mod = kv["mod_revision"]
        response = web.Response(
            body=kv["value"],
            content_type="application/octet-stream",
            headers={
                "ETag": f'"{mod}"',
                "X-Raftkv-Create-Revision": str(kv["create_revision"]),
                "X-Raftkv-Mod-Revision": str(mod),
                "X-Raftkv-Version": str(kv["version"]),
                "X-Raftkv-Revision": str(revision),
                **({"X-Raftkv-Lease": format_lease_id(kv["lease"])} if "lease" in kv else {}),
            },
        )
        if conditional.unchanged(f'"{mod}"'):
            return conditional.not_modified(dict(response.headers))
        return response

    async def list_keys(self, request: web.BaseRequest) -> web.Response:
        query = _query(
            request, {"prefix", "limit", "start_after", "keys_only", "consistency", "timeout", "revision", "wait"}
        )
        prefix = query.get("prefix", "")
        _check(validate_prefix, prefix, self.limits)
        limit = _positive_int(query, "limit")
        keys_only = _bool(query, "keys_only")
        at = _revision(query)
        conditional = ConditionalRead.from_request(request, query, self.watch_hub)
        start_after = query.get("start_after")
        await self._read_fence(query)
        await wait_while_unchanged(
            conditional,
            lambda: listing_etag(self, prefix, limit, start_after, keys_only),
            None,
            prefix,
            lambda: self._read_fence(query),
        )
        with self.engine.state_lock:
            with _history_errors():
                kvs, more = self._list_page(prefix, limit, query.get("start_after"), keys_only, at)
            revision = self.machine.revision
        etag = list_etag(kvs, more)
        if conditional.unchanged(etag):
            return conditional.not_modified({"ETag": etag, "X-Raftkv-Revision": str(revision)})
        return json_response({"revision": revision, "kvs": kvs, "more": more}, headers={"ETag": etag})

    def _list_page(
        self, prefix: str, limit: int | None, start_after: str | None, keys_only: bool, at: int | None = None
    ) -> tuple[list[dict[str, Any]], bool]:
        """Up to ``limit`` keys, stopping early (more: true) once the answer's
        keys and values reach limits.max_list_bytes; at least one key."""
        budget = self.limits.max_list_bytes
        rendered: list[dict[str, Any]] = []
        size = 0
        while True:
            want = _LIST_BATCH if limit is None else min(_LIST_BATCH, limit - len(rendered))
            kvs, more = self.machine.range(prefix, want, start_after, at)
            for kv in kvs:
                if rendered and size >= budget:
                    return rendered, True
                item = kv_to_json(kv, with_value=not keys_only)
                size += len(kv["key"]) + (0 if keys_only else len(item["value"]))
                rendered.append(item)
            if not more:
                return rendered, False
            if limit is not None and len(rendered) >= limit:
                return rendered, True
            start_after = kvs[-1]["key"]

    async def _read_fence(self, query: dict[str, str]) -> None:
        timeout = self._timeout(query)  # checked even where no fence uses it
        consistency = query.get("consistency", "linearizable")
        if consistency == "serializable":
            # The local replica of a failed engine stopped at some point of
            # the past and will never move on: do not serve it.
            _raise_if_engine_failed(self.engine.failure)
            return
        if consistency != "linearizable":
            raise ApiError(
                400,
                "invalid_argument",
                f"consistency must be 'linearizable' or 'serializable', got {consistency!r}",
            )
        try:
            await self.engine.read_fence(timeout)
        except (NoLeaderError, EngineStoppedError) as exc:
            raise no_leader(f"cannot serve a linearizable read: {exc}") from None
        except ReadTimeoutError as exc:
            raise ApiError(
                503,
                "no_quorum",
                f"{exc}; nothing was changed, retry or use ?consistency=serializable",
                headers={"Retry-After": "1"},
            ) from None

    # -- writes ------------------------------------------------------------

    async def put_key(self, request: web.BaseRequest, key: str) -> web.Response:
        query = _query(request, {"timeout", "lease"})
        _check(validate_key, key, self.limits)
        lease = _lease_param(query)
        value = await _read_body(request, self.limits)
        _check(validate_value, value, self.limits)
        self.hot_keys.wrote(key)
        idem = _idempotency_key(request)
        condition = _precondition(request)
        if condition is None:
            command = commands.put(key, value, idem, lease)
        else:
            command = commands.txn(
                [_compare_for(key, condition)],
                [commands.txn_put(key, value, lease)],
                [commands.txn_get(key)],
                idem,
            )
        result = await self._propose(command, query)
        if condition is not None:
            _raise_if_precondition_failed(key, result)
            kv = result["results"][0]["kv"]
        else:
            kv = result["kv"]
        return json_response(
            {"revision": result["revision"], "kv": kv_to_json(kv, with_value=False)},
            headers=_replay_headers(result, {"ETag": f'"{kv["mod_revision"]}"'}),
        )

    async def delete_key(self, request: web.BaseRequest, key: str) -> web.Response:
        query = _query(request, {"timeout"})
        _check(validate_key, key, self.limits)
        self.hot_keys.wrote(key)
        idem = _idempotency_key(request)
        condition = _precondition(request)
        if condition is None:
            command = commands.delete(key, idem)
        else:
            command = commands.txn(
                [_compare_for(key, condition)], [commands.txn_delete(key)], [commands.txn_get(key)], idem
            )
        result = await self._propose(command, query)
        if condition is not None:
            _raise_if_precondition_failed(key, result)
            deleted = result["results"][0]["deleted"]
        else:
            deleted = result["deleted"]
        if deleted == 0:
            raise ApiError(404, "key_not_found", f"key {key!r} does not exist")
        return json_response(
            {"revision": result["revision"], "deleted": deleted},
            headers=_replay_headers(result),
        )

    async def delete_prefix(self, request: web.BaseRequest) -> web.Response:
        query = _query(request, {"prefix", "timeout"})
        if "prefix" not in query:
            raise ApiError(
                400,
                "invalid_argument",
                "DELETE /v1/kv needs ?prefix=P (use ?prefix= to delete every key)",
            )
        prefix = query["prefix"]
        _check(validate_prefix, prefix, self.limits)
        result = await self._propose(
            commands.delete_prefix(prefix, _idempotency_key(request)), query
        )
        return json_response(
            {"revision": result["revision"], "deleted": result["deleted"]},
            headers=_replay_headers(result),
        )

    async def txn(self, request: web.BaseRequest) -> web.Response:
        query = _query(request, {"timeout"})
        body = await _json_body(request, self.limits)
        command = _check(parse_txn, body, self.limits, _idempotency_key(request))
        result = await self._propose(command, query)
        return json_response(result_to_json(result), headers=_replay_headers(result))

    async def compaction(self, request: web.BaseRequest) -> web.Response:
        """POST /v1/compaction {"revision": R}: a logged command that forgets
        history below R on every replica (each key keeps its state as of R)."""
        query = _query(request, {"timeout"})
        body = await _json_body(request, self.limits)
        if not isinstance(body, dict):
            raise ApiError(400, "wrong_type", 'request body must be a JSON object like {"revision": 42}')
        unknown = set(body) - {"revision"}
        if unknown:
            raise ApiError(400, "unknown_field", f"unknown field(s): {', '.join(sorted(unknown))}; allowed: revision")
        if "revision" not in body:
            raise ApiError(400, "missing_field", "revision is required")
        target = body["revision"]
        if type(target) is float and target.is_integer() and abs(target) <= 2**53:
            target = int(target)  # JSON counts 3.0 as the integer 3 (as json_codec does)
        if type(target) is not int or not 1 <= target <= UINT63_MAX:
            raise ApiError(400, "invalid_argument", f"revision must be an integer from 1 to {UINT63_MAX}, got {target!r}")
        try:
            result = await self._propose(commands.compact(target), query)
        except ApiError as exc:
            with self.engine.state_lock:
                current, compacted = self.machine.revision, self.machine.compact_revision
            if exc.code == "compacted":
                raise ApiError(410, "compacted", exc.message, compact_revision=compacted, revision=current) from None
            if exc.code == "future_revision":
                raise ApiError(400, "future_revision", exc.message, revision=current) from None
            raise
        return json_response({"revision": result["revision"], "compact_revision": result["compact_revision"]})

    async def _propose(self, command: dict[str, Any], query: dict[str, str]) -> dict[str, Any]:
        timeout = self._timeout(query)
        for guard in self.write_guards:
            guard(command)
        self.pending_proposals += 1
        try:
            with self._in_flight.hold(command.get("idem")):
                result = await self.engine.propose(commands.encode(command), timeout)
        except (NoLeaderError, EngineStoppedError) as exc:
            self.metrics.proposal_failed()
            raise no_leader(f"no leader or no quorum, the write was not applied: {exc}") from None
        except OutcomeUnknownError as exc:
            self.metrics.proposal_failed()
            # Retry-After: 0: the native engine holds a write until it knows a
            # usable leader, so retrying at once is never too soon.
            raise ApiError(
                504,
                "outcome_unknown",
                f"{exc}. The write may or may not have been applied; retry with the same "
                "Idempotency-Key to apply it at most once, or read the key to find out",
                headers={"Retry-After": "0"},
            ) from None
        finally:
            self.pending_proposals -= 1
        if not result["ok"]:
            error = result["error"]
            raise ApiError(
                IDEMPOTENCY_ERROR_STATUS.get(error["code"]) or result_error_status(result),
                error["code"],
                error["message"],
                headers=_replay_headers(result),
            )
        return result

    def _timeout(self, query: dict[str, str]) -> float:
        text = query.get("timeout")
        if text is None:
            return self.default_timeout
        return parse_seconds(text, "timeout", MIN_TIMEOUT, self.max_timeout)

    # -- cluster -------------------------------------------------------------

    async def status(self, request: web.BaseRequest) -> web.Response:
        self._timeout(_query(request, {"timeout"}))
        body = self.engine.status().to_json()
        with self.engine.state_lock:
            body["revision"] = self.machine.revision
            body["compact_revision"] = self.machine.compact_revision
        for name, section in self.status_sections.items():
            body[name] = section()
        return json_response(body)

    async def transfer_leadership(self, request: web.BaseRequest) -> web.Response:
        query = _query(request, {"timeout"})
        payload = await _json_body(request, self.limits, empty={})
        target: str | None = None
        if not isinstance(payload, dict):
            raise ApiError(400, "wrong_type", "request body must be a JSON object (or empty)")
        if payload:
            unknown = set(payload) - {"to"}
            if unknown:
                raise ApiError(400, "unknown_field", f"unknown field(s): {', '.join(sorted(unknown))}")
            target = payload.get("to")
            if target is not None and not isinstance(target, str):
                raise ApiError(400, "wrong_type", "'to' must be a string node id")
        members = {m.id for m in self.engine.status().members}
        if target is not None and target not in members:
            raise ApiError(404, "not_found", f"unknown node id {target!r}; members: {sorted(members)}")
        try:
            await self.engine.transfer_leadership(target, self._timeout(query))
        except NotLeaderError as exc:
            raise ApiError(409, "not_leader", str(exc), leader_id=exc.leader_id) from None
        except (NoLeaderError, EngineStoppedError) as exc:
            raise no_leader(str(exc)) from None
        except OutcomeUnknownError as exc:
            raise ApiError(504, "transfer_timeout", str(exc)) from None
        return json_response({"leader_id": self.engine.status().leader_id})

    async def hotkeys(self, request: web.BaseRequest) -> web.Response:
        query = _query(request, {"limit", "timeout"})
        self._timeout(query)
        limit = _positive_int(query, "limit")
        capacity = self.hot_keys.capacity
        if limit is not None and limit > capacity:
            raise ApiError(400, "invalid_argument", f"limit must be at most {capacity}, got {limit}")
        body = self.hot_keys.to_json(limit if limit is not None else 10)
        body["node_id"] = self.engine.status().node_id
        return json_response(body)

    async def scrape_metrics(self, request: web.BaseRequest) -> web.Response:
        self._timeout(_query(request, {"timeout"}))
        # Prometheus asks for OpenMetrics in Accept; anything else gets the
        # classic text format.
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encode(self.metrics.registry), headers={"Content-Type": content_type})

    async def healthz(self, request: web.BaseRequest) -> web.Response:
        self._timeout(_query(request, {"timeout"}))
        _raise_if_engine_failed(self.engine.failure)
        return json_response({"status": "ok"})

    async def readyz(self, request: web.BaseRequest) -> web.Response:
        self._timeout(_query(request, {"timeout"}))
        status = self.engine.status()
        _raise_if_engine_failed(status.failure)
        if status.not_ready_reason is not None:
            raise ApiError(503, "not_ready", status.not_ready_reason, headers={"Retry-After": "1"})
        return json_response(
            {"status": "ready", "role": status.role, "leader_id": status.leader_id}
        )



def _raise_if_engine_failed(failure: str | None) -> None:
    if failure is not None:
        # No Retry-After: this node stays failed until an operator restarts it.
        raise ApiError(
            503,
            "engine_failed",
            f"the engine failed: {failure}; this node serves nothing until it is "
            "restarted (fix the cause first), use another node",
        )


# -- request parsing helpers ----------------------------------------------


def _query(request: web.BaseRequest, allowed: set[str]) -> dict[str, str]:
    query = request.query
    # aiohttp turns bytes that are not UTF-8 into U+FFFD; only then is the raw
    # query decoded again, strictly (a real U+FFFD passes, a bad byte is 400).
    if any("\ufffd" in name or "\ufffd" in value for name, value in query.items()):
        decode_query(request.rel_url.raw_query_string)
    names = set(query)  # multidict iterates each name once
    unknown = names - allowed
    if unknown:
        hint = f"; allowed: {', '.join(sorted(allowed))}" if allowed else ""
        raise ApiError(
            400, "unknown_field", f"unknown query parameter(s): {', '.join(sorted(unknown))}{hint}"
        )
    if len(query) > len(names):
        repeated = next(name for name in sorted(names) if len(query.getall(name)) > 1)
        raise ApiError(400, "invalid_argument", f"query parameter {repeated!r} given more than once")
    return dict(query)


def _check_body_headers(request: web.BaseRequest, limits: Limits) -> None:
    """Refuse before any body is read: an Expect other than 100-continue, or
    a Content-Length over the request limit (413 even when the client waits
    for 100 Continue, which it then never gets)."""
    expect = request.headers.get("Expect")
    if expect is not None and expect.lower() != "100-continue":
        raise ApiError(417, "expectation_failed", f"only Expect: 100-continue is supported, got {expect!r}")
    length = request.content_length
    if length is not None and length > limits.max_request_bytes:
        raise ApiError(
            413,
            "request_too_large",
            f"request body is {length} bytes (Content-Length); the limit is "
            f"{limits.max_request_bytes} bytes",
        )


async def _read_body(request: web.BaseRequest, limits: Limits) -> bytes:
    """The whole body, within limits.body_timeout; 100 Continue first when
    the client asked for it (only now: a request refused before its body is
    read gets its final answer instead)."""
    if request.content.is_eof():  # the usual small body came with the head
        return await request.read()
    if request.headers.get("Expect", "").lower() == "100-continue":
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    try:
        async with asyncio.timeout(limits.body_timeout):
            return await request.read()
    except TimeoutError:
        raise ApiError(
            408,
            "request_timeout",
            f"the request body did not arrive within {limits.body_timeout:g} s",
        ) from None
    except (ConnectionError, HttpProcessingError) as exc:
        # The client went away mid-body or sent a broken one (bad chunk
        # size): nothing to apply, nothing for the log to trace.
        log.info("incomplete request body on %s %s: %r", request.method, request.path, exc)
        raise ApiError(400, "incomplete_body", f"the request body is incomplete: {exc}") from None


_NO_DEFAULT = object()


async def _json_body(request: web.BaseRequest, limits: Limits, empty: Any = _NO_DEFAULT) -> Any:
    """The request body as JSON; ``empty`` (if given) stands for a blank body."""
    body = await _read_body(request, limits)
    if empty is not _NO_DEFAULT and not body.strip():
        return empty
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"request body is not valid JSON: {exc}") from None


def _check(validator: Callable[..., Any], *args: Any) -> Any:
    try:
        return validator(*args)
    except RequestError as exc:
        raise ApiError(exc.status, exc.code, exc.message) from None


def _lease_param(query: dict[str, str]) -> int:
    """?lease=ID (hex): attach the written key to that lease (0: none)."""
    text = query.get("lease")
    if text is None:
        return 0
    lease = parse_lease_id(text)
    if lease is None:
        raise ApiError(400, "invalid_argument", f"lease must be 1 to 16 hex digits naming a lease, got {text[:40]!r}")
    return lease


def _revision(query: dict[str, str]) -> int | None:
    """?revision=R: read the state as of revision R (None: now)."""
    text = query.get("revision")
    return None if text is None else parse_uint(text, "revision", minimum=1)


@contextlib.contextmanager
def _history_errors() -> Iterator[None]:
    """A read of a revision the history no longer (or does not yet) hold."""
    try:
        yield
    except CompactedError as exc:
        raise ApiError(
            410, "compacted", str(exc), compact_revision=exc.compact_revision, revision=exc.current_revision
        ) from None
    except FutureRevisionError as exc:
        raise ApiError(400, "future_revision", str(exc), revision=exc.current_revision) from None


def _positive_int(query: dict[str, str], name: str) -> int | None:
    text = query.get(name)
    if text is None:
        return None
    return parse_uint(text, name, minimum=1)


def _bool(query: dict[str, str], name: str) -> bool:
    text = query.get(name, "false").lower()
    if text not in ("true", "false", "1", "0"):
        raise ApiError(400, "invalid_argument", f"{name} must be true or false, got {text!r}")
    return text in ("true", "1")


def _idempotency_key(request: web.BaseRequest) -> str | None:
    idem = request.headers.get("Idempotency-Key")
    if idem is None:
        return None
    if not idem or len(idem.encode()) > MAX_IDEMPOTENCY_KEY_BYTES:
        raise ApiError(
            400,
            "invalid_argument",
            f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_BYTES} bytes",
        )
    return idem


# A precondition is ("mod_revision", n), ("exists",) or ("absent",).
Precondition = tuple[Any, ...]


def _precondition(request: web.BaseRequest) -> Precondition | None:
    if_match = request.headers.get("If-Match")
    if_none_match = request.headers.get("If-None-Match")
    if if_match is not None and if_none_match is not None:
        raise ApiError(400, "invalid_argument", "use either If-Match or If-None-Match, not both")
    if if_none_match is not None:
        if if_none_match.strip() != "*":
            raise ApiError(
                400, "invalid_argument", "If-None-Match supports only '*' (create if absent)"
            )
        return ("absent",)
    if if_match is None:
        return None
    tag = if_match.strip()
    if tag == "*":
        return ("exists",)
    if tag.startswith("W/"):
        raise ApiError(400, "invalid_argument", "weak ETags are not supported in If-Match")
    digits = tag[1:-1] if len(tag) >= 2 and tag[0] == tag[-1] == '"' else tag
    return ("mod_revision", parse_uint(digits, 'If-Match (a mod_revision like "12", the ETag of a GET)'))


def _compare_for(key: str, condition: Precondition) -> dict[str, Any]:
    if condition[0] == "mod_revision":
        return commands.compare(key, "mod_revision", "==", condition[1])
    if condition[0] == "absent":
        return commands.compare(key, "version", "==", 0)
    return commands.compare(key, "version", ">", 0)


def _raise_if_precondition_failed(key: str, result: dict[str, Any]) -> None:
    if result["succeeded"]:
        return
    current = result["results"][0]["kv"]
    mod_revision = current["mod_revision"] if current is not None else 0
    state = f"its mod_revision is {mod_revision}" if current is not None else "it does not exist"
    raise ApiError(
        412,
        "precondition_failed",
        f"precondition failed for key {key!r}: {state}",
        headers=_replay_headers(result),
        mod_revision=mod_revision,
    )


def _replay_headers(
    result: dict[str, Any], headers: dict[str, str] | None = None
) -> dict[str, str] | None:
    if result.get("replayed"):
        headers = dict(headers or {})
        headers["Idempotency-Replayed"] = "true"
    return headers


def _method_not_allowed(request: web.BaseRequest, allowed: tuple[str, ...]) -> ApiError:
    return ApiError(
        405,
        "method_not_allowed",
        f"{request.method} is not allowed on {request.path}; allowed: {', '.join(allowed)}",
        headers={"Allow": ",".join(allowed)},
    )
