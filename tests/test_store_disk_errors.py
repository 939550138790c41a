"""LMDB reports a short write as a bare EIO; the store names the real cause
(a full disk, or the process's file-size limit) so the node's failure tells
an operator what to fix. Real LMDB files, in a child process so the
file-size limit does not reach the test runner."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from tests.test_engine_failure import DISK_BYTES, _mount_tmpfs

_FILL = textwrap.dedent(
    """
    import os, resource, sys
    from pathlib import Path
    from raftkv.kv.store import LmdbStore
    if sys.argv[2] == "limit":
        resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[3]), resource.RLIM_INFINITY))
    store = LmdbStore(Path(sys.argv[1]), map_size=64 << 20)
    for i in range(10_000):
        txn = store.write()
        for j in range(16):
            txn.put("latest", b"k%d-%d" % (i, j), os.urandom(4096))
        try:
            txn.commit()
        except OSError as exc:
            print(exc.errno, exc)
            sys.exit(0)
    print("no failure")
    """
)


def _fill(path: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", _FILL, str(path), *args], capture_output=True, text=True, timeout=60,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_file_size_limit_is_named_not_reported_as_eio(tmp_path: Path) -> None:
    out = _fill(tmp_path / "store", "limit", str(DISK_BYTES))
    assert out.startswith("27 [Errno 27] File too large"), out
    assert "ulimit -f" in out


def test_a_full_disk_is_named_not_reported_as_eio(tmp_path: Path) -> None:
    import pytest

    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk):
        pytest.skip("mounting a tmpfs needs root")
    try:
        out = _fill(disk / "store", "none")
    finally:
        subprocess.run(["umount", str(disk)], check=False)
    assert out.startswith("28 [Errno 28] No space left on device"), out
