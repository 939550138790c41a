"""Users, roles and auth over HTTP on real clusters: the 401/403/200 matrix,
revocation, disable, restart, followers and bad input."""

from __future__ import annotations

import base64
import json
import http.client
import time
from typing import Any, Callable
from urllib.parse import urlsplit

from raftkv.local_cluster import LocalCluster
from tests.http import Response, call, call_json


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def basic(credentials: bytes) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(credentials).decode()}


def login(url: str, name: str, password: str) -> str:
    response = call_json("POST", f"{url}/v1/auth/authenticate", {"name": name, "password": password})
    assert response.status == 200, response.body
    return str(response.json()["token"])


def ok(response: Response, status: int = 200) -> Response:
    assert response.status == status, (response.status, response.body)
    return response


def watch_status(url: str, query: str, headers: dict[str, str]) -> int:
    """The status a watch answers with (the stream itself is not read)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request("GET", f"/v1/watch?{query}", headers=headers)
        return conn.getresponse().status
    finally:
        conn.close()


def setup_users(url: str, root: dict[str, str] | None = None) -> None:
    """root (password rootpw), alice (readwrite on app/, read on pub/) and bob (no roles)."""
    h = root or {}
    ok(call_json("POST", f"{url}/v1/auth/users", {"name": "root", "password": "rootpw"}, h), 201)
    ok(call_json("POST", f"{url}/v1/auth/users", {"name": "alice", "password": "alicepw"}, h), 201)
    ok(call_json("POST", f"{url}/v1/auth/users", {"name": "bob", "password": "bobpw"}, h), 201)
    ok(call_json("POST", f"{url}/v1/auth/roles", {"name": "app"}, h), 201)
    ok(call_json("POST", f"{url}/v1/auth/roles/app/permissions", {"prefix": "app/", "permission": "readwrite"}, h))
    ok(call_json("POST", f"{url}/v1/auth/roles/app/permissions", {"prefix": "pub/", "permission": "read"}, h))
    granted = ok(call("PUT", f"{url}/v1/auth/users/alice/roles/app", headers=h)).json()
    assert granted["roles"] == ["app"]


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition did not hold in time"
        time.sleep(0.1)


def test_auth_matrix(make_cluster: Callable[..., LocalCluster]) -> None:
    cluster = make_cluster()
    url, other = cluster.endpoints[0], cluster.endpoints[2]
    assert ok(call("GET", f"{url}/v1/auth/status")).json()["enabled"] is False
    assert call_json("POST", f"{url}/v1/auth/authenticate", {"name": "root", "password": "x"}).error_code == "auth_not_enabled"
    enable = call("POST", f"{url}/v1/auth/enable")
    assert enable.status == 409 and enable.error_code == "root_user_required"
    setup_users(url)
    ok(call("PUT", f"{url}/v1/kv/other/x", "before"))
    ok(call("POST", f"{url}/v1/auth/enable"))
    # Each node enforces the switch once it has applied it; a linearizable
    # status read answers after that.
    for endpoint in cluster.endpoints:
        assert ok(call("GET", f"{endpoint}/v1/auth/status")).json()["enabled"] is True

    # Anonymous: 401 everywhere but the open routes.
    for method, path in [("PUT", "/v1/kv/app/x"), ("GET", "/v1/kv/app/x"), ("GET", "/v1/kv?prefix="),
                         ("POST", "/v1/txn"), ("GET", "/v1/members"), ("GET", "/v1/snapshot"),
                         ("GET", "/v1/leases"), ("POST", "/v1/compaction"), ("GET", "/v1/auth/users"),
                         ("POST", "/v1/leadership/transfer"), ("GET", "/v1/hotkeys")]:
        response = call(method, f"{url}{path}", b"{}")
        assert (response.status, response.error_code) == (401, "unauthenticated"), (method, path)
        assert response.headers["www-authenticate"].startswith("Bearer")
    for path in ("/healthz", "/readyz", "/v1/status", "/v1/auth/status"):
        ok(call("GET", f"{url}{path}"))
    scrape = call("GET", f"{url}/metrics")
    assert (scrape.status, scrape.error_code) == (401, "unauthenticated")
    assert scrape.headers["www-authenticate"].endswith('Basic realm="raftkv"')
    for credentials in (b"alice:nope", b"mallory:x", b"alice", b"\xff:x"):
        response = call("GET", f"{url}/metrics", headers=basic(credentials))
        assert response.status == 401, (credentials, response.body)
    assert call("GET", f"{url}/metrics", headers={"Authorization": "Basic !!"}).error_code == "invalid_token"
    for _ in range(2):  # the second is answered from the cache of checked logins
        assert b"raftkv_server_has_leader" in ok(call("GET", f"{url}/metrics", headers=basic(b"bob:bobpw"))).body
    assert watch_status(url, "prefix=app/", {}) == 401
    garbage = call("GET", f"{url}/v1/kv/app/x", headers=bearer("rkv1.abc.def"))
    assert (garbage.status, garbage.error_code) == (401, "invalid_token")
    wrong = call_json("POST", f"{url}/v1/auth/authenticate", {"name": "alice", "password": "nope"})
    assert (wrong.status, wrong.error_code) == (401, "authentication_failed")
    nobody = call_json("POST", f"{url}/v1/auth/authenticate", {"name": "mallory", "password": "nope"})
    assert (nobody.status, nobody.error_code) == (401, "authentication_failed")

    # alice: readwrite on app/, read on pub/; her token works on every node.
    alice = bearer(login(url, "alice", "alicepw"))
    ok(call("GET", f"{other}/metrics", headers=alice))
    ok(call("GET", f"{other}/metrics", headers=basic(b"alice:alicepw")))
    ok(call("PUT", f"{url}/v1/kv/app/x", "1", headers=alice))
    assert ok(call("GET", f"{other}/v1/kv/app/x", headers=alice)).body == b"1"
    ok(call("GET", f"{other}/v1/kv?prefix=app/", headers=alice))
    for method, path in [("PUT", "/v1/kv/other/x"), ("GET", "/v1/kv/other/x"), ("PUT", "/v1/kv/pub/x"),
                         ("GET", "/v1/kv?prefix=ap"), ("GET", "/v1/kv?prefix="), ("DELETE", "/v1/kv?prefix=pub/"),
                         ("GET", "/v1/members"), ("GET", "/v1/snapshot"), ("POST", "/v1/compaction"),
                         ("GET", "/v1/auth/users"), ("POST", "/v1/auth/disable")]:
        response = call(method, f"{url}{path}", b"x" if method == "PUT" else None, headers=alice)
        assert (response.status, response.error_code) == (403, "permission_denied"), (method, path, response.body)
    assert call("GET", f"{url}/v1/kv/pub/none", headers=alice).status == 404  # read allowed: not found
    both = {"success": [{"op": "put", "key": "app/y", "value": "2"}, {"op": "get", "key": "other/x"}]}
    assert call_json("POST", f"{url}/v1/txn", both, alice).status == 403
    compare = {"compare": [{"key": "other/x", "target": "version", "cmp": ">", "value": 0}],
               "success": [{"op": "put", "key": "app/y", "value": "2"}]}
    assert call_json("POST", f"{url}/v1/txn", compare, alice).status == 403
    mine = {"success": [{"op": "put", "key": "app/y", "value": "2"}], "failure": [{"op": "get", "key": "pub/z"}]}
    ok(call_json("POST", f"{url}/v1/txn", mine, alice))
    assert watch_status(url, "prefix=other/", alice) == 403
    assert watch_status(url, "prefix=app/", alice) == 200
    lease = ok(call_json("POST", f"{url}/v1/leases", {"ttl": 30}, alice)).json()["id"]  # any user may hold one
    ok(call("PUT", f"{url}/v1/kv/app/leased?lease={lease}", "l", headers=alice))

    # bob has no role: authenticated, yet nothing to read, and he may not
    # see or revoke a lease whose keys he could not read or write.
    bob = bearer(login(other, "bob", "bobpw"))
    assert call("GET", f"{url}/v1/kv/app/x", headers=bob).status == 403
    assert call("GET", f"{url}/v1/leases/{lease}", headers=bob).status == 403
    assert call("DELETE", f"{url}/v1/leases/{lease}", headers=bob).status == 403
    ok(call("GET", f"{url}/v1/leases/{lease}", headers=alice))
    assert ok(call("DELETE", f"{url}/v1/leases/{lease}", headers=alice)).json()["deleted"] == 1

    # root: everything.
    root = bearer(login(other, "root", "rootpw"))
    ok(call("GET", f"{url}/v1/kv/other/x", headers=root))
    ok(call("GET", f"{url}/v1/members", headers=root))
    users = ok(call("GET", f"{url}/v1/auth/users", headers=root)).json()["users"]
    assert users == [{"name": "alice", "roles": ["app"]}, {"name": "bob", "roles": []}, {"name": "root", "roles": ["root"]}]
    roles = ok(call("GET", f"{url}/v1/auth/roles", headers=root)).json()["roles"]
    assert roles == [{"name": "app", "permissions": [{"prefix": "app/", "permission": "readwrite"},
                                                      {"prefix": "pub/", "permission": "read"}]}]
    # The administrator stays: root cannot be deleted while auth is on.
    assert call("DELETE", f"{url}/v1/auth/users/root", headers=root).status == 409

    # Locks and elections need permissions on their reserved ranges, not root.
    held = ok(call_json("POST", f"{url}/v1/leases", {"ttl": 30}, alice)).json()["id"]
    for method, path, payload in [("POST", "/v1/locks/l1", {"lease": held}), ("DELETE", "/v1/locks/l1?key=__locks/l1/1", None),
                                  ("POST", "/v1/elections/e1/campaign", {"lease": held, "value": "me"}),
                                  ("GET", "/v1/elections/e1/leader", None)]:
        response = call_json(method, f"{url}{path}", payload, alice) if payload else call(method, f"{url}{path}", headers=alice)
        assert (response.status, response.error_code) == (403, "permission_denied"), (method, path, response.body)
    ok(call_json("POST", f"{url}/v1/auth/roles", {"name": "locker"}, root), 201)
    ok(call_json("POST", f"{url}/v1/auth/roles/locker/permissions", {"prefix": "__locks/l1/", "permission": "readwrite"}, root))
    ok(call_json("POST", f"{url}/v1/auth/roles/locker/permissions", {"prefix": "__elections/e1/", "permission": "read"}, root))
    ok(call("PUT", f"{url}/v1/auth/users/alice/roles/locker", headers=root))
    alice = bearer(login(url, "alice", "alicepw"))  # a role change revokes her tokens
    lock = ok(call_json("POST", f"{url}/v1/locks/l1", {"lease": held}, alice)).json()
    assert lock["key"] == f"__locks/l1/{held}" and lock["fencing_token"] > 0
    assert call_json("POST", f"{url}/v1/locks/l2", {"lease": held}, alice).status == 403
    ok(call("DELETE", f"{url}/v1/locks/l1?key={lock['key']}", headers=alice))
    assert call("GET", f"{url}/v1/elections/e1/leader", headers=alice).error_code == "no_leader_elected"
    campaign = call_json("POST", f"{url}/v1/elections/e1/campaign", {"lease": held, "value": "me"}, alice)
    assert (campaign.status, campaign.error_code) == (403, "permission_denied")
    ok(call("DELETE", f"{url}/v1/auth/users/alice/roles/locker", headers=root))
    alice = bearer(login(url, "alice", "alicepw"))

    # A password change revokes alice's tokens at once, on every node.
    ok(call_json("PUT", f"{url}/v1/auth/users/alice/password", {"password": "new"}, root))
    wait_until(lambda: call("GET", f"{other}/v1/kv/app/x", headers=alice).status == 401)
    alice = bearer(login(other, "alice", "new"))
    assert call("GET", f"{other}/metrics", headers=basic(b"alice:alicepw")).status == 401  # not from the cache
    ok(call("GET", f"{other}/metrics", headers=basic(b"alice:new")))
    ok(call("GET", f"{url}/v1/kv/app/x", headers=alice))
    # Revoking the role takes her write away.
    ok(call("DELETE", f"{url}/v1/auth/users/alice/roles/app", headers=root))
    alice = bearer(login(url, "alice", "new"))
    assert call("PUT", f"{url}/v1/kv/app/x", "2", headers=alice).status == 403

    # Bad input: clear 4xx, never 500.
    bad: list[tuple[str, str, Any, int]] = [
        ("POST", "/v1/auth/users", {"name": "a/b", "password": "p"}, 400),
        ("POST", "/v1/auth/users", {"name": "carol"}, 400),
        ("POST", "/v1/auth/users", {"name": "carol", "password": ""}, 400),
        ("POST", "/v1/auth/users", {"name": "carol", "password": "p", "admin": True}, 400),
        ("POST", "/v1/auth/users", [1], 400),
        ("POST", "/v1/auth/users", {"name": "alice", "password": "p"}, 409),
        ("POST", "/v1/auth/roles/app/permissions", {"prefix": "a/", "permission": "all"}, 400),
        ("POST", "/v1/auth/roles/app/permissions", {"prefix": 3, "permission": "read"}, 400),
        ("POST", "/v1/auth/roles/nope/permissions", {"prefix": "a/", "permission": "read"}, 404),
        ("PUT", "/v1/auth/users/alice/roles/nope", None, 404),
        ("PUT", "/v1/auth/users/nobody/password", {"password": "p"}, 404),
        ("DELETE", "/v1/auth/roles/app/permissions?prefix=zzz/", None, 404),
        ("POST", "/v1/auth/roles", {"name": "root"}, 409),
        ("PATCH", "/v1/auth/users/alice", None, 405),
        ("GET", "/v1/auth/users/alice/whatever", None, 404),
    ]
    for method, path, payload, status in bad:
        response = call_json(method, f"{url}{path}", payload, root) if payload is not None else call(method, f"{url}{path}", headers=root)
        assert response.status == status, (method, path, response.status, response.body)
        assert response.json()["error"]["code"]
    not_json = call("POST", f"{url}/v1/auth/authenticate", b"{nope", {"Content-Type": "application/json"})
    assert (not_json.status, not_json.error_code) == (400, "invalid_json")

    # Disable: anonymous access is back everywhere.
    ok(call("POST", f"{url}/v1/auth/disable", headers=root))
    wait_until(lambda: call("GET", f"{other}/v1/kv/other/x").status == 200)
    ok(call("PUT", f"{other}/v1/kv/other/x", "after"))


def test_users_survive_a_restart_and_reach_a_follower(make_cluster: Callable[..., LocalCluster]) -> None:
    cluster = make_cluster()
    url = cluster.endpoints[0]
    setup_users(url)
    ok(call("POST", f"{url}/v1/auth/enable"))
    for endpoint in cluster.endpoints:
        assert ok(call("GET", f"{endpoint}/v1/auth/status")).json()["enabled"] is True
    for node in cluster.nodes:
        cluster.restart(node.node_id)
    cluster.wait_ready()
    for endpoint in cluster.endpoints:
        alice = bearer(login(endpoint, "alice", "alicepw"))
        ok(call("PUT", f"{endpoint}/v1/kv/app/{endpoint[-5:]}", "v", headers=alice))
        assert call("GET", f"{endpoint}/v1/kv/other/x", headers=alice).status == 403
    assert call("GET", f"{cluster.endpoints[1]}/v1/kv/app/x").status == 401


class _WatchStream:
    """One NDJSON watch over a raw connection, read line by line."""

    def __init__(self, url: str, query: str, headers: dict[str, str]) -> None:
        parts = urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=20)
        self.conn.request("GET", f"/v1/watch?{query}", headers={"Accept": "application/x-ndjson", **headers})
        self.response = self.conn.getresponse()
        assert self.response.status == 200, self.response.read()

    def next_message(self) -> dict[str, Any]:
        """The next event or end message (progress messages skipped)."""
        while True:
            line = self.response.readline()
            assert line, "the stream closed without an end message"
            message = json.loads(line)
            if message.get("type") != "progress":
                return message

    def close(self) -> None:
        self.conn.close()


def test_a_watch_ends_when_its_access_is_revoked(make_cluster: Callable[..., LocalCluster]) -> None:
    """A watch's token is checked when it starts; losing the permission or
    having the token revoked ends the open stream before anything more is
    sent, with the reason (the client then reconnects and gets 403 or 401)."""
    cluster = make_cluster()
    url, follower = cluster.endpoints[0], cluster.endpoints[2]
    setup_users(url)
    ok(call("POST", f"{url}/v1/auth/enable"))
    root = bearer(login(url, "root", "rootpw"))
    alice = bearer(login(follower, "alice", "alicepw"))

    watch = _WatchStream(follower, "prefix=app/&progress_interval=60", alice)
    try:
        ok(call("PUT", f"{url}/v1/kv/app/1", "one", headers=root))
        assert watch.next_message()["key"] == "app/1"
        # The role loses read on app/: the next wake-up (this put) ends the stream.
        ok(call("DELETE", f"{url}/v1/auth/roles/app/permissions?prefix=app/", headers=root))
        ok(call("PUT", f"{url}/v1/kv/app/2", "two", headers=root))
        end = watch.next_message()
        assert (end.get("type"), end["error"]["code"]) == ("end", "permission_denied"), end
        assert "app/" in end["error"]["message"]
    finally:
        watch.close()
    assert watch_status(follower, "prefix=app/", alice) == 403

    ok(call_json("POST", f"{url}/v1/auth/roles/app/permissions", {"prefix": "app/", "permission": "readwrite"}, root))
    # Each node checks against what it has applied: wait for the follower.
    wait_until(lambda: watch_status(follower, "prefix=app/", alice) == 200)
    watch = _WatchStream(follower, "prefix=app/&progress_interval=60", alice)
    try:
        ok(call("PUT", f"{url}/v1/kv/app/3", "three", headers=root))
        assert watch.next_message()["key"] == "app/3"
        # A password change revokes alice's tokens: the open watch ends too.
        ok(call_json("PUT", f"{url}/v1/auth/users/alice/password", {"password": "new"}, root))
        ok(call("PUT", f"{url}/v1/kv/app/4", "four", headers=root))
        end = watch.next_message()
        assert (end.get("type"), end["error"]["code"]) == ("end", "invalid_token"), end
    finally:
        watch.close()
    assert watch_status(follower, "prefix=app/", alice) == 401
    assert watch_status(follower, "prefix=app/", bearer(login(follower, "alice", "new"))) == 200
