"""Locks and elections over HTTP on real clusters (docs/locks.md)."""

from __future__ import annotations

import http.client
import threading
import time
from urllib.parse import quote

import orjson

import pytest

from raftkv.client import Client, Lock, RequestRejected
from raftkv.local_cluster import LocalCluster
from tests.http import call, call_json
from tests.test_lease_http import grant, wait_until


def lock(url: str, name: str, lease: str, timeout: float | None = None) -> tuple[int, dict]:
    query = "" if timeout is None else f"?timeout={timeout}"
    response = call("POST", f"{url}/v1/locks/{name}{query}", orjson.dumps({"lease": lease}),
                    {"Content-Type": "application/json"}, timeout=30)
    return response.status, response.json()


def test_a_second_locker_waits_for_the_first_and_gets_a_higher_fencing_token(cluster: LocalCluster) -> None:
    urls = cluster.endpoints
    first, second = grant(urls[0], 30), grant(urls[1], 30)
    status, held = lock(urls[0], "t1", first)
    assert status == 200 and held["key"] == f"__locks/t1/{first}" and held["lease"] == first
    # Locking again with the same lease finds the same key (a retried request).
    assert lock(urls[2], "t1", first) == (200, {**held, "revision": lock(urls[2], "t1", first)[1]["revision"]})
    got: dict = {}
    waiter = threading.Thread(target=lambda: got.update(result=lock(urls[1], "t1", second)))
    waiter.start()
    time.sleep(1.0)
    assert waiter.is_alive(), "the second locker did not wait"
    released = call("DELETE", f"{urls[2]}/v1/locks/t1?key={quote(held['key'])}")
    assert released.status == 200 and released.json()["deleted"] == 1
    waiter.join(10)
    status, second_hold = got["result"]
    assert status == 200 and second_hold["fencing_token"] > held["fencing_token"]
    assert second_hold["key"] == f"__locks/t1/{second}"
    assert call("DELETE", f"{urls[0]}/v1/locks/t1?key={quote(second_hold['key'])}").status == 200


def test_a_lock_that_times_out_withdraws_and_one_whose_lease_ends_passes_on(cluster: LocalCluster) -> None:
    urls = cluster.endpoints
    holder, waiter = grant(urls[0], 2), grant(urls[0], 30)
    assert lock(urls[0], "t2", holder)[0] == 200
    start = time.monotonic()
    status, body = lock(urls[1], "t2", waiter, timeout=0.5)
    assert status == 409 and body["error"]["code"] == "lock_timeout"
    assert body["error"]["holder"] == f"__locks/t2/{holder}"
    assert 0.4 < time.monotonic() - start < 5
    keys = [kv["key"] for kv in call("GET", f"{urls[1]}/v1/kv?prefix=__locks/t2/").json()["kvs"]]
    assert keys == [f"__locks/t2/{holder}"], "the timed-out waiter left its key behind"
    # No keepalive: the holder's 2 s lease expires and the waiter gets the lock.
    start = time.monotonic()
    status, body = lock(urls[2], "t2", waiter, timeout=10)
    assert status == 200 and body["key"] == f"__locks/t2/{waiter}"
    assert time.monotonic() - start < 6


def test_lock_bad_input_is_a_clear_4xx(cluster: LocalCluster) -> None:
    url = cluster.endpoints[0]
    lease = grant(url, 10)
    cases = [
        ("POST", "/v1/locks/t3", {"lease": 5}, 400, "wrong_type"),
        ("POST", "/v1/locks/t3", {}, 400, "missing_field"),
        ("POST", "/v1/locks/t3", {"lease": lease, "x": 1}, 400, "unknown_field"),
        ("POST", "/v1/locks/t3", {"lease": "zz"}, 400, "invalid_argument"),
        ("POST", "/v1/locks/t3", {"lease": "1234"}, 404, "lease_not_found"),
        ("POST", "/v1/locks/a%2Fb", {"lease": lease}, 400, "invalid_argument"),
        ("POST", "/v1/locks/t3?timeout=-1", {"lease": lease}, 400, "invalid_argument"),
        ("DELETE", "/v1/locks/t3?key=other/x", None, 400, "invalid_argument"),
        ("PUT", "/v1/locks/t3", None, 405, "method_not_allowed"),
        ("POST", "/v1/elections/e/vote", {}, 404, "not_found"),
        ("POST", "/v1/elections/e/campaign", {"lease": lease}, 400, "missing_field"),
        ("POST", "/v1/elections/e/proclaim", {"key": "__elections/e/1", "value": "v"}, 409, "not_leader"),
        ("GET", "/v1/elections/nobody/leader", None, 404, "no_leader_elected"),
    ]
    for method, path, payload, status, code in cases:
        response = call(method, url + path, None if payload is None else orjson.dumps(payload))
        assert (response.status, response.error_code) == (status, code), (method, path, response.body)


def test_election_campaign_proclaim_observe_resign(cluster: LocalCluster) -> None:
    urls = cluster.endpoints
    a, b = grant(urls[0], 30), grant(urls[1], 30)
    observed: list[dict] = []
    conn = http.client.HTTPConnection("127.0.0.1", int(urls[2].rsplit(":", 1)[1]), timeout=20)
    conn.request("GET", "/v1/elections/e1/observe")
    stream = conn.getresponse()
    assert stream.status == 200

    def read_stream() -> None:
        try:
            for line in stream:
                if line.strip():
                    observed.append(orjson.loads(line))
        except (AttributeError, OSError, ValueError):
            pass  # closed at the end of the test

    threading.Thread(target=read_stream, daemon=True).start()
    won = call_json("POST", f"{urls[0]}/v1/elections/e1/campaign", {"lease": a, "value": "node-a"})
    assert won.status == 200
    key_a = won.json()["key"]
    got: dict = {}
    contender = threading.Thread(
        target=lambda: got.update(r=call_json("POST", f"{urls[1]}/v1/elections/e1/campaign", {"lease": b, "value": "node-b"}))
    )
    contender.start()
    leader = call("GET", f"{urls[1]}/v1/elections/e1/leader").json()["kv"]
    assert (leader["key"], leader["value"]) == (key_a, "node-a")
    proclaimed = call_json("POST", f"{urls[2]}/v1/elections/e1/proclaim", {"key": key_a, "value": "node-a2"})
    assert proclaimed.status == 200 and proclaimed.json()["kv"]["value"] == "node-a2"
    time.sleep(0.5)
    assert contender.is_alive()
    assert call_json("POST", f"{urls[0]}/v1/elections/e1/resign", {"key": key_a}).json()["deleted"] == 1
    contender.join(10)
    assert got["r"].status == 200 and got["r"].json()["key"] == f"__elections/e1/{b}"
    not_leader = call_json("POST", f"{urls[0]}/v1/elections/e1/proclaim", {"key": key_a, "value": "x"})
    assert not_leader.error_code == "not_leader"
    wait_until(lambda: bool(observed) and observed[-1]["kv"] is not None and observed[-1]["kv"]["value"] == "node-b", 10)
    # Changes that come faster than the observer reads may be merged.
    values = [None if m["kv"] is None else m["kv"]["value"] for m in observed]
    assert values[0] is None and values.index("node-a2") < values.index("node-b")
    assert all(x["revision"] < y["revision"] for x, y in zip(observed, observed[1:]))
    conn.close()


def test_the_client_lock_waits_times_out_and_cleans_up(cluster: LocalCluster) -> None:
    with Client(cluster.endpoints, timeout=1) as kv:
        with Lock(kv, "t4", ttl=10) as held:
            assert held.key is not None and held.key.startswith("__locks/t4/") and not held.lost()
            with pytest.raises(RequestRejected) as refused:
                Lock(kv, "t4", wait=1.5).acquire()
            assert refused.value.code == "lock_timeout"
            first_token = held.fencing_token
            lease = held.lease_id
        assert call("GET", f"{cluster.endpoints[0]}/v1/leases/{lease}").status == 404  # revoked on exit
        with Lock(kv, "t4") as again:
            assert again.fencing_token is not None and first_token is not None
            assert again.fencing_token > first_token
        assert call("GET", f"{cluster.endpoints[0]}/v1/kv?prefix=__locks/t4/").json()["kvs"] == []
