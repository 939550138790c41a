"""GET /v1/watch and conditional/blocking reads on real clusters (issue #11).

Streams are read raw (SSE and NDJSON frames as the server writes them);
tests/test_watch_failover.py covers kills, resumes and the client iterator.
"""

from __future__ import annotations

import http.client
import threading
import time
from typing import Any
from urllib.parse import quote, urlsplit

import orjson
import pytest

from raftkv.local_cluster import LocalCluster
from tests.http import call, call_json


class Stream:
    """One watch stream read frame by frame: SSE events or NDJSON lines as
    dicts ({"id", "event", "data"} for SSE; the object for NDJSON)."""

    def __init__(self, url: str, query: str, sse: bool = False, headers: dict[str, str] | None = None, timeout: float = 10.0) -> None:
        parts = urlsplit(url)
        self.sse = sse
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        accept = "text/event-stream" if sse else "application/x-ndjson"
        self.conn.request("GET", f"/v1/watch?{query}", headers={"Accept": accept, **(headers or {})})
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.headers = {k.lower(): v for k, v in self.resp.getheaders()}

    def error(self) -> dict[str, Any]:
        return orjson.loads(self.resp.read())["error"]

    def next(self) -> dict[str, Any]:
        if not self.sse:
            while True:
                line = self.resp.readline()
                if not line:
                    raise EOFError("stream closed")
                if line.strip():
                    return orjson.loads(line)
        frame: dict[str, Any] = {}
        while True:
            line = self.resp.readline()
            if not line:
                raise EOFError("stream closed")
            text = line.decode().rstrip("\n")
            if not text:
                if frame:
                    return frame
                continue
            if text.startswith(":"):
                frame.setdefault("comments", []).append(text)
                continue
            name, _, value = text.partition(": ")
            frame[name] = orjson.loads(value) if name == "data" else value

    def events(self, count: int, skip_progress: bool = True) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while len(out) < count:
            item = self.next()
            body = item["data"] if self.sse and "data" in item else item
            if skip_progress and body.get("type") == "progress":
                continue
            out.append(item)
        return out

    def close(self) -> None:
        self.conn.close()


def put(url: str, key: str, value: bytes | str) -> int:
    resp = call("PUT", f"{url}/v1/kv/{quote(key)}", value)
    assert resp.status == 200, resp.body
    return resp.json()["revision"]


def follower_url(cluster: LocalCluster) -> str:
    leader = cluster.leader()
    return next(n.url for n in cluster.nodes if n.node_id != leader)


def test_sse_through_a_follower_delivers_each_committed_change_in_order(cluster: LocalCluster) -> None:
    leader_url = cluster.node(cluster.leader()).url
    url = follower_url(cluster)
    base = put(leader_url, "sse/a", "0")
    stream = Stream(url, f"prefix=sse/&start_revision={base + 1}&prev_kv=true", sse=True)
    try:
        assert stream.status == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        assert stream.headers["x-raftkv-start-revision"] == str(base + 1)
        r1 = put(leader_url, "sse/a", "1")
        r2 = put(leader_url, "sse/b", b"\xff\x00")
        put(leader_url, "other/x", "not watched")
        txn = call_json(
            "POST",
            f"{leader_url}/v1/txn",
            {"compare": [], "success": [{"op": "put", "key": "sse/c", "value": "c"}, {"op": "delete", "key": "sse/a"}]},
        )
        assert txn.status == 200, txn.body
        r4 = txn.json()["revision"]
        frames = stream.events(4)
    finally:
        stream.close()
    assert [(f["id"], f["event"], f["data"]["key"]) for f in frames] == [
        (str(r1), "put", "sse/a"),
        (str(r2), "put", "sse/b"),
        (str(r4), "put", "sse/c"),
        (str(r4), "delete", "sse/a"),
    ]
    first = frames[0]["data"]
    assert first["value"] == "1" and first["revision"] == first["mod_revision"] == r1
    assert first["version"] == 2 and first["create_revision"] == base
    assert first["prev_kv"]["value"] == "0" and first["prev_kv"]["mod_revision"] == base
    assert frames[1]["data"]["value_base64"] == "/wA=" and "value" not in frames[1]["data"]
    assert "prev_kv" not in frames[1]["data"]  # a new key has none
    deleted = frames[3]["data"]
    assert deleted["version"] == 0 and deleted["prev_kv"]["value"] == "1"


def test_ndjson_from_now_key_watch_and_filters(cluster: LocalCluster) -> None:
    leader_url = cluster.node(cluster.leader()).url
    url = follower_url(cluster)
    put(leader_url, "nd/k", "before")
    stream = Stream(url, "key=nd/k&filter=nodelete")
    try:
        assert stream.status == 200 and stream.headers["content-type"] == "application/x-ndjson"
        start = int(stream.headers["x-raftkv-start-revision"])
        # "now" on a follower is no older than a linearizable read: the
        # write acknowledged before the watch began is not in it.
        assert start > int(call("GET", f"{leader_url}/v1/kv/nd/k").headers["x-raftkv-mod-revision"])
        assert call("DELETE", f"{leader_url}/v1/kv/nd/k").status == 200
        put(leader_url, "nd/k2", "a longer key, not watched")
        r = put(leader_url, "nd/k", "after")
        [event] = stream.events(1)
    finally:
        stream.close()
    assert event == {"type": "put", "key": "nd/k", "value": "after", "revision": r, "create_revision": r,
                     "mod_revision": r, "version": 1}


def test_progress_periodic_and_on_request(cluster: LocalCluster) -> None:
    url = follower_url(cluster)
    revision = put(cluster.node(cluster.leader()).url, "prog/x", "1")
    stream = Stream(url, "prefix=prog/&progress_interval=3600", sse=True)
    try:
        watch_id = stream.headers["x-raftkv-watch-id"]
        asked = call("POST", f"{url}/v1/watch/{watch_id}/progress")
        assert asked.status == 202, asked.body
        frame = stream.next()
        assert frame["event"] == "progress" and int(frame["id"]) == frame["data"]["revision"] >= revision
    finally:
        stream.close()
    assert call("POST", f"{url}/v1/watch/999999/progress").error_code == "watch_not_found"
    periodic = Stream(url, "prefix=prog/&progress_interval=0.2")
    try:
        assert periodic.next()["type"] == "progress"
        assert periodic.next()["type"] == "progress"
    finally:
        periodic.close()


def test_resume_with_last_event_id_on_another_node(cluster: LocalCluster) -> None:
    leader_url = cluster.node(cluster.leader()).url
    revisions = [put(leader_url, f"resume/{i}", str(i)) for i in range(5)]
    other = next(n.url for n in cluster.nodes if n.url != leader_url)
    stream = Stream(other, f"prefix=resume/&start_revision={revisions[0]}", sse=True,
                    headers={"Last-Event-ID": str(revisions[2])})
    try:
        frames = stream.events(2)
    finally:
        stream.close()
    assert [int(f["id"]) for f in frames] == revisions[3:]


def test_compacted_start_is_410(cluster: LocalCluster) -> None:
    leader_url = cluster.node(cluster.leader()).url
    put(leader_url, "compact/a", "1")
    target = put(leader_url, "compact/a", "2")
    resp = call_json("POST", f"{leader_url}/v1/compaction", {"revision": target})
    assert resp.status in (200, 410), resp.body
    compacted = call("GET", f"{leader_url}/v1/status").json()["compact_revision"]
    for node in cluster.nodes:
        stream = Stream(node.url, f"key=compact/a&start_revision={compacted - 1}")
        try:
            if stream.status == 200:  # this follower has not applied the compaction yet
                continue
            assert stream.status == 410
            error = stream.error()
            assert error["code"] == "compacted" and error["compact_revision"] == compacted
        finally:
            stream.close()
    ok = Stream(leader_url, f"key=compact/a&start_revision={compacted}")
    try:
        assert ok.status == 200
        assert ok.events(1)[0]["value"] == "2"
    finally:
        ok.close()


@pytest.mark.parametrize(
    "query, headers, status, code",
    [
        ("", {}, 400, "invalid_argument"),
        ("key=a&prefix=b", {}, 400, "invalid_argument"),
        ("key=", {}, 400, None),
        ("key=a&start_revision=0", {}, 400, "invalid_argument"),
        ("key=a&start_revision=x1", {}, 400, "invalid_argument"),
        ("key=a&filter=noget", {}, 400, "invalid_argument"),
        ("key=a&filter=", {}, 400, "invalid_argument"),
        ("key=a&prev_kv=maybe", {}, 400, "invalid_argument"),
        ("key=a&progress_interval=0", {}, 400, "invalid_argument"),
        ("key=a&consistency=eventual", {}, 400, "invalid_argument"),
        ("key=a&bogus=1", {}, 400, "unknown_field"),
        ("key=a&key=b", {}, 400, "invalid_argument"),
        ("key=a", {"Last-Event-ID": "-3"}, 400, "invalid_argument"),
        ("key=a", {"Accept": "application/json"}, 406, "not_acceptable"),
    ],
)
def test_bad_watch_requests_are_4xx(cluster: LocalCluster, query: str, headers: dict[str, str], status: int, code: str | None) -> None:
    resp = call("GET", f"{cluster.endpoints[0]}/v1/watch?{query}", headers=headers)
    assert resp.status == status, resp.body
    if code is not None:
        assert resp.error_code == code
    assert call("PUT", f"{cluster.endpoints[0]}/v1/watch?key=a", b"x").status == 405
    assert call("GET", f"{cluster.endpoints[0]}/v1/watch/1/progress").status == 405
    assert call("POST", f"{cluster.endpoints[0]}/v1/watch/1/other").status == 404


# -- conditional and blocking reads ------------------------------------------


def test_if_none_match_304_on_a_key_and_a_listing(cluster: LocalCluster) -> None:
    url = follower_url(cluster)
    put(url, "cond/a", "1")
    first = call("GET", f"{url}/v1/kv/cond/a")
    etag = first.headers["etag"]
    again = call("GET", f"{url}/v1/kv/cond/a", headers={"If-None-Match": etag})
    assert again.status == 304 and again.body == b"" and again.headers["etag"] == etag
    assert call("GET", f"{url}/v1/kv/cond/a", headers={"If-None-Match": f'"1", W/{etag}'}).status == 304
    assert call("GET", f"{url}/v1/kv/cond/a", headers={"If-None-Match": '"1"'}).status == 200
    assert call("GET", f"{url}/v1/kv/cond/a", headers={"If-None-Match": "*"}).status == 304
    assert call("GET", f"{url}/v1/kv/cond/a", headers={"If-None-Match": "12"}).status == 400

    listing = call("GET", f"{url}/v1/kv?prefix=cond/")
    list_tag = listing.headers["etag"]
    assert list_tag.startswith('W/"')
    put(url, "elsewhere", "moves the store revision, not the listing")
    same = call("GET", f"{url}/v1/kv?prefix=cond/", headers={"If-None-Match": list_tag})
    assert same.status == 304 and same.headers["etag"] == list_tag
    put(url, "cond/b", "2")
    changed = call("GET", f"{url}/v1/kv?prefix=cond/", headers={"If-None-Match": list_tag})
    assert changed.status == 200 and changed.headers["etag"] != list_tag
    assert [kv["key"] for kv in changed.json()["kvs"]] == ["cond/a", "cond/b"]


def test_blocking_read_returns_on_a_write_or_304_when_the_wait_ends(cluster: LocalCluster) -> None:
    leader_url = cluster.node(cluster.leader()).url
    url = follower_url(cluster)
    put(leader_url, "block/a", "1")
    etag = call("GET", f"{url}/v1/kv/block/a").headers["etag"]

    started = time.monotonic()
    timed_out = call("GET", f"{url}/v1/kv/block/a?wait=1s", headers={"If-None-Match": etag})
    assert timed_out.status == 304 and 0.9 <= time.monotonic() - started < 5

    def write_soon() -> None:
        time.sleep(0.5)
        put(leader_url, "block/other", "not this key")
        time.sleep(0.3)
        put(leader_url, "block/a", "2")

    writer = threading.Thread(target=write_soon)
    writer.start()
    started = time.monotonic()
    woke = call("GET", f"{url}/v1/kv/block/a?wait=20s", headers={"If-None-Match": etag}, timeout=30)
    elapsed = time.monotonic() - started
    writer.join()
    assert woke.status == 200 and woke.body == b"2" and 0.7 <= elapsed < 10

    list_tag = call("GET", f"{url}/v1/kv?prefix=block/").headers["etag"]
    writer = threading.Thread(target=lambda: (time.sleep(0.5), put(leader_url, "block/c", "3")))
    writer.start()
    listed = call("GET", f"{url}/v1/kv?prefix=block/&wait=20000ms", headers={"If-None-Match": list_tag}, timeout=30)
    writer.join()
    assert listed.status == 200 and "block/c" in [kv["key"] for kv in listed.json()["kvs"]]


@pytest.mark.parametrize(
    "path, headers",
    [
        ("/v1/kv/cond/a?wait=1s", {}),  # wait needs If-None-Match
        ("/v1/kv/cond/a?wait=soon", {"If-None-Match": '"1"'}),
        ("/v1/kv/cond/a?wait=301s", {"If-None-Match": '"1"'}),
        ("/v1/kv/cond/a?wait=0", {"If-None-Match": '"1"'}),
        ("/v1/kv/cond/a?wait=1s&revision=1", {"If-None-Match": '"1"'}),
        ("/v1/kv?prefix=cond/&wait=1s", {}),
        ("/v1/kv/cond/a", {"If-None-Match": ""}),
    ],
)
def test_bad_conditional_reads_are_400(cluster: LocalCluster, path: str, headers: dict[str, str]) -> None:
    resp = call("GET", cluster.endpoints[0] + path, headers=headers)
    assert resp.status == 400, resp.body
    assert resp.error_code == "invalid_argument"
