"""Measure WAL append + sync cost: ``python -m raftkv.storage.bench_wal [DIR]``.

Prints microseconds per batch of 64 records of 100 bytes (append + sync),
per record, and the bare fsync cost on the same disk for comparison.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from raftkv.storage.records import LogRecord
from raftkv.storage.wal import WAL

BATCH = 64
RECORD_BYTES = 100
BATCHES = 2000


def bare_fsync_us(directory: Path, rounds: int) -> float:
    path = directory / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    chunk = b"x" * (BATCH * (RECORD_BYTES + 26))
    try:
        start = time.perf_counter()
        for _ in range(rounds):
            os.write(fd, chunk)
            os.fsync(fd)
        return (time.perf_counter() - start) / rounds * 1e6
    finally:
        os.close(fd)
        path.unlink()


def wal_batch_us(directory: Path, batches: int) -> tuple[float, float]:
    """(append + sync, append only) microseconds per batch."""
    payload = b"p" * RECORD_BYTES
    append_seconds = 0.0
    with WAL.open(directory / "wal") as wal:
        index = 1
        start = time.perf_counter()
        for _ in range(batches):
            batch = [LogRecord(i, 1, 0, payload) for i in range(index, index + BATCH)]
            index += BATCH
            t0 = time.perf_counter()
            wal.append(batch)
            append_seconds += time.perf_counter() - t0
            wal.set_hard_state(1, "n1", index - 1)
            wal.sync()
        total = time.perf_counter() - start
    return total / batches * 1e6, append_seconds / batches * 1e6


def main() -> None:
    with tempfile.TemporaryDirectory(dir=sys.argv[1] if len(sys.argv) > 1 else None) as tmp:
        directory = Path(tmp)
        fsync_us = bare_fsync_us(directory, BATCHES)
        batch_us, append_us = wal_batch_us(directory, BATCHES)
        fsync_again_us = bare_fsync_us(directory, BATCHES)
    print(f"bare write+fsync of one batch-sized chunk: {fsync_us:.0f} / {fsync_again_us:.0f} us (before/after)")
    print(f"WAL append+sync of {BATCH} x {RECORD_BYTES} B: {batch_us:.0f} us per batch, {batch_us / BATCH:.2f} us per record")
    print(f"  of which append (encoding): {append_us:.0f} us per batch, {append_us / BATCH:.2f} us per record")


if __name__ == "__main__":
    main()
