"""Measure WAL append + sync cost: ``python -m raftkv.storage.bench_wal [DIR]``.

A WAL batch (64 records of 100 bytes + a hard state, then sync) and a bare
write+fsync of the same number of bytes alternate, so both see the same disk
load; medians are printed. The difference is what the WAL itself costs.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from raftkv.storage.records import LogRecord
from raftkv.storage.wal import WAL

BATCH = 64
RECORD_BYTES = 100
ROUNDS = 1000


def main() -> None:
    payload = b"p" * RECORD_BYTES
    with tempfile.TemporaryDirectory(dir=sys.argv[1] if len(sys.argv) > 1 else None) as tmp:
        directory = Path(tmp)
        probe_fd = os.open(directory / "fsync-probe", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        wal_us, bare_us, append_us = [], [], []
        with WAL.open(directory / "wal") as wal:
            chunk = b""
            index = 1
            for _ in range(ROUNDS):
                batch = [LogRecord(i, 1, 0, payload) for i in range(index, index + BATCH)]
                index += BATCH
                t0 = time.perf_counter()
                wal.append(batch)
                t1 = time.perf_counter()
                wal.set_hard_state(1, "n1", index - 1)
                wal.sync()
                t2 = time.perf_counter()
                chunk = chunk or b"x" * (os.path.getsize(wal.segment_paths()[-1]))
                os.write(probe_fd, chunk)
                os.fsync(probe_fd)
                t3 = time.perf_counter()
                append_us.append((t1 - t0) * 1e6)
                wal_us.append((t2 - t0) * 1e6)
                bare_us.append((t3 - t2) * 1e6)
        os.close(probe_fd)
    wal_median, bare_median, append_median = (statistics.median(v) for v in (wal_us, bare_us, append_us))
    print(f"WAL append+sync of {BATCH} x {RECORD_BYTES} B: median {wal_median:.0f} us per batch, "
          f"{wal_median / BATCH:.2f} us per record")
    print(f"  append (encode + buffer) alone: {append_median:.0f} us per batch, {append_median / BATCH:.2f} us per record")
    print(f"bare write+fsync of the same bytes, interleaved: median {bare_median:.0f} us")
    print(f"WAL overhead over a bare fsync: {wal_median - bare_median:.0f} us per batch")


if __name__ == "__main__":
    main()
