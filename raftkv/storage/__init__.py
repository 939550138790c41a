"""Durable storage for the native Raft engine: the WAL and the snapshot store."""

from raftkv.storage.errors import (
    SnapshotCorruptError,
    StorageError,
    WALClosedError,
    WALCorruptError,
    WALFailedError,
    WALLockedError,
)
from raftkv.storage.records import HardState, LogRecord
from raftkv.storage.snapshots import SnapshotStore
from raftkv.storage.wal import WAL, RecoveredLog

__all__ = [
    "WAL",
    "HardState",
    "LogRecord",
    "RecoveredLog",
    "SnapshotCorruptError",
    "SnapshotStore",
    "StorageError",
    "WALClosedError",
    "WALCorruptError",
    "WALFailedError",
    "WALLockedError",
]
