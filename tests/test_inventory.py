"""Inventory: concurrent guarded decrements never oversell."""

from __future__ import annotations

import threading
import uuid

from raftkv.local_cluster import LocalCluster
from tests.http import call, call_json

STOCK = 100
CLIENTS = 20


def test_concurrent_reservations_never_oversell(cluster: LocalCluster) -> None:
    key = f"inventory/{uuid.uuid4().hex[:8]}/sku-1"
    assert call("PUT", f"{cluster.nodes[0].url}/v1/kv/{key}", str(STOCK).encode()).status == 200
    reserve = {
        "compare": [{"key": key, "target": "number", "cmp": ">=", "value": 1}],
        "success": [{"op": "add", "key": key, "delta": -1}],
        "failure": [{"op": "get", "key": key}],
    }
    reserved = [0] * CLIENTS
    seen_stock: list[int] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        url = cluster.nodes[i % len(cluster.nodes)].url
        while True:
            # One idempotency key per reservation: a retry cannot reserve twice.
            idem = {"Idempotency-Key": uuid.uuid4().hex}
            for _attempt in range(20):
                r = call_json("POST", f"{url}/v1/txn", reserve, idem)
                if r.status == 200:
                    break
                if r.status not in (503, 504):
                    errors.append(f"client {i}: {r.status} {r.body!r}")
                    return
            else:
                errors.append(f"client {i}: gave up")
                return
            result = r.json()
            stock = int(result["results"][0]["kv"]["value"])
            with lock:
                seen_stock.append(stock)
            if not result["succeeded"]:
                return
            reserved[i] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert sum(reserved) == STOCK
    assert min(seen_stock) >= 0
    assert call("GET", f"{cluster.nodes[1].url}/v1/kv/{key}").body == b"0"
    assert sum(1 for r in reserved if r > 0) > 1, "reservations should interleave across clients"
