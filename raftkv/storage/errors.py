"""Errors raised by the durable storage layer."""

from __future__ import annotations

from pathlib import Path

from raftkv.errors import RaftKVError


class StorageError(RaftKVError):
    """Base class for storage errors."""


class WALCorruptError(StorageError):
    """A record that is not at the tail of the log failed verification.

    Starting anyway could silently drop committed entries, so the node must
    refuse to start until an operator looks at ``path`` around ``offset``.
    """

    def __init__(self, path: Path, offset: int, reason: str) -> None:
        super().__init__(f"WAL corrupt in {path} at byte offset {offset}: {reason}")
        self.path = path
        self.offset = offset
        self.reason = reason


class WALLockedError(StorageError):
    """Another WAL instance (probably another process) holds the directory."""


class WALFailedError(StorageError):
    """A write or fsync failed earlier; what reached the disk is unknown.

    After a failed fsync the kernel may have dropped the dirty pages, so
    retrying could report durability that does not exist. The only safe
    continuation is to reopen (recover) the WAL, normally by restarting.
    """


class WALClosedError(StorageError):
    """The WAL was used after close()."""


class SnapshotCorruptError(StorageError):
    """Snapshot files exist but none of them passes verification."""
