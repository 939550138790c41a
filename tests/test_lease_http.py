"""Leases over HTTP on real clusters: expiry, keepalive, revoke, bad input."""

from __future__ import annotations

import time
from typing import Callable

import pytest

from raftkv.local_cluster import LocalCluster
from tests.http import Response, call, call_json


def grant(url: str, ttl: int) -> str:
    response = call_json("POST", f"{url}/v1/leases", {"ttl": ttl})
    assert response.status == 200, response.body
    body = response.json()
    assert body["ttl"] == ttl and len(body["id"]) == 16
    return str(body["id"])


def wait_until(predicate: Callable[[], bool], timeout: float, step: float = 0.1) -> float:
    """Seconds it took ``predicate`` to hold (fails the test after ``timeout``)."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition did not hold within {timeout}s")
        time.sleep(step)
    return time.monotonic() - start


def test_a_lease_without_keepalives_takes_its_keys_and_one_kept_alive_does_not(cluster: LocalCluster) -> None:
    urls = cluster.endpoints
    idle, kept = grant(urls[0], 3), grant(urls[1], 3)
    assert call("PUT", f"{urls[0]}/v1/kv/lease-test/idle?lease={idle}", "a").status == 200
    assert call("PUT", f"{urls[2]}/v1/kv/lease-test/kept?lease={kept}", "b").status == 200
    got = call("GET", f"{urls[1]}/v1/kv/lease-test/idle")
    assert got.headers["x-raftkv-lease"] == idle
    listed = call("GET", f"{urls[2]}/v1/kv?prefix=lease-test/").json()["kvs"]
    assert [kv["lease"] for kv in listed] == [idle, kept]
    start = time.monotonic()
    while time.monotonic() - start < 6:
        response = call("POST", f"{urls[2]}/v1/leases/{kept}/keepalive")
        assert response.status == 200 and response.json()["ttl"] == 3
        time.sleep(0.8)
        if call("GET", f"{urls[0]}/v1/kv/lease-test/idle").status == 404:
            break
    gone_after = time.monotonic() - start
    assert call("GET", f"{urls[0]}/v1/kv/lease-test/idle").status == 404
    assert gone_after < 6, "a 3 s lease without keepalives outlived 6 s"
    assert call("GET", f"{urls[1]}/v1/leases/{idle}").error_code == "lease_not_found"
    assert call("POST", f"{urls[1]}/v1/leases/{idle}/keepalive").status == 404
    # The kept lease lived through twice its TTL.
    assert call("GET", f"{urls[1]}/v1/kv/lease-test/kept").status == 200
    shown = call("GET", f"{urls[0]}/v1/leases/{kept}").json()
    assert shown["keys"] == ["lease-test/kept"] and shown["ttl"] == 3 and 0 <= shown["remaining"] <= 3
    assert kept in [lease["id"] for lease in call("GET", f"{urls[0]}/v1/leases").json()["leases"]]
    revoked = call("DELETE", f"{urls[1]}/v1/leases/{kept}")
    assert revoked.status == 200 and revoked.json()["deleted"] == 1
    assert call("GET", f"{urls[2]}/v1/kv/lease-test/kept").status == 404


def test_expiry_deletes_all_keys_at_one_revision_and_writes_without_the_lease_detach(cluster: LocalCluster) -> None:
    url = cluster.endpoints[0]
    lease = grant(url, 60)
    for name in ("x", "y", "z"):
        assert call("PUT", f"{url}/v1/kv/lease-rev/{name}?lease={lease}", name).status == 200
    txn = call_json(
        "POST", f"{url}/v1/txn", {"success": [{"op": "put", "key": "lease-rev/t", "value": "t", "lease": lease}]}
    )
    assert txn.status == 200 and txn.json()["results"][0]["kv"]["lease"] == lease
    assert call("PUT", f"{url}/v1/kv/lease-rev/y", "no lease").status == 200  # detached
    assert call("DELETE", f"{url}/v1/kv/lease-rev/z").status == 200
    revoked = call("DELETE", f"{url}/v1/leases/{lease}").json()
    assert revoked["deleted"] == 2
    kvs = call("GET", f"{url}/v1/kv?prefix=lease-rev/").json()["kvs"]
    assert [kv["key"] for kv in kvs] == ["lease-rev/y"] and "lease" not in kvs[0]
    before = call("GET", f"{url}/v1/kv?prefix=lease-rev/&revision={revoked['revision'] - 1}").json()["kvs"]
    assert {kv["key"] for kv in before} == {"lease-rev/x", "lease-rev/t", "lease-rev/y"}


def test_bad_lease_input_is_a_4xx_and_applies_nothing(cluster: LocalCluster) -> None:
    url = cluster.endpoints[1]

    def error(response: Response, status: int, code: str) -> None:
        assert response.status == status, response.body
        assert response.error_code == code

    error(call_json("POST", f"{url}/v1/leases", {"ttl": 0}), 400, "invalid_argument")
    error(call_json("POST", f"{url}/v1/leases", {"ttl": "10"}), 400, "invalid_argument")
    error(call_json("POST", f"{url}/v1/leases", {"ttl": 10**12}), 400, "invalid_argument")
    error(call_json("POST", f"{url}/v1/leases", {}), 400, "missing_field")
    error(call_json("POST", f"{url}/v1/leases", {"ttl": 5, "owner": "me"}), 400, "unknown_field")
    error(call_json("POST", f"{url}/v1/leases", {"ttl": 5, "id": "xyz"}), 400, "invalid_argument")
    error(call_json("POST", f"{url}/v1/leases", [5]), 400, "wrong_type")
    error(call("POST", f"{url}/v1/leases", "{"), 400, "invalid_json")
    error(call("GET", f"{url}/v1/leases/not-hex"), 400, "invalid_argument")
    error(call("GET", f"{url}/v1/leases/0"), 400, "invalid_argument")
    error(call("PUT", f"{url}/v1/leases/1"), 405, "method_not_allowed")
    error(call("GET", f"{url}/v1/leases/1/keepalive"), 405, "method_not_allowed")
    error(call("GET", f"{url}/v1/leases/1/other"), 404, "not_found")
    missing = "7fffffffffff0001"
    error(call("GET", f"{url}/v1/leases/{missing}"), 404, "lease_not_found")
    error(call("POST", f"{url}/v1/leases/{missing}/keepalive"), 404, "lease_not_found")
    error(call("DELETE", f"{url}/v1/leases/{missing}"), 404, "lease_not_found")
    revision = call("GET", f"{url}/v1/status").json()["revision"]
    error(call("PUT", f"{url}/v1/kv/lease-bad?lease={missing}", "v"), 404, "lease_not_found")
    error(call("PUT", f"{url}/v1/kv/lease-bad?lease=nothex", "v"), 400, "invalid_argument")
    error(
        call_json("POST", f"{url}/v1/txn", {"success": [{"op": "put", "key": "lease-bad", "value": "v", "lease": missing}]}),
        404,
        "lease_not_found",
    )
    error(
        call_json("POST", f"{url}/v1/txn", {"success": [{"op": "put", "key": "lease-bad", "value": "v", "lease": 5}]}),
        400,
        "wrong_type",
    )
    assert call("GET", f"{url}/v1/kv/lease-bad").status == 404
    assert call("GET", f"{url}/v1/status").json()["revision"] == revision
    lease = grant(url, 30)
    error(call_json("POST", f"{url}/v1/leases", {"ttl": 5, "id": lease}), 409, "lease_exists")
    assert call("DELETE", f"{url}/v1/leases/{lease}").status == 200


def test_keepalive_across_a_leader_kill_keeps_the_lease(make_cluster: Callable[..., LocalCluster]) -> None:
    cluster = make_cluster()
    leader = cluster.wait_ready()
    urls = {node.node_id: node.url for node in cluster.nodes}
    follower = next(nid for nid in urls if nid != leader)
    lease = grant(urls[follower], 3)
    assert call("PUT", f"{urls[follower]}/v1/kv/survivor?lease={lease}", "v").status == 200
    cluster.kill(leader)
    survivors = [urls[nid] for nid in urls if nid != leader]
    start = time.monotonic()
    last_ok = start
    while time.monotonic() - start < 8:
        for url in survivors:
            try:
                response = call("POST", f"{url}/v1/leases/{lease}/keepalive", timeout=3)
            except OSError:
                continue
            if response.status == 200:
                last_ok = time.monotonic()
                break
            assert response.status in (503, 504), response.body  # no leader yet: retry
        assert time.monotonic() - last_ok < 3, "no keepalive got through within the TTL"
        time.sleep(0.5)
    got = call("GET", f"{survivors[0]}/v1/kv/survivor")
    assert got.status == 200 and got.headers["x-raftkv-lease"] == lease
    # And without keepalives the new leader does expire it.
    took = wait_until(lambda: call("GET", f"{survivors[1]}/v1/kv/survivor").status == 404, timeout=10)
    assert took >= 1.5  # not before most of its TTL since the last keepalive
