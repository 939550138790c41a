"""JSON responses and the one error type every handler raises."""

from __future__ import annotations

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

    def response(self) -> web.Response:
        body = {"error": {"code": self.code, "message": self.message, **self.extra}}
        return json_response(body, self.status, self.headers)


def no_leader(message: str) -> ApiError:
    return ApiError(503, "no_leader", message, headers={"Retry-After": "1"})
