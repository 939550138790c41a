"""One HTTP attempt per request, and what its failure proves.

aiohttp re-sends a request by itself: ``ClientSession._request`` retries a
method that HTTP calls idempotent (GET, HEAD, PUT, DELETE, ...) once, on a
new connection, when the first attempt fails with ``ClientOSError`` or
``ServerDisconnectedError`` (RFC 9112's retry of a request on a persistent
connection the server closed). For raftkv that is wrong twice over: a node
killed after it read (and maybe applied) a PUT makes aiohttp send it again,
and when that second connect is refused the caller sees
``ClientConnectorError``, which reads as "never sent" although the first
attempt may have been applied. So every request gets a ``SingleAttempt``
middleware: the re-send fails with the first attempt's error instead of
going out, and only a connect failure of the one attempt counts as "not
sent". Retrying is the caller's decision (with its idempotency key).
"""

from __future__ import annotations

import aiohttp
from aiohttp import ClientHandlerType, ClientRequest, ClientResponse


class SingleAttempt:
    """A per-request aiohttp client middleware (``middlewares=(attempt,)``)."""

    __slots__ = ("broken", "sent_attempts")

    def __init__(self) -> None:
        # The error that broke an attempt's connection; a re-send raises it.
        self.broken: BaseException | None = None
        self.sent_attempts = 0  # attempts that went to aiohttp's connection layer

    async def __call__(self, request: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
        if self.broken is not None:
            raise self.broken
        self.sent_attempts += 1
        try:
            return await handler(request)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError):
            raise  # aiohttp never re-sends after a failed connect
        except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError) as exc:
            self.broken = exc
            raise

    def proves_not_sent(self, error: BaseException) -> bool:
        """Whether ``error`` shows nothing of the request reached a server:
        the connect of its one and only attempt failed."""
        return (
            isinstance(error, (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError))
            and self.sent_attempts <= 1
            and self.broken is None
        )
