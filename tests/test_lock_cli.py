"""`raftkv lock` and `raftkv elect` against a real cluster."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from raftkv.local_cluster import LocalCluster
from tests.http import call
from tests.test_lease_http import wait_until

RAFTKV = [sys.executable, "-m", "raftkv"]


def lock_cli(cluster: LocalCluster, name: str, script: str, ttl: int = 10) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*RAFTKV, "lock", name, "--ttl", str(ttl), "--endpoints", ",".join(cluster.endpoints), "--", "sh", "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_lock_holders_never_overlap_and_tokens_grow(cluster: LocalCluster, tmp_path: Path) -> None:
    log = tmp_path / "holds"
    script = f'echo "start $RAFTKV_FENCING_TOKEN" >> {log}; sleep 0.3; echo "end $RAFTKV_FENCING_TOKEN" >> {log}'
    holders = [lock_cli(cluster, "cli-overlap", script) for _ in range(3)]
    for holder in holders:
        _, err = holder.communicate(timeout=60)
        assert holder.returncode == 0, err
    lines = [line.split() for line in log.read_text().splitlines()]
    assert len(lines) == 6
    tokens = []
    for start, end in zip(lines[::2], lines[1::2]):
        assert start[0] == "start" and end == ["end", start[1]], lines  # no interleaving
        tokens.append(int(start[1]))
    assert tokens == sorted(tokens) and len(set(tokens)) == 3
    assert call("GET", f"{cluster.endpoints[0]}/v1/kv?prefix=__locks/cli-overlap/").json()["kvs"] == []


def test_a_killed_holder_frees_the_lock_within_its_ttl(cluster: LocalCluster, tmp_path: Path) -> None:
    held, got = tmp_path / "held", tmp_path / "got"
    holder = lock_cli(cluster, "cli-kill", f"echo $$ > {held}; exec sleep 60", ttl=2)
    wait_until(lambda: held.exists() and held.read_text().strip() != "", 20)
    waiter = lock_cli(cluster, "cli-kill", f"echo yes > {got}", ttl=2)
    time.sleep(1.0)
    assert not got.exists(), "the waiter ran while the lock was held"
    holder.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    try:
        _, err = waiter.communicate(timeout=30)
        waited = time.monotonic() - killed_at
        assert waiter.returncode == 0, err
        assert got.read_text().strip() == "yes"
        assert waited < 2 + 4, f"the lock took {waited:.1f} s to pass on after its holder was killed (ttl 2 s)"
    finally:
        holder.wait()
        os.kill(int(held.read_text()), signal.SIGKILL)  # the orphaned sleep


def test_a_lost_lease_stops_the_command_and_exits_4(cluster: LocalCluster, tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    holder = lock_cli(cluster, "cli-lost", f'echo "$RAFTKV_LOCK_KEY" > {key_file}; exec sleep 60', ttl=3)
    wait_until(lambda: key_file.exists() and key_file.read_text().strip() != "", 20)
    lease = key_file.read_text().strip().rsplit("/", 1)[1]
    assert call("DELETE", f"{cluster.endpoints[1]}/v1/leases/{lease}").status == 200
    _, err = holder.communicate(timeout=20)
    assert holder.returncode == 4, err
    assert b"lost" in err


def test_elect_campaigns_and_listen_follows_the_leader(cluster: LocalCluster) -> None:
    endpoints = ["--endpoints", ",".join(cluster.endpoints)]
    listener = subprocess.Popen([*RAFTKV, "elect", "cli-e", "--listen", *endpoints], stdout=subprocess.PIPE, text=True)
    seen: list[str] = []
    assert listener.stdout is not None
    out = listener.stdout
    threading.Thread(target=lambda: seen.extend(line.strip() for line in out), daemon=True).start()
    wait_until(lambda: seen == ["-"], 20)  # listening before anyone campaigns
    first = subprocess.Popen([*RAFTKV, "elect", "cli-e", "one", "--ttl", "5", *endpoints], stdout=subprocess.PIPE, text=True)
    second: subprocess.Popen[str] | None = None
    try:
        assert first.stdout is not None
        assert first.stdout.readline().split()[1] == "one"
        second = subprocess.Popen([*RAFTKV, "elect", "cli-e", "two", "--ttl", "5", *endpoints], stdout=subprocess.PIPE, text=True)
        contenders = f"{cluster.endpoints[0]}/v1/kv?prefix=__elections/cli-e/"
        wait_until(lambda: len(call("GET", contenders).json()["kvs"]) == 2, 20)
        first.send_signal(signal.SIGTERM)
        assert first.wait(10) == 0
        assert second.stdout is not None and second.stdout.readline().split()[1] == "two"
        second.send_signal(signal.SIGTERM)
        assert second.wait(10) == 0
        wait_until(lambda: len(seen) >= 4, 10)
        assert seen == ["-", "one", "two", "-"]
    finally:
        for proc in (listener, first, second):
            if proc is not None:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
