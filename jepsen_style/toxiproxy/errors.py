"""The one error type the HTTP API turns into a response.

Toxiproxy answers every failure with ``{"error": "<message>", "status": <code>}``
and the same HTTP status; clients (toxiproxy-python among them) branch on the
status alone, so the codes must match Toxiproxy's exactly.
"""

from __future__ import annotations


class ApiError(Exception):
    """A failure the caller caused or must know about, with its HTTP status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    def to_json(self) -> dict[str, object]:
        return {"error": self.message, "status": self.status}


def bad_request(detail: str) -> ApiError:
    return ApiError(f"bad request body: {detail}", 400)


def missing_field(field: str) -> ApiError:
    return ApiError(f"missing required field: {field}", 400)


def proxy_not_found(name: str) -> ApiError:
    return ApiError(f"proxy not found: {name}", 404)


def proxy_already_exists(name: str) -> ApiError:
    return ApiError(f"proxy already exists: {name}", 409)


def toxic_not_found(name: str) -> ApiError:
    return ApiError(f"toxic not found: {name}", 404)


def toxic_already_exists(name: str) -> ApiError:
    return ApiError(f"toxic already exists: {name}", 409)


def invalid_stream(stream: object) -> ApiError:
    return ApiError(
        f"stream was invalid, can be either upstream or downstream (got {stream!r})", 400
    )


def invalid_toxic_type(toxic_type: object) -> ApiError:
    return ApiError(f"invalid toxic type: {toxic_type!r}", 400)


def listen_failed(address: str, reason: str) -> ApiError:
    # Toxiproxy reports an OS-level listen failure as a plain 500.
    return ApiError(f"cannot listen on {address}: {reason}", 500)
