"""`raftkv lease ...` and `raftkv put --lease` against a real cluster (docs/leases.md)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from raftkv.local_cluster import LocalCluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    # The CLI talks HTTP through the client, whatever the engine: one engine is enough.
    with LocalCluster(tmp_path_factory.mktemp("lease-cli"), nodes=3, engine="native") as c:
        c.wait_ready()
        yield c


def env(cluster: LocalCluster) -> dict[str, str]:
    return {**os.environ, "RAFTKV_ENDPOINTS": ",".join(cluster.endpoints)}


def raftkv(cluster: LocalCluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "raftkv", *args], env=env(cluster),
                          capture_output=True, text=True, timeout=60)


def test_grant_put_show_keepalive_revoke_round_trip(cluster: LocalCluster) -> None:
    granted = raftkv(cluster, "lease", "grant", "30")
    assert granted.returncode == 0, granted.stderr
    lease_id, ttl, _revision = granted.stdout.split()
    assert len(lease_id) == 16 and ttl == "ttl=30"

    put = raftkv(cluster, "put", "lease-cli/a", "1", "--lease", lease_id)
    assert put.returncode == 0 and put.stdout.startswith("OK revision="), put.stderr
    shown = raftkv(cluster, "lease", "show", lease_id)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[0].startswith(f"id={lease_id} ttl=30 remaining=")
    assert shown.stdout.splitlines()[1:] == ["key=lease-cli/a"]
    listed = raftkv(cluster, "lease", "list")
    assert listed.returncode == 0 and lease_id in listed.stdout

    keeper = subprocess.Popen([sys.executable, "-m", "raftkv", "lease", "keepalive", lease_id], env=env(cluster),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = keeper.stdout.readline() if keeper.stdout else ""
        assert first.startswith(f"{lease_id} renewed ttl=30 remaining="), first
        keeper.send_signal(signal.SIGTERM)
        _out, err = keeper.communicate(timeout=30)
    finally:
        keeper.kill()
    assert keeper.returncode == 0, err

    revoked = raftkv(cluster, "lease", "revoke", lease_id)
    assert revoked.returncode == 0 and f"{lease_id} revoked deleted=1" in revoked.stdout, revoked.stderr
    assert raftkv(cluster, "get", "lease-cli/a").returncode == 1
    gone = raftkv(cluster, "lease", "show", lease_id)
    assert gone.returncode == 1 and "does not exist" in gone.stderr
    # keepalive of a lease that is gone stops at once with 1.
    assert raftkv(cluster, "lease", "keepalive", lease_id).returncode == 1


def test_refusals_have_the_documented_exit_codes(cluster: LocalCluster) -> None:
    missing = "7fffffffffff0002"
    put = raftkv(cluster, "put", "lease-cli/b", "1", "--lease", missing)
    assert put.returncode == 1 and "does not exist" in put.stderr and "nothing was written" in put.stderr
    assert raftkv(cluster, "get", "lease-cli/b").returncode == 1
    assert raftkv(cluster, "lease", "revoke", missing).returncode == 1
    assert raftkv(cluster, "lease", "grant", "0").returncode == 2
    assert raftkv(cluster, "lease", "show", "not-hex").returncode == 2
    assert raftkv(cluster, "put", "lease-cli/b", "1", "--lease", "0").returncode == 2
    chosen = raftkv(cluster, "lease", "grant", "20", "--id", "abc")
    assert chosen.returncode == 0 and chosen.stdout.startswith("0000000000000abc ttl=20"), chosen.stderr
    again = raftkv(cluster, "lease", "grant", "20", "--id", "abc")
    assert again.returncode == 1 and "lease_exists" in again.stderr
    assert raftkv(cluster, "lease", "revoke", "abc").returncode == 0
    down = raftkv(cluster, "lease", "list", "--endpoints", "http://127.0.0.1:1", "--timeout", "0.5")
    assert down.returncode == 3 and "unavailable" in down.stderr
