"""`raftkv watch` against real clusters: one line per event, carrying on
across a node failure, and its exit codes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

from raftkv.client import Client
from raftkv.local_cluster import LocalCluster
from tests.http import call, call_json
from tests.test_watch import put


def raftkv(*args: str, endpoints: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "raftkv", "watch", *args, "--endpoints", ",".join(endpoints)],
        capture_output=True, text=True, timeout=timeout,
    )


def test_watch_prints_each_change_once_across_a_killed_node(make_cluster: Callable[..., LocalCluster]) -> None:
    cluster = make_cluster()
    first = cluster.nodes[0]  # the CLI streams from its first endpoint first
    base = put(cluster.node(cluster.wait_ready()).url, "cli/k0", "start")
    proc = subprocess.Popen(
        [sys.executable, "-m", "raftkv", "watch", "cli/", "--rev", str(base + 1), "--prev-kv", "--count", "30",
         "--endpoints", ",".join(cluster.endpoints)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        with Client(cluster.endpoints, retries=20) as kv:
            for i in range(15):
                kv.put(f"cli/k{i % 3}", f"v{i}")
            assert proc.stdout is not None
            head = [proc.stdout.readline() for _ in range(15)]  # printed: it streams from the first node
            cluster.kill(first.node_id)
            for i in range(15, 29):
                kv.put(f"cli/k{i % 3}", f"v{i}")
            kv.put("cli/bin", b"\xff\nx")
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    lines = "".join(head).splitlines() + out.splitlines()
    assert len(lines) == 30
    revisions = [int(line.split()[0]) for line in lines]
    assert revisions == list(range(base + 1, base + 31))  # every write, once, in order
    assert lines[0] == f"{base + 1} put cli/k0 v0 prev=start"
    assert lines[1] == f"{base + 2} put cli/k1 v1"
    assert lines[28].endswith(" put cli/k1 v28 prev=v25")
    assert lines[29] == f"{base + 30} put cli/bin base64:/wp4"


def test_watch_key_json_and_exit_codes(cluster: LocalCluster) -> None:
    url = cluster.endpoints[0]
    r1 = put(url, "cli1/a", "1")
    put(url, "cli1/ab", "not this key")
    assert call("DELETE", f"{url}/v1/kv/cli1/a").status == 200
    done = raftkv("--key", "cli1/a", "--rev", str(r1), "--count", "2", endpoints=cluster.endpoints)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"{r1} put cli1/a 1", f"{r1 + 2} delete cli1/a"]
    as_json = raftkv("cli1/", "--rev", str(r1 + 1), "--count", "1", "--json", endpoints=cluster.endpoints)
    assert as_json.stdout.strip() == (
        f'{{"type":"put","key":"cli1/ab","value":"not this key","revision":{r1 + 1},'
        f'"create_revision":{r1 + 1},"mod_revision":{r1 + 1},"version":1}}'
    )

    usage = raftkv("cli1/", "--key", "cli1/a", endpoints=cluster.endpoints)
    assert usage.returncode == 2 and "one of them" in usage.stderr
    assert raftkv("cli1/", "--rev", "0", endpoints=cluster.endpoints).returncode == 2

    leader_url = cluster.node(cluster.leader()).url  # has applied the compaction when it answers
    compacted_to = put(leader_url, "cli1/c", "x")
    assert call_json("POST", f"{leader_url}/v1/compaction", {"revision": compacted_to}).status in (200, 410)
    gone = raftkv("cli1/", "--rev", "1", endpoints=[leader_url])
    assert gone.returncode == 1 and "compacted" in gone.stderr

    nobody = raftkv("cli1/", "--max-reconnects", "1", endpoints=["http://127.0.0.1:1"])
    assert nobody.returncode == 3 and "unavailable" in nobody.stderr
