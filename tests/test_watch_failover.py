"""Watches across node failures on real clusters (issue #11 "Done when"):
a watch through a follower sees 100 writes in order across kill -9 of the
leader and resumes with Last-Event-ID on another node; the client iterator
carries on when the node it streams from is killed."""

from __future__ import annotations

import threading
from collections.abc import Callable

from raftkv.client import Client, Watch
from raftkv.local_cluster import LocalCluster
from tests.test_watch import Stream, put

WRITES = 100
KILL_AFTER = 40  # acknowledged writes before the kill


def write_values(cluster: LocalCluster, prefix: str, on_write: Callable[[int], None]) -> threading.Thread:
    """Write values 0..WRITES-1 over 5 keys under ``prefix`` in a thread,
    through the retrying client (so each acknowledged write is applied once,
    whichever node leads); ``on_write(i)`` runs after write i is acknowledged."""
    failures: list[BaseException] = []

    def run() -> None:
        try:
            with Client(cluster.endpoints, timeout=5.0, retries=20) as kv:
                for i in range(WRITES):
                    kv.put(f"{prefix}{i % 5}", str(i))
                    on_write(i)
        except BaseException as exc:  # surfaced by the joining test
            failures.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.failures = failures  # type: ignore[attr-defined]
    thread.start()
    return thread


def test_follower_watch_sees_100_writes_in_order_across_leader_kill_and_resumes_elsewhere(
    make_cluster: Callable[..., LocalCluster],
) -> None:
    cluster = make_cluster()
    leader = cluster.leader()
    assert leader is not None
    watching, other = [n for n in cluster.nodes if n.node_id != leader]
    base = put(cluster.node(leader).url, "fo/base", "-")
    stream = Stream(watching.url, f"prefix=fo/&start_revision={base + 1}", sse=True, timeout=20)
    assert stream.status == 200

    def kill_leader(i: int) -> None:
        if i == KILL_AFTER - 1:
            cluster.kill(leader)

    writer = write_values(cluster, "fo/", kill_leader)
    first = 70  # events read from the follower's stream, across the kill
    try:
        frames = stream.events(first)
    finally:
        stream.close()
    last_id = frames[-1]["id"]
    resumed = Stream(other.url, f"prefix=fo/&start_revision={base + 1}", sse=True, timeout=20,
                     headers={"Last-Event-ID": last_id})
    try:
        assert resumed.status == 200
        assert resumed.headers["x-raftkv-start-revision"] == str(int(last_id) + 1)
        frames += resumed.events(WRITES - first)
    finally:
        resumed.close()
    writer.join(timeout=60)
    assert not writer.is_alive() and not writer.failures, writer.failures  # type: ignore[attr-defined]

    assert [f["data"]["value"] for f in frames] == [str(i) for i in range(WRITES)]
    revisions = [int(f["id"]) for f in frames]
    assert revisions == sorted(set(revisions)), "revisions must increase: no duplicate, no reorder"
    assert all(f["data"]["revision"] == int(f["id"]) and f["event"] == "put" for f in frames)
    assert [f["data"]["key"] for f in frames] == [f"fo/{i % 5}" for i in range(WRITES)]


def test_client_watch_iterator_continues_when_its_node_is_killed(
    make_cluster: Callable[..., LocalCluster],
) -> None:
    cluster = make_cluster()
    base = put(cluster.node(cluster.wait_ready()).url, "it/base", "-")
    watch = Watch(cluster.endpoints, prefix="it/", start_revision=base, silence_timeout=5.0)
    killed: list[str] = []

    def kill_the_watched_node(i: int) -> None:
        if i == KILL_AFTER - 1:
            victim = next(n for n in cluster.nodes if n.url == watch.endpoint_in_use)
            killed.append(victim.node_id)
            cluster.kill(victim.node_id)

    events = []
    with watch:
        iterator = iter(watch)
        events.append(next(iterator))  # it/base: connected, endpoint_in_use is set
        writer = write_values(cluster, "it/", kill_the_watched_node)
        for event in iterator:
            events.append(event)
            if event.value == b"%d" % (WRITES - 1):
                break
    writer.join(timeout=60)
    assert not writer.failures, writer.failures  # type: ignore[attr-defined]

    assert killed and watch.reconnects >= 1
    assert [e.value for e in events[1:]] == [b"%d" % i for i in range(WRITES)]
    assert events[0].key == "it/base"
    revisions = [e.revision for e in events]
    assert revisions == sorted(set(revisions))
    # The last revision's transaction may have more events to come.
    assert watch.revision == revisions[-1] - 1
