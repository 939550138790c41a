"""GET /v1/watch: committed changes to a key or a prefix, streamed as
Server-Sent Events or NDJSON (docs/api.md#watch); POST
/v1/watch/{id}/progress asks a stream for a progress notification now.

The stream task owns its watcher: it catches up from history chunk by
chunk (writing each before reading the next, so a slow client slows only
its own catch-up), then writes what the hub queues. Messages are written
a revision at a time, never a stream end inside a transaction's events.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web

from raftkv.kv import mvcc
from raftkv.server.http_api import STREAM_GUARD, HttpApi, StreamGuard, _bool, _check, _query, _raise_if_engine_failed
from raftkv.server.json_codec import validate_key, validate_prefix
from raftkv.server.params import parse_seconds, parse_uint
from raftkv.server.responses import ApiError, json_response
from raftkv.watch import events as wire
from raftkv.watch.events import NDJSON, SSE, Event
from raftkv.watch.hub import Watcher, WatchHub

log = logging.getLogger(__name__)

WATCH_PATH = "/v1/watch"
# An idle SSE stream gets a comment this often, so proxies and clients
# with read timeouts keep it open and a vanished client is noticed.
PING_INTERVAL = 15.0
DEFAULT_PROGRESS_INTERVAL = 10.0
_QUERY = {"key", "prefix", "start_revision", "prev_kv", "filter", "progress_interval", "consistency", "timeout"}
_FILTERS = {"noput", "nodelete"}


def install(api: HttpApi) -> WatchHub:
    """Route the watch endpoints of ``api`` to a new hub (created on the
    running loop); the node closes the hub before it stops serving."""
    hub = WatchHub(api.engine, api.machine)
    api.watch_hub = hub
    routes = WatchRoutes(api, hub)
    api.add_route(WATCH_PATH, "GET", routes.watch)
    api.add_subtree(WATCH_PATH + "/", routes.progress)
    return hub


def stream_format(accept: str | None) -> str:
    """SSE or NDJSON from the Accept header (none, or */*: NDJSON)."""
    if accept is None or not accept.strip():
        return NDJSON
    types = {part.split(";")[0].strip().lower() for part in accept.split(",")}
    if "text/event-stream" in types:
        return SSE
    if types & {"application/x-ndjson", "*/*", "application/*"}:
        return NDJSON
    raise ApiError(
        406,
        "not_acceptable",
        f"a watch answers text/event-stream or application/x-ndjson, not {accept[:100]!r}",
    )


class WatchRoutes:
    def __init__(self, api: HttpApi, hub: WatchHub) -> None:
        self.api = api
        self.hub = hub

    async def watch(self, request: web.BaseRequest) -> web.StreamResponse:
        api, hub = self.api, self.hub
        query = _query(request, _QUERY)
        fmt = stream_format(request.headers.get("Accept"))
        key, prefix = query.get("key"), query.get("prefix")
        if (key is None) == (prefix is None):
            raise ApiError(400, "invalid_argument", "give exactly one of key=K and prefix=P")
        if key is not None:
            _check(validate_key, key, api.limits)
        else:
            _check(validate_prefix, prefix, api.limits)
        start = _start_revision(request, query)
        prev_kv = _bool(query, "prev_kv")
        no_put, no_delete = _filters(query.get("filter"))
        interval_text = query.get("progress_interval")
        interval = (
            DEFAULT_PROGRESS_INTERVAL
            if interval_text is None
            else parse_seconds(interval_text, "progress_interval", 0.1, 3600)
        )
        if hub.closed:
            raise ApiError(503, "shutting_down", "this node is stopping; watch another node", headers={"Retry-After": "0"})
        if start is None:
            # "From now" on a follower: no older than a linearizable read.
            await api._read_fence(query)
            with api.engine.state_lock:
                start = api.machine.revision + 1
        else:
            api._timeout(query)
            consistency = query.get("consistency", "linearizable")
            if consistency not in ("linearizable", "serializable"):
                raise ApiError(
                    400, "invalid_argument", f"consistency must be 'linearizable' or 'serializable', got {consistency!r}"
                )
            _raise_if_engine_failed(api.engine.failure)
            with api.engine.state_lock:
                compacted, current = api.machine.compact_revision, api.machine.revision
            if start < compacted:
                raise ApiError(
                    410,
                    "compacted",
                    f"revision {start} is compacted: history before revision {compacted} is gone; "
                    "read the current state and watch from its revision + 1",
                    compact_revision=compacted,
                    revision=current,
                )
        headers = {
            "Content-Type": "text/event-stream; charset=utf-8" if fmt == SSE else "application/x-ndjson",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
            "X-Raftkv-Start-Revision": str(start),
        }
        if request.method == "HEAD":
            return web.Response(headers=headers)
        watcher = hub.watch(key, prefix, start, prev_kv, no_put, no_delete)
        headers["X-Raftkv-Watch-Id"] = str(watcher.id)
        response = web.StreamResponse(headers=headers)
        try:
            await response.prepare(request)
            transport = request.transport
            if transport is not None:
                watcher.abort = transport.abort
            await _stream(hub, watcher, response, fmt, interval, request.get(STREAM_GUARD))
            await response.write_eof()
        except (ConnectionError, asyncio.CancelledError) as exc:
            if isinstance(exc, asyncio.CancelledError):
                raise
            log.debug("watch %d: client gone: %r", watcher.id, exc)
        finally:
            hub.remove(watcher)
        return response

    async def progress(self, request: web.BaseRequest, rest: str) -> web.Response:
        watch_id_text, sep, action = rest.partition("/")
        if not sep or action != "progress" or not watch_id_text:
            raise ApiError(404, "not_found", f"no such endpoint: {request.path}; use POST /v1/watch/<id>/progress")
        if request.method != "POST":
            raise ApiError(
                405, "method_not_allowed", f"{request.method} is not allowed on {request.path}; allowed: POST",
                headers={"Allow": "POST"},
            )
        self.api._timeout(_query(request, {"timeout"}))
        watch_id = parse_uint(watch_id_text, "the watch id (X-Raftkv-Watch-Id of the stream)", minimum=1)
        watcher = self.hub.get(watch_id)
        if watcher is None or watcher.end is not None:
            raise ApiError(
                404, "watch_not_found", f"no open watch {watch_id} on this node (watch ids are per node)"
            )
        watcher.progress_requested = True
        watcher.wakeup.set()
        return json_response({"watch_id": watch_id}, status=202)


def _start_revision(request: web.BaseRequest, query: dict[str, str]) -> int | None:
    """Last-Event-ID: R (an EventSource reconnecting) resumes at R+1 and
    wins over start_revision, which the reconnect repeats from the URL."""
    last = request.headers.get("Last-Event-ID")
    if last is not None and last.strip():
        return parse_uint(last.strip(), "Last-Event-ID (the revision of the last event seen)") + 1
    text = query.get("start_revision")
    return None if text is None else parse_uint(text, "start_revision", minimum=1)


def _filters(text: str | None) -> tuple[bool, bool]:
    if text is None:
        return False, False
    names = {name.strip() for name in text.split(",") if name.strip()}
    unknown = names - _FILTERS
    if unknown or not names:
        raise ApiError(
            400, "invalid_argument", f"filter must be noput, nodelete or both (comma-separated), got {text[:60]!r}"
        )
    return "noput" in names, "nodelete" in names


async def _stream(
    hub: WatchHub,
    watcher: Watcher,
    response: web.StreamResponse,
    fmt: str,
    interval: float,
    guard: StreamGuard | None = None,
) -> None:
    loop = asyncio.get_running_loop()
    now = loop.time()
    last_write = now
    next_progress = now + interval
    while True:
        if guard is not None and watcher.end is None:
            # With auth on: a user whose access was revoked gets nothing more,
            # at the latest by the next progress or ping wake-up.
            refused = guard()
            if refused is not None:
                watcher.take()
                watcher.finish(refused.code, refused.message)
        if not watcher.synced and watcher.end is None:
            hub.catch_up(watcher)
        through = hub.delivered_through(watcher)
        events = watcher.take()
        if events:
            await response.write(_encode(hub, watcher, events, fmt))
            last_write = loop.time()
        if watcher.end is not None and not watcher.queue:
            await response.write(wire.end(fmt, watcher.end))
            return
        now = loop.time()
        if watcher.progress_requested or now >= next_progress:
            watcher.progress_requested = False
            next_progress = now + interval
            if through >= watcher.start_revision - 1:
                await response.write(wire.progress(fmt, through))
                last_write = loop.time()
        if not watcher.synced and watcher.end is None:
            await asyncio.sleep(0)  # more history to read: let others run between chunks
            continue
        watcher.wakeup.clear()
        if watcher.queue or watcher.end is not None or watcher.progress_requested:
            continue
        wait = min(next_progress, last_write + PING_INTERVAL) - loop.time()
        try:
            async with asyncio.timeout(max(wait, 0.0)):
                await watcher.wakeup.wait()
        except TimeoutError:
            if fmt == SSE and loop.time() >= last_write + PING_INTERVAL:
                await response.write(wire.PING)
                last_write = loop.time()


def _encode(hub: WatchHub, watcher: Watcher, events: list[Event], fmt: str) -> bytes:
    if not watcher.prev_kv:
        return b"".join(event.encode(fmt) for event in events)
    parts: list[bytes] = []
    with hub.engine.state_lock:
        txn = hub.machine.store.read()
        try:
            for event in events:
                parts.append(wire.frame(fmt, event.kind, event.revision, event.to_json(_previous(txn, event))))
        finally:
            txn.close()
    return b"".join(parts)


def _previous(txn: Any, event: Event) -> mvcc.Version | None:
    """The key's write before this event, if history still holds it."""
    found = mvcc.previous_write(txn, event.key.encode(), event.revision, event.sub)
    return None if found is None else mvcc.history_version(txn, found[1])
