"""Revision reads and compaction over HTTP on real clusters (both engines)."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from raftkv.local_cluster import LocalCluster
from tests.http import call, call_json


def test_reads_at_a_revision_then_compaction_and_410(cluster: LocalCluster) -> None:
    url = cluster.node(cluster.wait_ready()).url
    other = next(n.url for n in cluster.nodes if n.url != url)
    key = f"mvcc-{uuid.uuid4().hex[:8]}"
    revisions = [call("PUT", f"{url}/v1/kv/{key}/x", v).status for v in (b"1", b"2")]
    assert revisions == [200, 200]
    first = int(call("GET", f"{url}/v1/kv/{key}/x").headers["x-raftkv-create-revision"])
    assert call("DELETE", f"{url}/v1/kv/{key}/x").status == 200
    now = int(call("GET", f"{url}/v1/status").json()["revision"])

    # Any node answers the same past (a linearizable read through a follower).
    for node in (url, other):
        old = call("GET", f"{node}/v1/kv/{key}/x?revision={first}")
        assert (old.status, old.body, old.headers["x-raftkv-mod-revision"]) == (200, b"1", str(first))
        assert call("GET", f"{node}/v1/kv/{key}/x?revision={first + 1}").body == b"2"
        assert call("GET", f"{node}/v1/kv/{key}/x?revision={now}").status == 404
        page = call("GET", f"{node}/v1/kv?prefix={key}/&revision={first + 1}").json()
        assert [(kv["key"], kv["value"]) for kv in page["kvs"]] == [(f"{key}/x", "2")]
        assert page["revision"] == now

    future = call("GET", f"{url}/v1/kv/{key}/x?revision={now + 1000}")
    assert (future.status, future.json()["error"]["code"]) == (400, "future_revision")
    for bad in ("0", "-1", "x", "1.5", ""):
        answer = call("GET", f"{url}/v1/kv/{key}/x?revision={bad}")
        assert (answer.status, answer.json()["error"]["code"]) == (400, "invalid_argument"), bad

    compacted = call_json("POST", f"{url}/v1/compaction", {"revision": first + 1})
    assert compacted.status == 200, compacted.body
    assert compacted.json()["compact_revision"] == first + 1
    assert call("GET", f"{other}/v1/kv/{key}/x?revision={first + 1}").body == b"2"
    gone = call("GET", f"{other}/v1/kv/{key}/x?revision={first}")
    error = gone.json()["error"]
    assert gone.status == 410 and error["code"] == "compacted"
    assert error["compact_revision"] >= first + 1 and error["revision"] >= now
    assert call("GET", f"{url}/v1/kv?prefix={key}/&revision={first}").status == 410
    again = call_json("POST", f"{url}/v1/compaction", {"revision": first})
    assert (again.status, again.json()["error"]["code"]) == (410, "compacted")
    assert call("GET", f"{url}/v1/status").json()["compact_revision"] >= first + 1


def test_compaction_requests_are_checked_before_proposing(cluster: LocalCluster) -> None:
    url = cluster.node(cluster.wait_ready()).url
    now = int(call("GET", f"{url}/v1/status").json()["revision"])
    for body, code in (
        ([1], "wrong_type"),
        ({}, "missing_field"),
        ({"revision": 1, "extra": 1}, "unknown_field"),
        ({"revision": "5"}, "invalid_argument"),
        ({"revision": True}, "invalid_argument"),
        ({"revision": 0}, "invalid_argument"),
        ({"revision": 2**63}, "invalid_argument"),
    ):
        answer = call_json("POST", f"{url}/v1/compaction", body)
        assert (answer.status, answer.json()["error"]["code"]) == (400, code), body
    future = call_json("POST", f"{url}/v1/compaction", {"revision": now + 1000})
    assert (future.status, future.json()["error"]["code"]) == (400, "future_revision")
    assert call("GET", f"{url}/v1/compaction").status == 405


def test_the_leader_compacts_to_keep_the_last_n_revisions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAFTKV_AUTO_COMPACTION_INTERVAL", "0.2")
    with LocalCluster(tmp_path, engine="native", extra_args=["--auto-compaction-retention", "5"]) as c:
        url = c.node(c.wait_ready()).url
        for i in range(20):
            assert call("PUT", f"{url}/v1/kv/auto", str(i).encode()).status == 200
        revision = call("GET", f"{url}/v1/status").json()["revision"]
        deadline = time.monotonic() + 10
        statuses: list[dict[str, object]] = []
        while time.monotonic() < deadline:
            statuses = [call("GET", f"{n.url}/v1/status").json() for n in c.nodes]
            if all(s["compact_revision"] == revision - 5 for s in statuses):
                break
            time.sleep(0.1)
        assert [s["compact_revision"] for s in statuses] == [revision - 5] * 3
        assert call("GET", f"{url}/v1/kv/auto?revision={revision - 5}").body == b"14"
        assert call("GET", f"{url}/v1/kv/auto?revision={revision - 6}").status == 410


def test_a_negative_retention_is_refused_at_start(tmp_path: Path) -> None:
    answer = subprocess.run(
        [sys.executable, "-m", "raftkv", "serve", "--id", "n1", "--data-dir", str(tmp_path),
         "--listen", "127.0.0.1:1", "--peer-listen", "127.0.0.1:2", "--peers", "n1=127.0.0.1:2",
         "--auto-compaction-retention", "-1"],
        capture_output=True, text=True, timeout=30,
    )
    assert answer.returncode == 2 and "--auto-compaction-retention" in answer.stderr
