"""JSON responses and the one error type every handler raises."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web

JSON = "application/json"


def json_response(
    payload: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    # The trailing newline keeps a shell prompt off the end of curl's output.
    return web.Response(
        body=orjson.dumps(payload) + b"\n", status=status, content_type=JSON, headers=headers
    )


class ApiError(Exception):
    """An error answered as ``{"error": {"code": ..., "message": ..., **extra}}``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers
        self.extra = extra

    def body(self) -> bytes:
        return orjson.dumps({"error": {"code": self.code, "message": self.message, **self.extra}}) + b"\n"

    def response(self) -> web.Response:
        return web.Response(body=self.body(), status=self.status, content_type=JSON, headers=self.headers)


def raw_error_response(error: ApiError) -> bytes:
    """A complete HTTP/1.1 response that closes the connection, as bytes: for
    answers written straight to a transport, outside any request (a refused
    connection, a request head that never finished)."""
    body = error.body()
    head = [
        f"HTTP/1.1 {error.status} {HTTPStatus(error.status).phrase}",
        f"Content-Type: {JSON}",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in (error.headers or {}).items()),
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def no_leader(message: str) -> ApiError:
    return ApiError(503, "no_leader", message, headers={"Retry-After": "1"})
