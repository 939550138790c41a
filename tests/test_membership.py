"""Membership changes with real processes: a node joins as a learner while
writes run, is promoted, a voter is removed; the refusals; the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from raftkv.local_cluster import LocalCluster, free_ports
from tests.http import Response, call, call_json


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Callable[..., LocalCluster]]:
    """Native-engine clusters (membership changes need it), stopped afterwards."""
    made: list[LocalCluster] = []

    def make(nodes: int = 3, **kwargs: object) -> LocalCluster:
        c = LocalCluster(tmp_path / f"c{len(made)}", nodes=nodes, **kwargs)  # type: ignore[arg-type]
        made.append(c)
        c.start()
        c.wait_ready()
        return c

    yield make
    for c in made:
        c.stop()


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} not met within {timeout:g}s")


def members(url: str) -> dict[str, str]:
    """id -> role as ``url``'s node sees it."""
    return {m["id"]: m["role"] for m in call("GET", f"{url}/v1/members").json()["members"]}


def on_leader(c: LocalCluster, method: str, path: str, payload: object = None, retry_codes: tuple[str, ...] = ()) -> Response:
    """Send to the current leader; retry while the answer's code is in ``retry_codes``."""
    deadline = time.monotonic() + 30
    while True:
        leader = c.leader()
        if leader is None:
            time.sleep(0.1)
            continue
        url = f"{c.node(leader).url}{path}"
        resp = call_json(method, url, payload) if payload is not None else call(method, url)
        retry = resp.status in (409, 503) and resp.error_code in (*retry_codes, "not_leader", "no_leader")
        if not retry or time.monotonic() > deadline:
            return resp
        time.sleep(0.2)


class Writer(threading.Thread):
    """PUTs distinct keys to any node until stopped; remembers the acknowledged ones."""

    def __init__(self, c: LocalCluster) -> None:
        super().__init__(daemon=True)
        self.c = c
        self.acked: list[str] = []
        self.failed = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        i = 0
        while not self._stop_event.is_set():
            key = f"w/{i:06d}"
            for node in list(self.c.nodes):
                try:
                    resp = call("PUT", f"{node.url}/v1/kv/{key}?timeout=2", key.encode(),
                                {"Idempotency-Key": uuid.uuid4().hex}, timeout=5)
                except OSError:
                    continue
                if resp.status == 200:
                    self.acked.append(key)
                    break
            else:
                self.failed += 1
            i += 1

    def stop(self) -> None:
        self._stop_event.set()
        self.join(10)


def test_join_promote_and_remove_while_writes_run(make_cluster: Callable[..., LocalCluster]) -> None:
    c = make_cluster()
    writer = Writer(c)
    writer.start()
    wait_for(lambda: len(writer.acked) >= 50, what="50 writes before the join")

    n4 = c.add_node("n4")
    wait_for(lambda: c.is_ready("n4"), what="n4 ready")
    leader_url = c.node(c.leader() or "n1").url
    assert members(leader_url)["n4"] == "learner"
    assert call("GET", f"{n4.url}/v1/status").json()["role"] == "learner"

    promoted = on_leader(c, "POST", "/v1/members/n4/promote", retry_codes=("learner_not_caught_up", "change_pending"))
    assert promoted.status == 200, promoted.body
    assert {m["id"]: m["role"] for m in promoted.json()["members"]}["n4"] == "voter"

    leader = c.leader()
    victim = next(n for n in ("n1", "n2", "n3") if n != leader)
    removed = on_leader(c, "DELETE", f"/v1/members/{victim}", retry_codes=("change_pending",))
    assert removed.status == 200, removed.body
    assert victim not in {m["id"] for m in removed.json()["members"]}
    c.forget_node(victim)

    # Still serving with the new voter in the quorum, and n4 holds every
    # acknowledged write.
    acked_before = len(writer.acked)
    wait_for(lambda: len(writer.acked) >= acked_before + 50, what="50 writes after the removal")
    writer.stop()
    for key in writer.acked:
        resp = call("GET", f"{n4.url}/v1/kv/{key}")
        assert resp.status == 200 and resp.body == key.encode(), (key, resp)
    final = members(c.node(c.leader() or "n4").url)
    assert sorted(final) == sorted(n for n in ("n1", "n2", "n3", "n4") if n != victim)
    assert set(final.values()) == {"voter"}

    # A restart finds the join record and does not ask to join again.
    c.restart("n4")
    wait_for(lambda: c.is_ready("n4"), what="n4 ready after a restart")
    assert members(n4.url)["n4"] == "voter"
    assert "cannot join" not in n4.log_path.read_text()


def test_refusals(make_cluster: Callable[..., LocalCluster]) -> None:
    c = make_cluster()
    leader = c.wait_ready()
    url = c.node(leader).url
    follower = next(n for n in c.nodes if n.node_id != leader)

    for body, code in (
        ({"peer_addr": "127.0.0.1:1"}, "missing_field"),
        ({"id": "n9", "peer_addr": "127.0.0.1:1", "extra": 1}, "unknown_field"),
        ({"id": 9, "peer_addr": "127.0.0.1:1"}, "wrong_type"),
        ({"id": "n9", "peer_addr": "nowhere"}, "invalid_argument"),
        ({"id": "bad id!", "peer_addr": "127.0.0.1:1"}, "invalid_argument"),
        ({"id": "n9", "peer_addr": "127.0.0.1:1", "learner": False}, "invalid_argument"),
        ([1, 2], "wrong_type"),
    ):
        resp = call_json("POST", f"{url}/v1/members", body)
        assert resp.status == 400 and resp.error_code == code, (body, resp)
    resp = call("POST", f"{url}/v1/members", b"{not json", {"Content-Type": "application/json"})
    assert resp.status == 400 and resp.error_code == "invalid_json"

    assert call("POST", f"{url}/v1/members/n9/promote").error_code == "not_found"
    assert call("POST", f"{url}/v1/members/n9/promote").status == 404
    assert call("DELETE", f"{url}/v1/members/n9").status == 404
    assert call("GET", f"{url}/v1/members/n1/promote").status == 405
    assert call("POST", f"{url}/v1/members/n1/demote").status == 404

    resp = call_json("POST", f"{follower.url}/v1/members", {"id": "n9", "peer_addr": "127.0.0.1:1"})
    assert resp.status == 409 and resp.error_code == "not_leader"
    assert resp.json()["error"]["leader_id"] == leader

    # A learner nothing answers for: it never catches up, so it is not promoted.
    ghost_port = free_ports(1)[0]
    assert call_json("POST", f"{url}/v1/members", {"id": "ghost", "peer_addr": f"127.0.0.1:{ghost_port}"}).status == 201
    resp = call_json("POST", f"{url}/v1/members", {"id": "ghost", "peer_addr": f"127.0.0.1:{ghost_port}"})
    assert resp.status == 409 and resp.error_code == "member_exists"
    resp = call("POST", f"{url}/v1/members/ghost/promote")
    assert resp.status == 409 and resp.error_code == "learner_not_caught_up", resp.body
    assert call("POST", f"{url}/v1/members/{leader}/promote").error_code == "not_a_learner"
    assert call("DELETE", f"{url}/v1/members/ghost").status == 200
    assert "ghost" not in members(url)

    # With one voter down, removing another would leave 2 voters of which
    # only the leader is reachable.
    down, other = [n.node_id for n in c.nodes if n.node_id != leader]
    c.kill(down)
    wait_for(lambda: not _recently_active(url, down), what=f"leader notices {down} is down")
    resp = call("DELETE", f"{url}/v1/members/{other}")
    assert resp.status == 409 and resp.error_code == "would_lose_quorum", resp.body
    assert sorted(members(url)) == ["n1", "n2", "n3"]
    # Writes still work: nothing was changed.
    assert call("PUT", f"{url}/v1/kv/after", b"x").status == 200


def _recently_active(url: str, node_id: str) -> bool:
    for m in call("GET", f"{url}/v1/members").json()["members"]:
        if m["id"] == node_id:
            return bool(m.get("recently_active"))
    return False


def test_member_cli(make_cluster: Callable[..., LocalCluster], tmp_path: Path) -> None:
    c = make_cluster()
    c.wait_ready()
    env = {**os.environ, "RAFTKV_ENDPOINTS": ",".join(c.endpoints)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "raftkv", "member", *args], env=env,
                              capture_output=True, text=True, timeout=60)

    listed = cli("list")
    assert listed.returncode == 0, listed.stderr
    assert "n1" in listed.stdout and "voter" in listed.stdout
    as_json = cli("list", "--json")
    assert {m["id"] for m in orjson.loads(as_json.stdout)["members"]} == {"n1", "n2", "n3"}

    port = free_ports(1)[0]
    added = cli("add", "n7", f"127.0.0.1:{port}")
    assert added.returncode == 0, added.stderr
    assert "n7" in cli("list").stdout
    refused = cli("promote", "n7")
    assert refused.returncode != 0 and "learner_not_caught_up" in refused.stderr
    removed = cli("remove", "n7")
    assert removed.returncode == 0, removed.stderr
    assert "n7" not in cli("list").stdout
    missing = cli("remove", "n7")
    assert missing.returncode != 0 and "not_found" in missing.stderr


def test_join_in_a_dev_directory_needs_no_other_flag(tmp_path: Path) -> None:
    """`raftkv serve --join URL` run where `raftkv dev` keeps .raftkv-dev:
    id, data dir, ports and certificate are made up from the dev cluster."""
    c = LocalCluster(tmp_path / ".raftkv-dev", nodes=3)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAFTKV_")}
    joiner: subprocess.Popen[bytes] | None = None
    try:
        c.start()
        c.wait_ready()
        with open(tmp_path / "joiner.log", "wb") as log:
            joiner = subprocess.Popen([sys.executable, "-m", "raftkv", "serve", "--join", c.endpoints[0]],
                                      cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)

        def joined() -> bool:
            assert joiner is not None and joiner.poll() is None, (tmp_path / "joiner.log").read_text()
            leader = c.leader()
            return leader is not None and members(c.node(leader).url).get("n4") == "learner"

        wait_for(joined, what="n4 joined as a learner")
        # The joiner writes its record once the add's answer reaches it, which
        # may be a moment after the member list shows it.
        wait_for(lambda: (tmp_path / ".raftkv-dev" / "n4" / "join.json").exists(), what="n4's join record")
        assert (tmp_path / ".raftkv-dev" / "certs" / "n4.pem").exists()
        # It catches up over mutual TLS with its new certificate.
        leader = c.leader()
        assert leader is not None
        assert call("PUT", f"{c.node(leader).url}/v1/kv/dev-join", b"v").status == 200
        promoted = on_leader(c, "POST", "/v1/members/n4/promote", retry_codes=("learner_not_caught_up",))
        assert promoted.status == 200, promoted.body
    finally:
        if joiner is not None:
            joiner.terminate()
            joiner.wait(10)
        c.stop()


def test_a_node_that_missed_the_join_learns_the_address_from_a_snapshot(
    make_cluster: Callable[..., LocalCluster], monkeypatch: pytest.MonkeyPatch
) -> None:
    """n3 is down while n4 joins and the log is compacted past the change:
    it catches up from a snapshot and, restarted, knows n4's address only
    from the snapshot's members table; then it leads a quorum that needs
    n4's answers."""
    monkeypatch.setenv("RAFTKV_SNAPSHOT_EVERY", "50")
    monkeypatch.setenv("RAFTKV_SNAPSHOT_RETAIN", "0")
    c = make_cluster()
    c.kill("n3")
    n4 = c.add_node("n4", join_via=[c.node("n1").url, c.node("n2").url])
    wait_for(lambda: c.is_ready("n4"), what="n4 ready")
    assert on_leader(c, "POST", "/v1/members/n4/promote", retry_codes=("learner_not_caught_up",)).status == 200
    leader = c.leader()
    assert leader is not None
    for i in range(120):  # past two snapshots: the change's entry is compacted away
        assert call("PUT", f"{c.node(leader).url}/v1/kv/s{i}", b"v").status == 200

    c.start_node("n3")
    wait_for(lambda: c.is_ready("n3"), what="n3 caught up")
    assert "installed a snapshot" in c.node("n3").log_path.read_text()
    # After a restart neither --peers nor n3's log (it starts after the
    # snapshot) names n4's address: only the snapshot's members table does.
    c.restart("n3")
    wait_for(lambda: c.is_ready("n3"), what="n3 ready after a restart")
    seen = {m["id"]: m["peer_addr"] for m in call("GET", f"{c.node('n3').url}/v1/members").json()["members"]}
    assert seen["n4"] == n4.peer_addr

    # n3 leads with n2 down: each write needs n4's answer over n3's link.
    c.kill("n2")
    wait_for(lambda: call_json("POST", f"{c.node('n3').url}/v1/leadership/transfer?timeout=2", {"to": "n3"}).status == 200,
             what="leadership moved to n3")
    assert call("PUT", f"{c.node('n3').url}/v1/kv/after-snapshot?timeout=5", b"v").status == 200


def test_the_leader_removes_itself_and_the_rest_carry_on(make_cluster: Callable[..., LocalCluster]) -> None:
    c = make_cluster()
    leader = c.wait_ready()
    url = c.node(leader).url
    assert call("PUT", f"{url}/v1/kv/before", b"1").status == 200
    resp = call("DELETE", f"{url}/v1/members/{leader}")
    assert resp.status == 200, resp.body
    assert leader not in {m["id"] for m in resp.json()["members"]}
    c.forget_node(leader)
    new_leader = c.wait_ready()
    assert new_leader != leader
    assert sorted(members(c.node(new_leader).url)) == sorted(n.node_id for n in c.nodes)
    assert call("PUT", f"{c.node(new_leader).url}/v1/kv/after", b"2").status == 200
    for node in c.nodes:
        assert call("GET", f"{node.url}/v1/kv/before").body == b"1"
