"""Idempotency keys of the writes this node is working on.

The replicated table (raftkv/kv/idempotency.py) knows keys once their write
is applied. Between the request's arrival and that answer a second request
with the same key must not be proposed beside the first: it is answered
``409 idempotency_key_in_flight`` (the IETF Idempotency-Key draft's answer)
and can retry once the first has its answer. Each node knows only its own
requests, so this is node-local state, not replicated.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from raftkv.server.responses import ApiError

# State-machine error codes of an idempotency key and their HTTP status: the
# key is spent, nothing was applied by this request, do not resend it.
IDEMPOTENCY_ERROR_STATUS = {"idempotency_key_reused": 422, "idempotency_result_expired": 422}


class InFlightKeys:
    """Keys of writes being proposed by this node (one event loop: no lock)."""

    def __init__(self) -> None:
        self._keys: set[str] = set()

    @contextmanager
    def hold(self, idem: str | None) -> Iterator[None]:
        """Hold ``idem`` while the body runs; ApiError 409 if already held."""
        if idem is None:
            yield
            return
        if idem in self._keys:
            raise ApiError(
                409,
                "idempotency_key_in_flight",
                "a request with this Idempotency-Key is still being processed by this node; "
                "nothing was done for this one: retry it (with the same key) after the first "
                "has its answer",
                headers={"Retry-After": "1"},
            )
        self._keys.add(idem)
        try:
            yield
        finally:
            self._keys.discard(idem)

    def __contains__(self, idem: str) -> bool:
        return idem in self._keys
