"""A node whose storage fails: real `raftkv serve` processes on a disk that
fills up (a small tmpfs, or a file-size limit where mounting is not
allowed), and on a WAL corrupted in the middle."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from raftkv.local_cluster import LocalCluster
from raftkv.storage.records import scan_records
from tests.http import Response, call

REPO = Path(__file__).resolve().parents[1]
DISK_BYTES = 1 << 20


def _mount_tmpfs(path: Path) -> bool:
    """A DISK_BYTES tmpfs at ``path``; False where mounting is not allowed."""
    if os.geteuid() != 0:
        return False
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs", str(path)], capture_output=True
    )
    return done.returncode == 0


@pytest.fixture
def full_disk_cluster(tmp_path: Path) -> Iterator[tuple[LocalCluster, str]]:
    """A 3-node native cluster whose n3 writes to a 1 MiB disk.

    Yields the cluster and the OS error message the full disk gives: a tmpfs
    fills up (ENOSPC); without mount rights, RLIMIT_FSIZE on n3's process
    makes the kernel refuse writes past 1 MiB (EFBIG; Python ignores SIGXFSZ).
    """
    cluster = LocalCluster(tmp_path / "c", engine="native")
    n3 = cluster.node("n3")
    mounted = _mount_tmpfs(n3.data_dir)
    try:
        cluster.base_dir.mkdir(parents=True, exist_ok=True)
        cluster.start_node("n1")
        cluster.start_node("n2")
        if mounted:
            cluster.start_node("n3")
            expected = os.strerror(28)  # ENOSPC: No space left on device
        else:
            soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
            resource.setrlimit(resource.RLIMIT_FSIZE, (DISK_BYTES, hard))
            try:
                cluster.start_node("n3")
            finally:
                resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
            expected = os.strerror(27)  # EFBIG: File too large
        cluster.wait_ready(30)
        yield cluster, expected
    finally:
        cluster.stop()
        if mounted:
            subprocess.run(["umount", str(n3.data_dir)], check=False)


def _write_until_failed(cluster: LocalCluster, node_url: str, deadline_s: float = 60) -> None:
    value = os.urandom(48 << 10)
    deadline = time.monotonic() + deadline_s
    i = 0
    while time.monotonic() < deadline:
        status = call("GET", f"{node_url}/v1/status", timeout=5).json()
        if status["failure"] is not None:
            return
        i += 1
        # Through whichever healthy node answers; the full one may lead.
        for node_id in ("n1", "n2"):
            try:
                if call("PUT", f"{cluster.node(node_id).url}/v1/kv/fill/{i}?timeout=2", value, timeout=5).status == 200:
                    break
            except OSError:
                continue
    raise AssertionError(f"n3 did not fail within {deadline_s}s")


def _engine_failed(response: Response, expected: str) -> None:
    assert response.status == 503, (response.status, response.body)
    assert response.error_code == "engine_failed"
    assert expected in response.json()["error"]["message"]


def test_a_full_disk_makes_the_node_say_engine_failed(full_disk_cluster: tuple[LocalCluster, str]) -> None:
    cluster, expected = full_disk_cluster
    url = cluster.node("n3").url
    assert call("PUT", f"{cluster.node('n1').url}/v1/kv/before", b"1").status == 200
    _write_until_failed(cluster, url)
    # The process is up, but its engine is not: not healthy, not ready, and
    # its frozen replica is not served, not even as a serializable read.
    _engine_failed(call("GET", f"{url}/healthz"), expected)
    _engine_failed(call("GET", f"{url}/readyz"), expected)
    _engine_failed(call("GET", f"{url}/v1/kv/before?consistency=serializable"), expected)
    status = call("GET", f"{url}/v1/status").json()
    assert status["role"] == "failed" and expected in status["failure"]
    assert status["ready"] is False and expected in status["not_ready_reason"]
    cli = subprocess.run(
        [sys.executable, "-m", "raftkv", "status", "--all", "--endpoints", ",".join(cluster.endpoints)],
        cwd=REPO, capture_output=True, text=True, timeout=30,
    )
    row = next(line for line in cli.stdout.splitlines() if line.startswith(url))
    assert " failed " in row and expected in cli.stdout, cli.stdout
    # The other two carry on.
    leader = cluster.leader(["n1", "n2"])
    assert leader is not None
    assert call("PUT", f"{cluster.node(leader).url}/v1/kv/after", b"2").status == 200
    assert call("GET", f"{cluster.node('n1').url}/healthz").status == 200


def test_a_wal_corrupt_mid_log_refuses_to_start_with_one_line_then_recovers(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path / "c", engine="native")
    try:
        cluster.start()
        cluster.wait_ready(30)
        url = cluster.node("n1").url
        for i in range(40):
            assert call("PUT", f"{url}/v1/kv/k{i}", f"v{i}").status == 200
        cluster.stop()
        n1 = cluster.node("n1")
        segment = max((n1.data_dir / "wal").glob("*.wal"))
        data = bytearray(segment.read_bytes())
        records = scan_records(bytes(data)).records
        assert len(records) > 20
        victim = records[len(records) // 2]
        data[victim.offset + 12] ^= 0xFF  # inside the record: its checksum no longer matches
        segment.write_bytes(bytes(data))

        done = subprocess.run(cluster.command(n1), cwd=REPO, capture_output=True, text=True, timeout=60)
        assert done.returncode == 1, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr  # no traceback, no log noise
        assert str(segment) in lines[0] and f"offset {victim.offset}" in lines[0]
        assert "Recovering a node whose data is corrupt" in lines[0]

        # The documented recovery: move the data dir away, start the node empty;
        # the leader repairs it.
        n1.data_dir.rename(tmp_path / "n1-corrupt")
        cluster.start()
        cluster.wait_ready(30)
        read = call("GET", f"{url}/v1/kv/k39")
        assert read.status == 200 and read.body == b"v39"
        assert call("GET", f"{url}/v1/kv/k0?consistency=serializable").body == b"v0"
    finally:
        cluster.stop()
