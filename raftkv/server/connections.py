"""Connection hygiene for the HTTP server: deadlines, a connection cap, and
every error aiohttp's own HTTP parser raises answered in our JSON shape.

aiohttp's low-level server keeps a connection as long as its client likes
(a client sending one header byte a second, or nothing at all, holds a file
descriptor for an hour), accepts any number of them, and answers a request
it cannot parse in plain text. A node whose file descriptors run out cannot
accept its peers or write a snapshot, so each connection gets:

- a head deadline: a request head (request line and headers) must be
  complete within ``limits.head_timeout`` seconds of its first byte, else
  ``408 request_timeout`` and close;
- an idle deadline: a connection with no request in progress for
  ``limits.idle_timeout`` seconds is closed (aiohttp's keep-alive timer);
- a cap: beyond ``limits.max_connections`` open client connections a new
  one is answered ``503 too_many_connections`` at once and closed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.web_protocol import RequestHandler

from raftkv.kv.limits import Limits
from raftkv.server.responses import ApiError, raw_error_response

log = logging.getLogger(__name__)

# How long a refused connection may keep sending before it is closed: long
# enough for the client to read the 503 rather than a reset.
_REFUSAL_LINGER = 1.0


class ApiServer(web.Server):
    """aiohttp's low-level server with our request handler and limits."""

    def __init__(self, handler: Any, *, limits: Limits, **kwargs: Any) -> None:
        super().__init__(handler, keepalive_timeout=limits.idle_timeout, **kwargs)
        self.limits = limits
        self.refused_connections = 0
        self.last_refusal_log = -float("inf")

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    def __call__(self) -> RequestHandler:
        return ApiRequestHandler(self, loop=self._loop, **self._kwargs)


class ApiRequestHandler(RequestHandler):
    """One client connection (see the module docstring)."""

    def __init__(self, manager: ApiServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._limits = manager.limits
        self._head_timer: asyncio.TimerHandle | None = None
        self._refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        manager = self._manager
        assert isinstance(manager, ApiServer)
        if manager.open_connections >= self._limits.max_connections:
            self._refuse(transport)
            return
        super().connection_made(transport)

    def _refuse(self, transport: asyncio.BaseTransport) -> None:
        self._refused = True
        transport = cast(asyncio.Transport, transport)
        error = ApiError(
            503,
            "too_many_connections",
            f"this node already serves {self._limits.max_connections} client connections; "
            "retry later or use another node",
            headers={"Retry-After": "1"},
        )
        transport.write(raw_error_response(error))
        if transport.can_write_eof():
            transport.write_eof()
        # Read (and drop) what the client sends meanwhile, so closing does not
        # reset the connection before the client has read the answer.
        self._loop.call_later(_REFUSAL_LINGER, transport.close)
        manager = cast(ApiServer, self._manager)
        manager.refused_connections += 1
        now = self._loop.time()
        if now - manager.last_refusal_log >= 10.0:  # one line per 10 s, not one per refusal
            manager.last_refusal_log = now
            log.warning(
                "refusing client connections: %d open (--max-connections); %d refused so far",
                self._limits.max_connections,
                manager.refused_connections,
            )

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_head_timer()
        if self._refused:
            return
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        super().data_received(data)
        if self._messages:
            self._cancel_head_timer()
        elif data and self._head_timer is None and not self._request_in_progress:
            # Part of a request head arrived between requests (not a body:
            # that arrives while its request is being handled). This may be
            # before aiohttp's loop is back waiting for the next request, so
            # the test is "no request in progress", not "idle".
            self._head_timer = self._loop.call_later(
                self._limits.head_timeout, self._head_timed_out
            )

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if (
            self._messages
            or self._request_in_progress
            or self.transport is None
            or self._force_close
        ):
            return
        error = ApiError(
            408,
            "request_timeout",
            f"the request head (request line and headers) did not arrive within "
            f"{self._limits.head_timeout:g} s",
        )
        self.transport.write(raw_error_response(error))
        log.info("closed a connection whose request head took over %gs", self._limits.head_timeout)
        self.force_close()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """aiohttp's answer to a request it could not parse (or to a handler
        exception dispatch did not catch), in our JSON error shape."""
        if request.writer.output_size > 0:
            raise ConnectionError("the response is partly sent; cannot send an error")
        error = parser_error(status, exc, message, self.max_line_size)
        if error.status >= 500:
            log.error("error serving a request: %s", error.message, exc_info=exc)
        else:
            log.info("refused an unparsable request: %s", error.message)
        response = error.response()
        response.force_close()
        return response


def parser_error(
    status: int, exc: BaseException | None, message: str | None, max_line_size: int
) -> ApiError:
    """Our error for a status (and exception) aiohttp's server reports."""
    text = message or (str(exc) if exc is not None else "")
    if isinstance(exc, LineTooLong):
        # The parser names the limit it hit: the request line's or a header's.
        if exc.args[1] == max_line_size:
            return ApiError(414, "request_line_too_long", f"the request line is too long: {text}")
        return ApiError(431, "header_too_large", f"a request header is too long: {text}")
    if isinstance(exc, BadHttpMessage) and "too many headers" in text.lower():
        return ApiError(431, "header_too_large", f"too many request headers: {text}")
    if status == 400 or isinstance(exc, BadHttpMessage):
        return ApiError(400, "bad_request", f"the request is not valid HTTP/1.1: {text}")
    if status == 504:
        return ApiError(504, "timeout", "the server timed out while handling this request")
    return ApiError(
        500,
        "internal_error",
        "the server failed while handling this request (see the node's log); "
        "if it was a write, it may or may not have been applied",
    )
