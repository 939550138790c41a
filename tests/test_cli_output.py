"""What the `raftkv` client commands print, as a user sees it: a real cluster, a real terminal (pty)."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from raftkv.local_cluster import LocalCluster
from tests.http import call


@pytest.fixture(scope="module")
def one_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    # Output formatting does not depend on replication: one node is enough.
    with LocalCluster(tmp_path_factory.mktemp("cli"), nodes=1, engine="native") as c:
        c.wait_ready()
        yield c


def raftkv(cluster: LocalCluster, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "raftkv", *args, "--endpoints", cluster.endpoints[0]],
                          capture_output=True, timeout=30)


def on_a_terminal(cluster: LocalCluster, *args: str) -> bytes:
    """stdout of the command when stdout is a terminal."""
    leader, follower = pty.openpty()
    try:
        subprocess.run([sys.executable, "-m", "raftkv", *args, "--endpoints", cluster.endpoints[0]],
                       stdout=follower, stderr=subprocess.DEVNULL, timeout=30, check=True)
        os.close(follower)
        follower = -1
        out = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the terminal's other side is closed and drained
                break
            if not chunk:
                break
            out += chunk
        return out
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)


@pytest.mark.parametrize("command", [["put", "", "x"], ["get", ""], ["put", "", "-"]])
def test_an_empty_key_is_a_usage_error_not_a_traceback(one_node: LocalCluster, command: list[str]) -> None:
    result = raftkv(one_node, *command)
    assert result.returncode == 2
    assert b"Traceback" not in result.stderr
    assert b"key must not be empty" in result.stderr


def test_get_ends_with_a_newline_on_a_terminal_and_gives_the_bytes_to_a_pipe(one_node: LocalCluster) -> None:
    assert raftkv(one_node, "put", "greeting", "hello").returncode == 0
    assert raftkv(one_node, "get", "greeting").stdout == b"hello"
    # a pty turns \n into \r\n
    assert on_a_terminal(one_node, "get", "greeting") == b"hello\r\n"
    assert raftkv(one_node, "put", "lines", "a\n").returncode == 0
    assert on_a_terminal(one_node, "get", "lines") == b"a\r\n"


def test_ls_escapes_control_characters(one_node: LocalCluster) -> None:
    base = one_node.endpoints[0]
    assert call("PUT", f"{base}/v1/kv/esc/a%1B%5B31mred", b"x\ty\nz\x07\\ \xff").status == 200
    assert call("PUT", f"{base}/v1/kv/esc/b", "é ok".encode()).status == 200
    listing = raftkv(one_node, "ls", "esc/")
    assert listing.returncode == 0
    assert listing.stdout.decode() == "esc/a\\x1b[31mred\tx\\ty\\nz\\x07\\\\ \\xff\nesc/b\té ok\n"
    keys = raftkv(one_node, "ls", "esc/", "--keys-only")
    assert keys.stdout == b"esc/a\\x1b[31mred\nesc/b\n"
