"""Cluster behaviour with real processes: failover, catch-up, restarts, quorum loss."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Callable

from raftkv.local_cluster import LocalCluster
from tests.http import Response, call, call_json

MakeCluster = Callable[..., LocalCluster]


def write_until_ok(urls: list[str], key: str, value: bytes, deadline_s: float = 15.0) -> Response:
    """Retry a write on every given node until one succeeds (for use during failover)."""
    deadline = time.monotonic() + deadline_s
    idem = {"Idempotency-Key": uuid.uuid4().hex}
    last: Response | None = None
    while time.monotonic() < deadline:
        for url in urls:
            try:
                last = call("PUT", f"{url}/v1/kv/{key}?timeout=1", value, idem, timeout=3)
            except OSError:
                continue
            if last.status == 200:
                return last
        time.sleep(0.05)
    raise AssertionError(f"no write succeeded within {deadline_s}s; last: {last}")


def wait_for(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_kill_leader_keeps_serving_and_restarted_node_catches_up(make_cluster: MakeCluster) -> None:
    c = make_cluster()
    leader = c.leader()
    assert leader is not None
    before = [f"before/{i}" for i in range(20)]
    for key in before:
        assert call("PUT", f"{c.node(leader).url}/v1/kv/{key}", key.encode()).status == 200

    c.kill(leader)
    others = [n.url for n in c.nodes if n.node_id != leader]
    write_until_ok(others, "after/0", b"x")
    for i in range(1, 20):
        assert write_until_ok(others, f"after/{i}", b"x").status == 200
    for key in before:
        assert call("GET", f"{others[0]}/v1/kv/{key}").body == key.encode()
    new_leader = c.leader()
    assert new_leader is not None and new_leader != leader

    c.start_node(leader)
    old = c.node(leader).url

    def caught_up() -> bool:
        try:
            listing = call("GET", f"{old}/v1/kv?prefix=after/&consistency=serializable").json()
        except (OSError, ValueError, KeyError):
            return False
        return len(listing.get("kvs", [])) == 20

    wait_for(caught_up, 30)
    assert call("GET", f"{old}/v1/kv/before/3?consistency=serializable").body == b"before/3"
    status = call("GET", f"{old}/v1/status").json()
    assert status["role"] == "follower" and status["leader_id"] == new_leader


def test_full_cluster_restart_keeps_data(make_cluster: MakeCluster) -> None:
    c = make_cluster()
    url = c.nodes[0].url
    for i in range(30):
        assert call("PUT", f"{url}/v1/kv/persist/{i}", str(i).encode()).status == 200
    revision = call("GET", f"{url}/v1/status").json()["revision"]
    c.stop()
    c.start()
    c.wait_ready(30)
    for node in c.nodes:
        r = call("GET", f"{node.url}/v1/kv?prefix=persist/").json()
        assert len(r["kvs"]) == 30
        assert r["revision"] == revision
    assert call("GET", f"{c.nodes[2].url}/v1/kv/persist/29").body == b"29"


def test_killed_cluster_restart_keeps_acknowledged_writes(make_cluster: MakeCluster) -> None:
    c = make_cluster()
    url = c.node(c.leader() or "n1").url
    for i in range(30):
        assert call("PUT", f"{url}/v1/kv/crash/{i}", b"v").status == 200
    for node in c.nodes:
        c.kill(node.node_id)
    c.start()
    c.wait_ready(30)
    assert len(call("GET", f"{c.nodes[1].url}/v1/kv?prefix=crash/").json()["kvs"]) == 30


def test_without_quorum_writes_fail_clearly(make_cluster: MakeCluster) -> None:
    c = make_cluster()
    leader = c.leader()
    assert leader is not None
    followers = [n.node_id for n in c.nodes if n.node_id != leader]
    call("PUT", f"{c.node(leader).url}/v1/kv/q/before", b"1")

    # The leader may still believe it leads: the write is submitted and cannot
    # commit, so its outcome is unknown (504), or it has stepped down (503).
    for f in followers:
        c.kill(f)
    r = call("PUT", f"{c.node(leader).url}/v1/kv/q/lost?timeout=1", b"x", timeout=10)
    assert r.status in (503, 504), r.body
    if r.status == 504:
        assert r.error_code == "outcome_unknown"
        assert "may or may not" in r.json()["error"]["message"]
    else:
        assert r.error_code == "no_leader" and r.headers["retry-after"] == "1"

    # A lone follower has no leader at all: 503, nothing submitted.
    c.kill(leader)
    c.start_node(followers[0])
    url = c.node(followers[0]).url
    wait_for(lambda: _is_up(url))
    time.sleep(1.5)  # let it notice that no leader is out there
    r = call("PUT", f"{url}/v1/kv/q/never?timeout=1", b"x", timeout=10)
    assert r.status == 503, r.body
    assert r.error_code == "no_leader"
    assert r.headers["retry-after"] == "1"
    read = call("GET", f"{url}/v1/kv/q/before?timeout=1", timeout=10)
    assert read.status == 503
    ready = call("GET", f"{url}/readyz")
    assert ready.status == 503 and ready.error_code == "not_ready"
    # Serializable reads answer from the local replica at once: possibly stale
    # (a restarted node that has not heard from a leader may not know what
    # is committed yet), never blocked.
    stale = call("GET", f"{url}/v1/kv/q/before?consistency=serializable", timeout=2)
    assert stale.status in (200, 404)

    # Bring the quorum back: nothing acknowledged was lost, and the
    # never-submitted write did not appear.
    c.start_node(followers[1])
    c.start_node(leader)
    c.wait_ready(30)
    url = c.nodes[0].url
    assert call("GET", f"{url}/v1/kv/q/before").body == b"1"
    assert call("GET", f"{url}/v1/kv/q/never").status == 404


def _is_up(url: str) -> bool:
    try:
        return call("GET", f"{url}/healthz", timeout=1).status == 200
    except OSError:
        return False


def test_idempotent_retry_after_leader_kill_applies_once(make_cluster: MakeCluster) -> None:
    c = make_cluster()
    leader = c.leader()
    assert leader is not None
    idem = {"Idempotency-Key": str(uuid.uuid4())}
    body = {"success": [{"op": "add", "key": "counter", "delta": 1}]}
    first = call_json("POST", f"{c.node(leader).url}/v1/txn", body, idem)
    assert first.status == 200

    c.kill(leader)
    others = [n.url for n in c.nodes if n.node_id != leader]
    deadline = time.monotonic() + 15
    retried: Response | None = None
    while time.monotonic() < deadline:
        for url in others:
            try:
                retried = call_json("POST", f"{url}/v1/txn?timeout=1", body, idem)
            except OSError:
                continue
            if retried.status == 200:
                break
        if retried is not None and retried.status == 200:
            break
        time.sleep(0.05)
    assert retried is not None and retried.status == 200
    assert retried.headers.get("idempotency-replayed") == "true"
    assert retried.json() == first.json()
    assert call("GET", f"{others[0]}/v1/kv/counter").body == b"1"


def test_retry_of_a_write_interrupted_by_leader_kill_applies_once(make_cluster: MakeCluster) -> None:
    """The first attempt dies with the leader (outcome unknown); retries elsewhere
    with the same idempotency key leave the counter at exactly 1."""
    c = make_cluster()
    leader = c.leader()
    assert leader is not None
    idem = {"Idempotency-Key": str(uuid.uuid4())}
    body = {"success": [{"op": "add", "key": "once", "delta": 1}]}
    first: list[object] = []

    def attempt() -> None:
        try:
            first.append(call_json("POST", f"{c.node(leader).url}/v1/txn?timeout=2", body, idem))
        except OSError as exc:  # the connection died with the leader
            first.append(exc)

    t = threading.Thread(target=attempt)
    t.start()
    time.sleep(0.002)
    c.kill(leader)
    t.join(10)
    others = [n.url for n in c.nodes if n.node_id != leader]
    deadline = time.monotonic() + 15
    done = False
    while not done and time.monotonic() < deadline:
        for url in others:
            try:
                r = call_json("POST", f"{url}/v1/txn?timeout=1", body, idem)
            except OSError:
                continue
            if r.status == 200:
                done = True
                break
        time.sleep(0.05)
    assert done
    c.start_node(leader)
    c.wait_ready(30)
    for node in c.nodes:
        assert call("GET", f"{node.url}/v1/kv/once").body == b"1"


def test_leadership_transfer_under_write_load(make_cluster: MakeCluster) -> None:
    c = make_cluster()
    leader = c.leader()
    assert leader is not None
    target = next(n.node_id for n in c.nodes if n.node_id != leader)
    stop = threading.Event()
    acknowledged: list[int] = []

    def writer() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            for node in c.nodes:
                try:
                    r = call("PUT", f"{node.url}/v1/kv/load/{i}?timeout=2", b"v", timeout=5)
                except OSError:
                    continue
                if r.status == 200:
                    acknowledged.append(i)
                    break

    threads = [threading.Thread(target=writer) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.3)
        r = call_json("POST", f"{c.node(leader).url}/v1/leadership/transfer?timeout=5", {"to": target})
        assert r.status == 200, r.body
        assert r.json()["leader_id"] == target
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert c.leader() == target
    assert acknowledged, "writes must go on around the transfer"
    listing = call("GET", f"{c.node(target).url}/v1/kv?prefix=load/&keys_only=true").json()
    stored = {int(kv["key"].split("/")[1]) for kv in listing["kvs"]}
    assert set(acknowledged) <= stored
