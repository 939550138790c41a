"""The space quota (--quota-backend-bytes) on a real 3-node cluster: past it
writes get 507 no_space and nothing is applied, reads, deletes and
compaction keep working, and compaction frees room for writes again."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from raftkv.local_cluster import LocalCluster
from raftkv.server.quota import SpaceQuota, grows_store
from raftkv.kv.store import MemoryStore
from tests.http import call, call_json

QUOTA = 3 << 20
VALUE = b"v" * (200 << 10)


@pytest.fixture(scope="module")
def quota_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(
        tmp_path_factory.mktemp("quota"), extra_args=["--quota-backend-bytes", str(QUOTA)]
    ) as cluster:
        yield cluster


def test_writes_past_the_quota_get_507_until_compaction_frees_room(quota_cluster: LocalCluster) -> None:
    cluster = quota_cluster
    leader = cluster.node(cluster.wait_ready())
    follower = next(n for n in cluster.nodes if n is not leader)
    written = 0
    refused = None
    for i in range(200):  # 40 MiB at most; the quota stops it long before
        answer = call("PUT", f"{follower.url}/v1/kv/big/{i:04d}", VALUE)
        if answer.status != 200:
            refused = answer
            break
        written += 1
    assert refused is not None, "200 writes of 200 KiB never hit a 3 MiB quota"
    assert refused.status == 507
    error = refused.json()["error"]
    assert error["code"] == "no_space" and error["quota_bytes"] == QUOTA and error["used_bytes"] > QUOTA
    assert written >= 5

    # Nothing of the refused write was applied, on any node; reads work.
    for node in cluster.nodes:
        assert call("GET", f"{node.url}/v1/kv/big/{written:04d}").status == 404
        assert call("GET", f"{node.url}/v1/kv/big/0000").body == VALUE
        status = call("GET", f"{node.url}/v1/status").json()
        assert status["quota"]["no_space"] is True and status["quota"]["quota_bytes"] == QUOTA
    # A txn that puts is refused too; one that only reads and deletes is not.
    txn_put = {"compare": [], "success": [{"op": "put", "key": "t", "value": "x"}], "failure": []}
    assert call_json("POST", f"{leader.url}/v1/txn", txn_put).status == 507

    # `raftkv status` shows it.
    shown = subprocess.run(
        [sys.executable, "-m", "raftkv", "status", "--endpoints", leader.url],
        capture_output=True, text=True, timeout=30,
    )
    assert shown.returncode == 0, shown.stderr
    assert "NOSPACE" in shown.stdout and "space" in shown.stdout

    # Deleting alone keeps the values in the history; compaction frees them.
    assert call("DELETE", f"{leader.url}/v1/kv?prefix=big/").status == 200
    revision = call("GET", f"{leader.url}/v1/status").json()["revision"]
    assert call_json("POST", f"{leader.url}/v1/compaction", {"revision": revision}).status == 200
    # Each node measures its own store: the follower applies the compaction
    # a heartbeat later.
    deadline = time.monotonic() + 10
    while call("GET", f"{follower.url}/v1/status").json()["quota"]["no_space"]:
        assert time.monotonic() < deadline, "compaction never brought the follower under its quota"
        time.sleep(0.05)
    again = call("PUT", f"{follower.url}/v1/kv/after", b"room again")
    assert again.status == 200, again.body
    assert call("GET", f"{leader.url}/v1/status").json()["quota"]["no_space"] is False


def test_which_commands_grow_the_store() -> None:
    assert grows_store({"op": "put", "key": "k", "value": b""})
    assert grows_store({"op": "lease_grant", "ttl": 5})
    assert grows_store({"op": "txn", "compare": [], "success": [], "failure": [{"op": "add", "key": "n", "delta": 1}]})
    for freeing in ({"op": "delete", "key": "k"}, {"op": "delete_prefix", "prefix": "a"}, {"op": "compact", "revision": 3}):
        assert not grows_store(freeing)
    assert not grows_store({"op": "txn", "compare": [], "success": [{"op": "delete", "key": "k"}], "failure": []})


def test_an_in_memory_store_has_no_quota_to_exceed() -> None:
    quota = SpaceQuota(lambda: MemoryStore(), 1)
    quota.check({"op": "put", "key": "k", "value": b"x"})  # no size known: never refused
    assert quota.status() == {"quota_bytes": 1, "used_bytes": None, "no_space": False}


def test_serve_refuses_a_negative_quota(tmp_path: Path) -> None:
    from raftkv.cli import build_parser, config_from_args

    args = build_parser().parse_args(
        ["serve", "--id", "n1", "--data-dir", str(tmp_path), "--listen", "127.0.0.1:1",
         "--peer-listen", "127.0.0.1:2", "--peers", "n1=127.0.0.1:2", "--quota-backend-bytes", "-1"]
    )
    with pytest.raises(ValueError, match="quota-backend-bytes"):
        config_from_args(args)
