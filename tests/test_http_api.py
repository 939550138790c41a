"""The HTTP API against a real 3-node cluster: every status code, header and bad input."""

from __future__ import annotations

import base64
import itertools
import uuid

import pytest

from raftkv.local_cluster import LocalCluster
from tests.http import call, call_json

_unique = itertools.count()


def k(name: str) -> str:
    """A key no other test in this module uses."""
    return f"t{next(_unique)}-{uuid.uuid4().hex[:6]}/{name}"


def urls(cluster: LocalCluster) -> tuple[str, str, str]:
    leader = cluster.leader()
    assert leader is not None
    follower = next(n.node_id for n in cluster.nodes if n.node_id != leader)
    return cluster.node(leader).url, cluster.node(follower).url, cluster.nodes[-1].url


def test_put_get_delete_round_trip_through_any_node(cluster: LocalCluster) -> None:
    leader, follower, _ = urls(cluster)
    key = k("a/b/c")
    r = call("PUT", f"{follower}/v1/kv/{key}", b"hello")
    assert r.status == 200, r.body
    body = r.json()
    assert body["kv"] == {"key": key, "create_revision": body["revision"], "mod_revision": body["revision"], "version": 1}
    assert r.headers["etag"] == f'"{body["revision"]}"'

    for node in cluster.nodes:
        g = call("GET", f"{node.url}/v1/kv/{key}")
        assert g.status == 200
        assert g.body == b"hello"
        assert g.headers["content-type"] == "application/octet-stream"
        assert g.headers["etag"] == f'"{body["revision"]}"'
        assert g.headers["x-raftkv-version"] == "1"
        assert g.headers["x-raftkv-create-revision"] == str(body["revision"])
        assert g.headers["x-raftkv-mod-revision"] == str(body["revision"])
        assert int(g.headers["x-raftkv-revision"]) >= body["revision"]

    d = call("DELETE", f"{leader}/v1/kv/{key}")
    assert d.status == 200 and d.json()["deleted"] == 1
    assert call("GET", f"{follower}/v1/kv/{key}").status == 404
    assert call("DELETE", f"{follower}/v1/kv/{key}").error_code == "key_not_found"


def test_binary_values_and_percent_encoded_keys(cluster: LocalCluster) -> None:
    _, follower, _ = urls(cluster)
    raw = bytes(range(256))
    key = k("sp ace%")
    quoted = key.replace("%", "%25").replace(" ", "%20")
    assert call("PUT", f"{follower}/v1/kv/{quoted}", raw).status == 200
    assert call("GET", f"{follower}/v1/kv/{quoted}").body == raw
    prefix = key.split("/")[0]
    listing = call("GET", f"{follower}/v1/kv?prefix={prefix}").json()
    (item,) = listing["kvs"]
    assert item["key"] == key
    assert item["encoding"] == "base64"
    assert base64.b64decode(item["value"]) == raw


def test_missing_key_is_404_json(cluster: LocalCluster) -> None:
    r = call("GET", f"{cluster.nodes[0].url}/v1/kv/{k('nope')}")
    assert r.status == 404
    assert r.headers["content-type"].startswith("application/json")
    assert r.error_code == "key_not_found"


def test_if_match_cas(cluster: LocalCluster) -> None:
    leader, follower, _ = urls(cluster)
    key = k("cas")
    rev = call("PUT", f"{leader}/v1/kv/{key}", b"v1").json()["kv"]["mod_revision"]
    ok = call("PUT", f"{follower}/v1/kv/{key}", b"v2", {"If-Match": f'"{rev}"'})
    assert ok.status == 200
    new_rev = ok.json()["kv"]["mod_revision"]
    stale = call("PUT", f"{follower}/v1/kv/{key}", b"v3", {"If-Match": f'"{rev}"'})
    assert stale.status == 412
    assert stale.json()["error"] == {
        "code": "precondition_failed",
        "message": stale.json()["error"]["message"],
        "mod_revision": new_rev,
    }
    assert call("GET", f"{leader}/v1/kv/{key}").body == b"v2"
    # unquoted revisions work too, and DELETE honours If-Match
    assert call("DELETE", f"{leader}/v1/kv/{key}", headers={"If-Match": str(rev)}).status == 412
    assert call("DELETE", f"{leader}/v1/kv/{key}", headers={"If-Match": str(new_rev)}).status == 200
    gone = call("PUT", f"{leader}/v1/kv/{key}", b"x", {"If-Match": f'"{new_rev}"'})
    assert gone.status == 412 and gone.json()["error"]["mod_revision"] == 0
    assert call("PUT", f"{leader}/v1/kv/{key}", b"x", {"If-Match": "*"}).status == 412


def test_if_none_match_creates_only_once(cluster: LocalCluster) -> None:
    leader, follower, _ = urls(cluster)
    key = k("create")
    assert call("PUT", f"{leader}/v1/kv/{key}", b"first", {"If-None-Match": "*"}).status == 200
    second = call("PUT", f"{follower}/v1/kv/{key}", b"second", {"If-None-Match": "*"})
    assert second.status == 412
    assert call("GET", f"{leader}/v1/kv/{key}").body == b"first"


def test_prefix_listing_sorted_with_limit_and_pagination(cluster: LocalCluster) -> None:
    leader, follower, _ = urls(cluster)
    base = k("list")
    for name in ["c", "a", "b", "d"]:
        call("PUT", f"{leader}/v1/kv/{base}/{name}", name.upper())
    r = call("GET", f"{follower}/v1/kv?prefix={base}/&limit=2").json()
    assert [kv["key"] for kv in r["kvs"]] == [f"{base}/a", f"{base}/b"]
    assert r["more"] is True
    assert r["kvs"][0]["value"] == "A"
    r2 = call("GET", f"{follower}/v1/kv?prefix={base}/&start_after={base}/b").json()
    assert [kv["key"] for kv in r2["kvs"]] == [f"{base}/c", f"{base}/d"]
    assert r2["more"] is False
    keys_only = call("GET", f"{follower}/v1/kv?prefix={base}/&keys_only=true").json()
    assert all("value" not in kv for kv in keys_only["kvs"])


def test_delete_prefix(cluster: LocalCluster) -> None:
    leader, follower, _ = urls(cluster)
    base = k("dp")
    for name in ["x", "y", "z"]:
        call("PUT", f"{leader}/v1/kv/{base}/{name}", b"1")
    call("PUT", f"{leader}/v1/kv/{base}-sibling", b"keep")
    r = call("DELETE", f"{follower}/v1/kv?prefix={base}/")
    assert r.status == 200 and r.json()["deleted"] == 3
    assert call("GET", f"{leader}/v1/kv?prefix={base}").json()["kvs"][0]["key"] == f"{base}-sibling"
    missing = call("DELETE", f"{follower}/v1/kv")
    assert missing.status == 400 and "prefix" in missing.json()["error"]["message"]


def test_txn_guarded_decrement(cluster: LocalCluster) -> None:
    leader, follower, _ = urls(cluster)
    key = k("stock")
    call("PUT", f"{leader}/v1/kv/{key}", b"3")
    body = {
        "compare": [{"key": key, "target": "number", "cmp": ">=", "value": 2}],
        "success": [{"op": "add", "key": key, "delta": -2}],
        "failure": [{"op": "get", "key": key}],
    }
    first = call_json("POST", f"{follower}/v1/txn", body)
    assert first.status == 200
    assert first.json()["succeeded"] is True
    assert first.json()["results"][0]["kv"]["value"] == "1"
    second = call_json("POST", f"{follower}/v1/txn", body).json()
    assert second["succeeded"] is False
    assert second["results"][0]["kv"]["value"] == "1"


def test_txn_add_on_text_value_is_409_and_changes_nothing(cluster: LocalCluster) -> None:
    leader, _, _ = urls(cluster)
    key, other = k("text"), k("other")
    call("PUT", f"{leader}/v1/kv/{key}", b"not a number")
    body = {"success": [{"op": "put", "key": other, "value": "x"}, {"op": "add", "key": key, "delta": 1}]}
    r = call_json("POST", f"{leader}/v1/txn", body)
    assert r.status == 409
    assert r.error_code == "not_a_number"
    assert call("GET", f"{leader}/v1/kv/{other}").status == 404


def test_idempotency_key_replays_first_result(cluster: LocalCluster) -> None:
    leader, follower, _ = urls(cluster)
    key = k("idem")
    idem = {"Idempotency-Key": uuid.uuid4().hex}
    body = {"success": [{"op": "add", "key": key, "delta": 5}]}
    first = call_json("POST", f"{leader}/v1/txn", body, idem)
    again = call_json("POST", f"{follower}/v1/txn", body, idem)
    assert first.status == again.status == 200
    assert again.headers.get("idempotency-replayed") == "true"
    assert "idempotency-replayed" not in first.headers
    assert again.json() == first.json()
    assert call("GET", f"{leader}/v1/kv/{key}").body == b"5"


def test_serializable_read(cluster: LocalCluster) -> None:
    leader, follower, _ = urls(cluster)
    key = k("ser")
    call("PUT", f"{leader}/v1/kv/{key}", b"v")
    # the write was applied on the leader; a follower catches up within moments
    r = call("GET", f"{leader}/v1/kv/{key}?consistency=serializable")
    assert r.status == 200 and r.body == b"v"
    bad = call("GET", f"{follower}/v1/kv/{key}?consistency=eventual")
    assert bad.status == 400 and bad.error_code == "invalid_argument"


def test_status_healthz_readyz(cluster: LocalCluster) -> None:
    leader_id = cluster.leader()
    for node in cluster.nodes:
        s = call("GET", f"{node.url}/v1/status").json()
        assert s["node_id"] == node.node_id
        assert s["role"] == ("leader" if node.node_id == leader_id else "follower")
        assert s["leader_id"] == leader_id
        assert s["engine"] == cluster.engine
        assert {m["id"] for m in s["members"]} == {"n1", "n2", "n3"}
        assert s["commit_index"] >= s["applied_index"] - 0 >= 0
        assert isinstance(s["term"], int) and isinstance(s["revision"], int)
        assert call("GET", f"{node.url}/healthz").json() == {"status": "ok"}
        ready = call("GET", f"{node.url}/readyz")
        assert ready.status == 200 and ready.json()["status"] == "ready"


# -- bad input: a clear error, nothing lost ----------------------------------


@pytest.mark.parametrize(
    "method,path,body,headers,status,code",
    [
        ("GET", "/v1/kv/x?consitency=serializable", None, {}, 400, "unknown_field"),
        ("GET", "/v1/kv/x?timeout=abc", None, {}, 400, "invalid_argument"),
        ("GET", "/v1/kv/x?timeout=0", None, {}, 400, "invalid_argument"),
        ("GET", "/v1/kv?limit=-1", None, {}, 400, "invalid_argument"),
        ("GET", "/v1/kv?keys_only=maybe", None, {}, 400, "invalid_argument"),
        ("PUT", "/v1/kv/", b"v", {}, 400, "empty_key"),
        ("PUT", "/v1/kv/x", b"v", {"If-Match": "abc"}, 400, "invalid_argument"),
        ("PUT", "/v1/kv/x", b"v", {"If-Match": 'W/"1"'}, 400, "invalid_argument"),
        ("PUT", "/v1/kv/x", b"v", {"If-None-Match": '"3"'}, 400, "invalid_argument"),
        ("PUT", "/v1/kv/x", b"v", {"If-Match": '"1"', "If-None-Match": "*"}, 400, "invalid_argument"),
        ("PUT", "/v1/kv/x", b"v", {"Idempotency-Key": "k" * 300}, 400, "invalid_argument"),
        ("POST", "/v1/txn", b"{not json", {}, 400, "invalid_json"),
        ("POST", "/v1/txn", b"[]", {}, 400, "wrong_type"),
        ("POST", "/v1/txn", b'{"compare": [], "sucess": []}', {}, 400, "unknown_field"),
        ("POST", "/v1/txn", b'{"success": [{"op": "add", "key": "n", "delta": "1"}]}', {}, 400, "wrong_type"),
        ("POST", "/v1/txn", b'{"success": [{"op": "explode", "key": "n"}]}', {}, 400, None),
        ("POST", "/v1/leadership/transfer", b'{"to": "n9"}', {}, 404, "not_found"),
        ("POST", "/v1/leadership/transfer", b'{"too": "n1"}', {}, 400, "unknown_field"),
        ("GET", "/v1/nothing-here", None, {}, 404, "not_found"),
        ("PATCH", "/v1/kv/x", b"v", {}, 405, "method_not_allowed"),
        ("POST", "/v1/status", b"", {}, 405, "method_not_allowed"),
    ],
)
def test_bad_requests_get_clear_json_errors(
    cluster: LocalCluster,
    method: str,
    path: str,
    body: bytes | None,
    headers: dict[str, str],
    status: int,
    code: str | None,
) -> None:
    # A linearizable read's revision: a follower's /v1/status may still be
    # applying an earlier test's write, which would look like a change.
    revision_url = f"{cluster.nodes[0].url}/v1/kv?prefix=no-such-prefix/&limit=1"
    before = call("GET", revision_url).json()["revision"]
    r = call(method, cluster.nodes[0].url + path, body, headers)
    assert r.status == status, r.body
    error = r.json()["error"]
    if code is not None:
        assert error["code"] == code
    assert len(error["message"]) > 10
    after = call("GET", revision_url).json()["revision"]
    assert after == before, "a rejected request must change nothing"


def test_oversized_requests_are_413(cluster: LocalCluster) -> None:
    url = cluster.nodes[1].url
    big_key = "k" * 5000
    assert call("PUT", f"{url}/v1/kv/{big_key}", b"v").error_code == "key_too_large"
    r = call("PUT", f"{url}/v1/kv/{k('big')}", b"x" * (1_048_576 + 1))
    assert r.status == 413 and r.error_code == "value_too_large"
    huge = call("PUT", f"{url}/v1/kv/{k('huge')}", b"x" * (2_097_152 + 10))
    assert huge.status == 413 and huge.error_code == "request_too_large"
    ops = [{"op": "get", "key": "a"}] * 129
    many = call_json("POST", f"{url}/v1/txn", {"success": ops})
    assert many.status == 413 and many.error_code == "too_many_ops"


def test_longest_legal_key_with_escaped_characters_works(cluster: LocalCluster) -> None:
    from urllib.parse import quote

    key = "é/" * 1365  # 4095 bytes of UTF-8, ~12 KB once percent-encoded
    url = cluster.nodes[0].url
    assert call("PUT", f"{url}/v1/kv/{quote(key)}", b"v").status == 200
    assert call("GET", f"{url}/v1/kv/{quote(key)}").body == b"v"


def test_replayed_error_result_is_marked_and_stays_an_error(cluster: LocalCluster) -> None:
    url = cluster.nodes[0].url
    key = k("word")
    call("PUT", f"{url}/v1/kv/{key}", b"text")
    idem = {"Idempotency-Key": uuid.uuid4().hex}
    body = {"success": [{"op": "add", "key": key, "delta": 1}]}
    first = call_json("POST", f"{url}/v1/txn", body, idem)
    # Fixing the value does not change the answer to the same request: it was decided.
    call("PUT", f"{url}/v1/kv/{key}", b"1")
    again = call_json("POST", f"{cluster.nodes[1].url}/v1/txn", body, idem)
    assert first.status == again.status == 409
    assert again.error_code == "not_a_number"
    assert again.headers.get("idempotency-replayed") == "true"
    assert call("GET", f"{url}/v1/kv/{key}").body == b"1"


def test_too_long_prefix_is_413_naming_the_prefix(cluster: LocalCluster) -> None:
    r = call("GET", f"{cluster.nodes[0].url}/v1/kv?prefix={'p' * 5000}")
    assert r.status == 413 and "prefix" in r.json()["error"]["message"]
