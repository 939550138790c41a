"""Errors shared by the engines, the server and the client.

Each error says whether the operation may have taken effect, because a caller
deciding whether to retry needs exactly that fact.
"""

from __future__ import annotations


class RaftKVError(Exception):
    """Base class for every raftkv error."""


class NoLeaderError(RaftKVError):
    """No leader or no quorum is reachable; the operation was not submitted.

    Nothing was applied, so retrying is always safe.
    """


class OutcomeUnknownError(RaftKVError):
    """The operation was submitted but its result did not arrive in time.

    It may or may not have been applied (now or later). Retry only with the
    same idempotency key, or read back to find out.
    """


class ReadTimeoutError(RaftKVError):
    """A linearizable read could not be confirmed in time. Reads change
    nothing, so retrying is always safe."""


class EngineStoppedError(RaftKVError):
    """The engine is shutting down or not started."""


class NotLeaderError(RaftKVError):
    """The request must run on the leader and this node is not it."""

    def __init__(self, message: str, leader_id: str | None) -> None:
        super().__init__(message)
        self.leader_id = leader_id
