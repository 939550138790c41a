"""Exceptions the client raises.

They extend the shared classes in :mod:`raftkv.errors` where the meaning is
the same, so code that handles engine/server errors handles these too. Each
one says whether the operation may have taken effect.
"""

from __future__ import annotations

from typing import Any

from raftkv.errors import NoLeaderError, OutcomeUnknownError, RaftKVError


class ClientError(RaftKVError):
    """Base class for every error raised by the raftkv client."""


class Unavailable(ClientError, NoLeaderError):
    """No node could serve the request within the retry budget.

    Raised only when no attempt could have applied the operation (every
    attempt was refused, never sent, or answered 503 / a read timeout), so
    retrying later is always safe.
    """

    def __init__(self, message: str, last_error: str | None = None) -> None:
        super().__init__(message)
        self.last_error = last_error


class TLSFailure(Unavailable):
    """No endpoint completed a TLS handshake: the server's certificate did
    not verify (trust its CA: ``ca_file``) or the server refused ours. Nothing
    was sent, and retrying cannot help until the configuration changes."""


class OutcomeUnknown(ClientError, OutcomeUnknownError):
    """A write was sent but no definite answer arrived.

    It may or may not have been applied. Retrying with the same
    ``idempotency_key`` is safe (the server replays the first result);
    retrying without it may apply the write twice.
    """

    def __init__(self, message: str, idempotency_key: str | None) -> None:
        super().__init__(message)
        self.idempotency_key = idempotency_key


class ResultExpired(ClientError):
    """The write with this idempotency key was applied, once, earlier; the
    server no longer keeps its result (see docs/api.md, retention), so it
    cannot be replayed. Nothing was applied by this request. Read the keys to
    see the state."""

    def __init__(self, message: str, idempotency_key: str | None) -> None:
        super().__init__(message)
        self.idempotency_key = idempotency_key


class InvalidResponse(ClientError):
    """The server answered with something that breaks the API contract."""


class RequestRejected(ClientError):
    """The server definitely refused the request; nothing was applied."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details: dict[str, Any] = details or {}


class NotFound(RequestRejected):
    """The key does not exist (``get`` returns ``None`` instead of raising)."""


class PreconditionFailed(RequestRejected):
    """An ``If-Match`` / ``If-None-Match`` condition did not hold.

    ``mod_revision`` is the key's current mod_revision (0 when absent).
    """

    def __init__(self, message: str, mod_revision: int, details: dict[str, Any] | None = None) -> None:
        super().__init__(412, "precondition_failed", message, details)
        self.mod_revision = mod_revision
