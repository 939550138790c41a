"""Shared by the snapshot and backup tests: loading keys fast and reading
a node's whole key space."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import orjson

from tests.http import call


def load_keys(
    url: str, prefix: str, count: int, per_txn: int = 50, value_bytes: int = 32, connections: int = 1
) -> None:
    """``count`` keys ``{prefix}{i:08d}`` in txns of ``per_txn`` puts (one
    log entry each), over ``connections`` connections at once."""

    def put_batch(start: int) -> None:
        ops = [
            {"op": "put", "key": f"{prefix}{i:08d}", "value": f"{i:08d}".ljust(value_bytes, "v")}
            for i in range(start, min(start + per_txn, count))
        ]
        body = orjson.dumps({"compare": [], "success": ops, "failure": []})
        answer = call("POST", f"{url}/v1/txn", body, {"Content-Type": "application/json"}, timeout=30)
        assert answer.status == 200, answer.body

    with ThreadPoolExecutor(connections) as pool:
        list(pool.map(put_batch, range(0, count, per_txn)))


def all_keys(url: str, prefix: str = "", consistency: str = "serializable") -> dict[str, tuple[str, int, int, int]]:
    """Every key under ``prefix``: key -> (value, create_revision, mod_revision, version)."""
    found: dict[str, tuple[str, int, int, int]] = {}
    after = None
    while True:
        query = f"prefix={prefix}&limit=5000&consistency={consistency}" + (f"&start_after={after}" if after else "")
        page = call("GET", f"{url}/v1/kv?{query}", timeout=30).json()
        for kv in page["kvs"]:
            found[kv["key"]] = (kv["value"], kv["create_revision"], kv["mod_revision"], kv["version"])
        if not page["more"]:
            return found
        after = page["kvs"][-1]["key"]


def wait_applied(url: str, index: int, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            status = call("GET", f"{url}/v1/status", timeout=5).json()
            if status["applied_index"] >= index:
                return status
        except OSError:
            pass
        assert time.monotonic() < deadline, f"{url} did not apply index {index} in {timeout} s"
        time.sleep(0.1)
