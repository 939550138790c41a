"""`raftkv dev` as a user runs it: real processes, real ports, real data directories."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from raftkv.local_cluster import free_port_run, port_is_free
from tests.http import call


def dev_ports() -> tuple[int, int]:
    """First HTTP and first Raft port of two non-overlapping runs of 3 free ports."""
    while True:
        http, peer = free_port_run(3), free_port_run(3)
        if abs(http - peer) >= 3:
            return http, peer


class Dev:
    """One `raftkv dev` process and its merged stdout/stderr."""

    def __init__(self, data_dir: Path, http: int, peer: int, *extra: str) -> None:
        self.http, self.peer, self.data_dir = http, peer, data_dir
        self.process = subprocess.Popen(
            [sys.executable, "-m", "raftkv", "dev", "--data-dir", str(data_dir),
             "--http-port", str(http), "--peer-port", str(peer), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.output: list[str] = []

    def wait_for_line(self, text: str, timeout: float = 60) -> None:
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        for line in self.process.stdout:
            self.output.append(line)
            if text in line:
                return
            assert time.monotonic() < deadline, f"no {text!r} in time:\n{''.join(self.output)}"
        raise AssertionError(f"raftkv dev ended without {text!r}:\n{''.join(self.output)}")

    def node_pids(self) -> list[int]:
        """The `raftkv serve` children of this dev process (from /proc)."""
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == self.process.pid:
                    pids.append(int(entry.name))
        return pids

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        rest = self.process.stdout.read() if self.process.stdout else ""
        return "".join(self.output) + rest


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[Dev]:
    http, peer = dev_ports()
    running = Dev(tmp_path / "dev", http, peer, "--clean")
    running.wait_for_line("cluster ready")
    yield running
    running.stop()


def alive(pid: int) -> bool:
    """True if `pid` runs (a zombie waiting for its new parent to reap it counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_second_dev_with_clean_is_refused_and_deletes_nothing(dev: Dev, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{dev.http}/v1/kv/kept"
    assert call("PUT", url, b"acknowledged").status == 200

    # same data directory on other ports: the nodes' WAL locks give it away
    http, peer = dev_ports()
    second = Dev(dev.data_dir, http, peer, "--clean")
    assert second.process.wait(30) == 3
    out = second.stop()
    assert "refusing to start" in out and "Nothing was deleted" in out
    assert f"n1's data directory {dev.data_dir / 'n1'} is locked" in out
    # names the process that holds it, so a user can find a leftover node
    assert any(f"locked by a running node (pid {pid})" in out for pid in dev.node_pids())

    # same ports, another data directory: the ports give it away
    third = Dev(tmp_path / "other", dev.http, dev.peer, "--clean")
    assert third.process.wait(30) == 3
    out = third.stop()
    assert f"n1's HTTP port 127.0.0.1:{dev.http} is in use" in out
    assert f"n3's Raft port 127.0.0.1:{dev.peer + 2} is in use" in out
    assert not (tmp_path / "other").exists()

    assert call("GET", url).body == b"acknowledged"
    assert (dev.data_dir / "n1" / "wal").is_dir()


def test_kill_9_of_dev_takes_its_nodes_with_it(dev: Dev) -> None:
    pids = dev.node_pids()
    assert len(pids) == 3
    dev.process.kill()
    dev.process.wait()
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in pids if alive(pid)], "nodes outlived their kill -9'd raftkv dev"
    # and the next dev on the same ports and data starts
    while not port_is_free(dev.http) and time.monotonic() < deadline:
        time.sleep(0.05)
    again = Dev(dev.data_dir, dev.http, dev.peer)
    try:
        again.wait_for_line("cluster ready")
    finally:
        again.stop()


def test_a_node_whose_data_directory_is_locked_is_not_restarted_in_a_loop(dev: Dev) -> None:
    lock_path = dev.data_dir / "n1" / "wal" / "LOCK"
    n1 = next(pid for pid in dev.node_pids()
              if b"n1" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"))
    fd = os.open(lock_path, os.O_RDWR)
    try:
        os.kill(n1, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while True:  # the lock frees the moment n1 dies; take it before any restart can
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                assert time.monotonic() < deadline
                time.sleep(0.001)
        dev.wait_for_line("not restarting it", timeout=15)
        assert "holds the lock on its data directory" in dev.output[-1]
        time.sleep(2)  # several supervisor rounds and a full backoff
        cmdlines = [Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") for pid in dev.node_pids()]
        assert not [c for c in cmdlines if b"n1" in c], "n1 was started again"
        assert dev.process.poll() is None
    finally:
        os.close(fd)
    out = dev.stop()
    assert out.count("not restarting it") == 1
