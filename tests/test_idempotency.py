"""Idempotency keys that cannot lie: same key + same request replays, same
key + another request is refused, a key still in flight is refused, and the
retention bounds behave as docs/api.md says, at their real default sizes."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from raftkv.kv import commands as c
from raftkv.kv.idempotency import DEFAULT_MAX_BYTES, DEFAULT_MAX_KEYS
from raftkv.kv.state_machine import KVStateMachine
from raftkv.local_cluster import LocalCluster
from tests.http import call, call_json

MIB = 1024 * 1024


def run(sm: KVStateMachine, command: dict[str, Any]) -> dict[str, Any]:
    return sm.apply(c.encode(command))


def test_default_bounds_are_the_documented_ones() -> None:
    sm = KVStateMachine()
    assert (sm.max_idempotency_keys, sm.max_idempotency_bytes) == (100_000, 64 * MIB)
    assert (DEFAULT_MAX_KEYS, DEFAULT_MAX_BYTES) == (100_000, 64 * MIB)


def test_300_puts_of_1_mib_keep_every_key_replayable() -> None:
    """The bug found on `make dev`: with put results counted against 64 MiB,
    the first key of 300 1 MiB puts was forgotten and its retry applied twice."""
    sm = KVStateMachine()
    value = b"v" * MIB
    first = run(sm, c.put("big", value, idem="put-0"))
    for i in range(1, 300):
        run(sm, c.put("big", value, idem=f"put-{i}"))
    revision = sm.revision
    again = run(sm, c.put("big", value, idem="put-0"))
    assert again == {**first, "replayed": True}
    assert sm.revision == revision == 300 and sm.idempotency_keys == 300


def test_txn_reads_beyond_64_mib_expire_the_oldest_result_not_its_key() -> None:
    """Results of txn gets hold the values they read; past 64 MiB of those the
    oldest result is dropped. Its retry is told so (applied once, answer
    gone) and is not applied again."""
    sm = KVStateMachine()
    run(sm, c.put("big", b"r" * MIB))
    read_and_count = [c.txn_get("big"), c.txn_add("reads", 1)]
    for i in range(65):  # 65 MiB read
        result = run(sm, c.txn([], read_and_count, [], idem=f"read-{i}"))
        assert result["ok"]
    assert sm.get("reads")["value"] == b"65"  # type: ignore[index]
    expired = run(sm, c.txn([], read_and_count, [], idem="read-0"))
    assert expired["ok"] is False and expired["error"]["code"] == "idempotency_result_expired"
    assert "applied once" in expired["error"]["message"]
    # the add results' few value bytes put 64 MiB of reads over the bound too
    assert run(sm, c.txn([], read_and_count, [], idem="read-1"))["error"]["code"] == "idempotency_result_expired"
    assert run(sm, c.txn([], read_and_count, [], idem="read-2"))["replayed"] is True
    assert sm.get("reads")["value"] == b"65"  # type: ignore[index]
    assert sm.idempotency_keys == 65


def test_beyond_the_key_count_the_oldest_key_is_forgotten_and_applies_again() -> None:
    sm = KVStateMachine()
    for i in range(DEFAULT_MAX_KEYS + 1):
        run(sm, c.put("n", b"", idem=f"k{i}"))
    assert sm.idempotency_keys == DEFAULT_MAX_KEYS
    revision = sm.revision
    assert run(sm, c.put("n", b"", idem="k1"))["replayed"] is True
    assert "replayed" not in run(sm, c.put("n", b"", idem="k0"))
    assert sm.revision == revision + 1


# ---- over HTTP, on real clusters -------------------------------------------------


def fresh(prefix: str) -> tuple[str, dict[str, str]]:
    """A key of its own and a new Idempotency-Key header."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}", {"Idempotency-Key": uuid.uuid4().hex}


def test_same_key_same_request_replays_and_any_other_request_is_422(cluster: LocalCluster) -> None:
    url = cluster.nodes[0].url
    other_node = cluster.nodes[1].url
    key, idem = fresh("reuse")
    first = call("PUT", f"{url}/v1/kv/{key}", b"one", idem)
    assert first.status == 200 and "idempotency-replayed" not in first.headers
    again = call("PUT", f"{other_node}/v1/kv/{key}", b"one", idem)
    assert again.status == 200 and again.headers["idempotency-replayed"] == "true"
    assert again.json() == first.json()
    reuses = [
        ("PUT", f"/v1/kv/{key}", b"two"),  # another body
        ("PUT", f"/v1/kv/{key}-other", b"one"),  # another target (used to answer naming the first key)
        ("DELETE", f"/v1/kv/{key}", None),  # another operation (used to be a 500)
        ("DELETE", f"/v1/kv?prefix={key}", None),
    ]
    for method, path, body in reuses:
        r = call(method, f"{url}{path}", body, idem)
        assert (r.status, r.error_code) == (422, "idempotency_key_reused"), (method, path, r.body)
        assert "nothing was applied" in r.json()["error"]["message"]
    r = call_json("POST", f"{url}/v1/txn", {"success": [{"op": "put", "key": key, "value": "one"}]}, idem)
    assert (r.status, r.error_code) == (422, "idempotency_key_reused")
    read = call("GET", f"{url}/v1/kv/{key}")
    assert read.body == b"one" and read.headers["x-raftkv-version"] == "1"
    assert call("GET", f"{url}/v1/kv/{key}-other").status == 404


def test_a_failed_cas_is_replayed_as_412_and_its_key_is_spent(cluster: LocalCluster) -> None:
    url = cluster.nodes[0].url
    key, idem = fresh("cas")
    cas = {**idem, "If-Match": '"999999"'}
    first = call("PUT", f"{url}/v1/kv/{key}", b"v", cas)
    assert (first.status, first.error_code) == (412, "precondition_failed")
    again = call("PUT", f"{url}/v1/kv/{key}", b"v", cas)
    assert again.status == 412 and again.headers["idempotency-replayed"] == "true"
    plain = call("PUT", f"{url}/v1/kv/{key}", b"v", idem)  # the same PUT without If-Match
    assert (plain.status, plain.error_code) == (422, "idempotency_key_reused")
    assert call("GET", f"{url}/v1/kv/{key}").status == 404


def test_reading_past_64_mib_expires_the_oldest_answer_and_never_applies_twice(cluster: LocalCluster) -> None:
    """The byte bound at its real size: 65 txns each read a 1 MiB value and
    count themselves. The first one's retry is told its answer expired; the
    counter shows nothing applied twice."""
    url = cluster.nodes[0].url
    big, _ = fresh("big")
    counter, _ = fresh("reads")
    assert call("PUT", f"{url}/v1/kv/{big}", b"r" * MIB).status == 200
    body = {"success": [{"op": "get", "key": big}, {"op": "add", "key": counter, "delta": 1}]}
    keys = [{"Idempotency-Key": f"{counter}-{i}"} for i in range(65)]
    for idem in keys:
        assert call_json("POST", f"{url}/v1/txn", body, idem).status == 200
    expired = call_json("POST", f"{url}/v1/txn", body, keys[0])
    assert (expired.status, expired.error_code) == (422, "idempotency_result_expired")
    assert "applied once" in expired.json()["error"]["message"]
    replayed = call_json("POST", f"{url}/v1/txn", body, keys[-1])
    assert replayed.status == 200 and replayed.headers["idempotency-replayed"] == "true"
    assert call("GET", f"{url}/v1/kv/{counter}").body == b"65"


def test_a_key_still_in_flight_on_the_node_is_409(make_cluster: Any) -> None:
    c = make_cluster()
    leader = c.leader()
    followers = [n.node_id for n in c.nodes if n.node_id != leader]
    url = c.node(leader).url
    key, idem = fresh("inflight")
    for node_id in followers:  # no quorum: the first write stays pending
        c.pause(node_id)
    try:
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(call, "PUT", f"{url}/v1/kv/{key}?timeout=3", b"v", idem)
            time.sleep(0.5)
            assert not first.done()
            second = call("PUT", f"{url}/v1/kv/{key}?timeout=3", b"v", idem)
            assert (second.status, second.error_code) == (409, "idempotency_key_in_flight")
            assert second.headers["retry-after"] == "1"
            for node_id in followers:
                c.resume(node_id)
            assert first.result().status in (200, 503, 504)
    finally:
        for node_id in followers:
            c.resume(node_id)
    c.wait_ready()
    # Once the first has its answer the key is free here again: the retry is
    # answered from the table (or applied, if the first never was).
    retry = call("PUT", f"{url}/v1/kv/{key}", b"v", idem)
    assert retry.status == 200
    assert call("GET", f"{url}/v1/kv/{key}").headers["x-raftkv-version"] == "1"
