"""Pure retry policy: backoff delays, which failures to retry, endpoint order.

No clocks and no I/O here: time and randomness are passed in, so every rule
is checked by plain function calls in the tests.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


def backoff_cap(attempt: int, base: float, maximum: float) -> float:
    """Upper bound of the delay before retry number ``attempt`` (0-based)."""
    if attempt < 0:
        raise ValueError("attempt must be >= 0")
    # min() before the power would overflow for large attempt counts.
    return min(maximum, base * (2 ** min(attempt, 62)))


def backoff_delay(
    attempt: int,
    base: float,
    maximum: float,
    uniform: Callable[[float, float], float] = random.uniform,
    retry_after: float | None = None,
) -> float:
    """Full-jitter exponential backoff: uniform in [0, cap].

    Full jitter spreads clients that failed together (say, at a leader crash)
    so they do not retry in lock step. A server's Retry-After is honoured as a
    floor, but never beyond ``maximum`` so one hint cannot stall the caller.
    """
    delay = uniform(0.0, backoff_cap(attempt, base, maximum))
    if retry_after is not None and retry_after > 0:
        delay = max(delay, min(retry_after, maximum))
    return delay


class RequestKind(enum.Enum):
    READ = "read"  # changes nothing: always safe to resend
    WRITE = "write"  # carries an Idempotency-Key: safe to resend with the same key
    CONTROL = "control"  # neither; resend only when it surely was not applied


class Failure(enum.Enum):
    # The connect of the request's only attempt failed (refused, timed out):
    # nothing reached a server. See attempts.py for why only then.
    NOT_SENT = "not_sent"
    LOST = "lost"  # may have been sent, then the connection broke or the response timed out
    NO_LEADER = "no_leader"  # 503: the server says nothing was applied
    TIMED_OUT = "timed_out"  # 504: submitted, outcome unknown
    SERVER_ERROR = "server_error"  # other 5xx: treat like LOST
    # 409 idempotency_key_in_flight: the node is still working on an earlier
    # attempt with this key, which may yet apply; ask again for its answer.
    IN_FLIGHT = "in_flight"


# 401 codes a new token may cure (not authentication_failed: a wrong password).
STALE_TOKEN_CODES = frozenset({"unauthenticated", "invalid_token", "token_expired"})


def may_have_applied(failure: Failure) -> bool:
    return failure in (Failure.LOST, Failure.TIMED_OUT, Failure.SERVER_ERROR, Failure.IN_FLIGHT)


def is_retryable(kind: RequestKind, failure: Failure) -> bool:
    if kind is RequestKind.CONTROL:
        return not may_have_applied(failure)
    return True


def failure_for_answer(status: int, code: str) -> Failure | None:
    """The retry class of an answer (status and error code), or None when it is final."""
    if status == 409 and code == "idempotency_key_in_flight":
        return Failure.IN_FLIGHT
    return failure_for_status(status)


def failure_for_status(status: int) -> Failure | None:
    """The retry class of an HTTP status, or None when the answer is final."""
    if status == 503:
        return Failure.NO_LEADER
    if status == 504:
        return Failure.TIMED_OUT
    if status >= 500:
        return Failure.SERVER_ERROR
    return None


@dataclass
class EndpointSelector:
    """Which endpoint to try first: the known leader, then healthy ones, then
    the ones that failed most recently.

    Sending to the leader saves the follower->leader forwarding hop; keeping
    failed endpoints last (not removing them) means a node that comes back is
    used again once the others fail.
    """

    endpoints: Sequence[str]
    leader: str | None = None
    _failed_at: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.endpoints:
            raise ValueError("at least one endpoint is required")
        self.endpoints = list(self.endpoints)

    def order(self) -> list[str]:
        healthy = [e for e in self.endpoints if e not in self._failed_at and e != self.leader]
        failed = sorted(
            (e for e in self.endpoints if e in self._failed_at and e != self.leader),
            key=lambda e: self._failed_at[e],
        )
        first = [self.leader] if self.leader is not None else []
        return first + healthy + failed

    def pick(self, attempt: int, order: Sequence[str]) -> str:
        """The endpoint for attempt number ``attempt`` of one request.

        The leader while one is known (a 504 from it is worth resending there);
        otherwise walk ``order`` (taken when the request started) round-robin,
        so a node that keeps answering 503 from a minority partition does not
        absorb every retry.
        """
        if self.leader is not None:
            return self.leader
        return order[attempt % len(order)]

    def mark_leader(self, endpoint: str) -> None:
        if endpoint not in self.endpoints:
            raise ValueError(f"unknown endpoint {endpoint!r}")
        self.leader = endpoint
        self._failed_at.pop(endpoint, None)

    def mark_failed(self, endpoint: str, now: float) -> None:
        self._failed_at[endpoint] = now
        if self.leader == endpoint:
            self.leader = None

    def mark_ok(self, endpoint: str) -> None:
        self._failed_at.pop(endpoint, None)

    def forget_leader(self) -> None:
        self.leader = None


def normalize_endpoint(endpoint: str) -> str:
    e = endpoint.strip().rstrip("/")
    if not (e.startswith("http://") or e.startswith("https://")) or len(e.split("://", 1)[1]) == 0:
        raise ValueError(f"endpoint must look like http://host:port, got {endpoint!r}")
    return e


def parse_endpoints(text: str) -> list[str]:
    """Comma-separated endpoints (the CLI / env var form)."""
    parts = [p for p in (s.strip() for s in text.split(",")) if p]
    if not parts:
        raise ValueError("no endpoints given")
    return [normalize_endpoint(p) for p in parts]


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After in seconds; the HTTP-date form is ignored (we never send it)."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
