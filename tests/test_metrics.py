"""GET /metrics and GET /v1/hotkeys on a real 3-node native cluster, the
hot-key counters against exact counts, and the shipped alert rules and
Grafana dashboard against the metrics the nodes really expose."""

from __future__ import annotations

import collections
import json
import os
import random
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from raftkv.local_cluster import LocalCluster
from raftkv.metrics import NodeMetrics
from raftkv.server.hot_keys import HotKeys, SpaceSaving, WindowedTopKeys

ROOT = Path(__file__).resolve().parent.parent
MONITORING = ROOT / "docs" / "monitoring"

COUNTERS = {
    "raftkv_server_leader_changes_seen",
    "raftkv_server_proposals_failed",
}
GAUGES = {
    "raftkv_server_has_leader",
    "raftkv_server_is_leader",
    "raftkv_server_proposals_committed_total",
    "raftkv_server_proposals_applied_total",
    "raftkv_server_proposals_pending",
    "raftkv_mvcc_db_total_size_in_bytes",
    "raftkv_mvcc_watcher_total",
    "raftkv_disk_data_dir_free_bytes",
    "raftkv_disk_data_dir_capacity_bytes",
}
HISTOGRAMS = {
    "raftkv_disk_wal_fsync_duration_seconds",
    "raftkv_disk_backend_commit_duration_seconds",
    "raftkv_snap_save_total_duration_seconds",
    "raftkv_network_peer_round_trip_time_seconds",
    "raftkv_http_request_duration_seconds",
}


def call(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


class Scrape:
    """One node's /metrics, parsed by prometheus_client's own parser."""

    def __init__(self, url: str) -> None:
        status, headers, body = call("GET", url + "/metrics")
        assert status == 200, body
        assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
        self.families = {f.name: f for f in text_string_to_metric_families(body.decode())}

    def samples(self, sample_name: str, **labels: str) -> list[Sample]:
        return [
            s
            for f in self.families.values()
            for s in f.samples
            if s.name == sample_name and all(s.labels.get(k) == v for k, v in labels.items())
        ]

    def value(self, sample_name: str, **labels: str) -> float:
        [sample] = self.samples(sample_name, **labels)
        return sample.value

    def sample_names(self) -> set[str]:
        return {s.name for f in self.families.values() for s in f.samples}


# Entries between snapshots: low, so the writes below make the nodes save one.
SNAPSHOT_EVERY = 20


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    old = os.environ.get("RAFTKV_SNAPSHOT_EVERY")
    os.environ["RAFTKV_SNAPSHOT_EVERY"] = str(SNAPSHOT_EVERY)  # the node processes inherit it
    c = LocalCluster(tmp_path_factory.mktemp("metrics"), engine="native")
    try:
        c.start()
    except BaseException:
        c.stop()
        raise
    finally:
        if old is None:
            del os.environ["RAFTKV_SNAPSHOT_EVERY"]
        else:
            os.environ["RAFTKV_SNAPSHOT_EVERY"] = old
    try:
        c.wait_ready()
        yield c
    finally:
        c.stop()


def leader_url(cluster: LocalCluster) -> str:
    leader = cluster.wait_ready()
    return cluster.node(leader).url


def test_every_node_exposes_the_metrics_with_one_leader(cluster: LocalCluster) -> None:
    scrapes = {node.node_id: Scrape(node.url) for node in cluster.nodes}
    for node_id, scrape in scrapes.items():
        families = scrape.families
        for name in COUNTERS:
            assert families[name].type == "counter", name
        for name in GAUGES:
            assert families[name].type == "gauge", name
        for name in HISTOGRAMS:
            assert families[name].type == "histogram", name
        assert scrape.value("raftkv_server_has_leader") == 1, node_id
        assert scrape.value("raftkv_server_leader_changes_seen_total") >= 1, node_id
        assert scrape.value("raftkv_mvcc_watcher_total") == 0
        assert scrape.value("raftkv_mvcc_db_total_size_in_bytes") > 0
        free = scrape.value("raftkv_disk_data_dir_free_bytes")
        assert 0 < free <= scrape.value("raftkv_disk_data_dir_capacity_bytes")
        # etcd's buckets, and no _created series beside them
        buckets = [s.labels["le"] for s in scrape.samples("raftkv_disk_wal_fsync_duration_seconds_bucket")]
        assert buckets[0] == "0.001" and buckets[-2] == "8.192" and buckets[-1] == "+Inf"
        assert not any(name.endswith("_created") for name in scrape.sample_names())
    leaders = [node_id for node_id, s in scrapes.items() if s.value("raftkv_server_is_leader") == 1]
    assert leaders == [cluster.leader()]


def test_writes_and_reads_move_the_counters_and_the_http_histogram(cluster: LocalCluster) -> None:
    url = leader_url(cluster)
    before = Scrape(url)
    route = {"method": "PUT", "route": "/v1/kv/{key}"}
    puts_before = sum(s.value for s in before.samples("raftkv_http_request_duration_seconds_count", **route))
    for i in range(SNAPSHOT_EVERY + 5):
        status, _, body = call("PUT", f"{url}/v1/kv/metrics-{i}", b"v")
        assert status == 200, body
    status, _, _ = call("GET", f"{url}/v1/kv/metrics-0")
    assert status == 200
    status, _, _ = call("GET", f"{url}/no/such/path-{random.getrandbits(32)}")
    assert status == 404
    after = Scrape(url)

    committed = "raftkv_server_proposals_committed_total"
    applied = "raftkv_server_proposals_applied_total"
    writes = SNAPSHOT_EVERY + 5
    assert after.value(committed) >= before.value(committed) + writes
    assert after.value(applied) >= before.value(applied) + writes
    assert after.value("raftkv_server_proposals_pending") == 0
    fsyncs = "raftkv_disk_wal_fsync_duration_seconds_count"
    assert after.value(fsyncs) > before.value(fsyncs)
    commits = "raftkv_disk_backend_commit_duration_seconds_count"
    assert after.value(commits) >= before.value(commits) + 1

    # labelled by route template, never by the raw path
    assert after.value("raftkv_http_request_duration_seconds_count", **route) == puts_before + writes
    assert after.value("raftkv_http_request_duration_seconds_count", method="GET", route="/v1/kv/{key}") >= 1
    assert after.value("raftkv_http_request_duration_seconds_count", method="GET", route="unmatched") >= 1
    routes = {s.labels["route"] for s in after.samples("raftkv_http_request_duration_seconds_count")}
    assert not any(r.startswith("/v1/kv/metrics") or r.startswith("/no/") for r in routes), routes
    assert "/metrics" in routes

    # SNAPSHOT_EVERY entries were applied: the node saved a snapshot (on its own task)
    deadline = time.monotonic() + 5
    while Scrape(url).value("raftkv_snap_save_total_duration_seconds_count") < 1:
        assert time.monotonic() < deadline, "no snapshot save was observed"
        time.sleep(0.05)

    # the leader times its heartbeats to each follower
    followers = {n.node_id for n in cluster.nodes} - {cluster.leader()}
    for peer in followers:
        assert after.value("raftkv_network_peer_round_trip_time_seconds_count", To=peer) > 0
        assert 0 < after.value("raftkv_network_peer_round_trip_time_seconds_sum", To=peer) < after.value(
            "raftkv_network_peer_round_trip_time_seconds_count", To=peer
        )  # well under a second each on loopback


def test_a_follower_applies_what_the_leader_committed(cluster: LocalCluster) -> None:
    url = leader_url(cluster)
    status, _, _ = call("PUT", f"{url}/v1/kv/applied-everywhere", b"v")
    assert status == 200
    target = Scrape(url).value("raftkv_server_proposals_committed_total")
    for node in cluster.nodes:
        # a serializable read on each node waits for nothing: poll until applied
        for _ in range(100):
            if Scrape(node.url).value("raftkv_server_proposals_applied_total") >= target:
                break
        else:
            pytest.fail(f"{node.node_id} never applied up to {target}")


def test_method_labels_are_bounded(cluster: LocalCluster) -> None:
    url = cluster.nodes[0].url
    # a method HTTP knows (WebDAV's) and our API does not: answered 405, labelled "other"
    status, _, _ = call("PROPFIND", f"{url}/v1/status")
    assert status == 405
    scrape = Scrape(url)
    methods = {s.labels["method"] for s in scrape.samples("raftkv_http_request_duration_seconds_count")}
    assert "PROPFIND" not in methods and "other" in methods


def test_metrics_refuses_query_parameters(cluster: LocalCluster) -> None:
    status, _, body = call("GET", cluster.nodes[0].url + "/metrics?debug=1")
    assert status == 400
    assert orjson.loads(body)["error"]["code"] == "unknown_field"


def test_metrics_speaks_openmetrics_when_asked(cluster: LocalCluster) -> None:
    status, headers, body = call(
        "GET", cluster.nodes[0].url + "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert status == 200
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")


# ---------------------------------------------------------------- hot keys over HTTP


def test_hot_keys_show_the_written_and_read_key_first(cluster: LocalCluster) -> None:
    url = cluster.nodes[1].url  # a follower or the leader: each node counts what it serves
    for i in range(12):
        assert call("PUT", f"{url}/v1/kv/hot-key", b"v")[0] == 200
    for i in range(3):
        assert call("PUT", f"{url}/v1/kv/warm-key-{i}", b"v")[0] == 200
    for i in range(7):
        assert call("GET", f"{url}/v1/kv/hot-key")[0] == 200
    assert call("GET", f"{url}/v1/kv/warm-key-0")[0] == 200
    status, _, body = call("GET", f"{url}/v1/hotkeys?limit=2")
    assert status == 200, body
    answer = orjson.loads(body)
    assert answer["node_id"] == cluster.nodes[1].node_id
    assert answer["window_seconds"] == 60
    writes, reads = answer["writes"]["top"], answer["reads"]["top"]
    assert len(writes) == 2
    assert writes[0] == {"key": "hot-key", "count": 12, "error": 0}
    assert reads[0] == {"key": "hot-key", "count": 7, "error": 0}
    assert answer["writes"]["total"] >= 15 and answer["reads"]["total"] >= 8


@pytest.mark.parametrize("query", ["limit=0", "limit=-1", "limit=x", "limit=101", "top=3", "limit=1&limit=2"])
def test_hot_keys_refuse_bad_queries(cluster: LocalCluster, query: str) -> None:
    status, _, body = call("GET", f"{cluster.nodes[0].url}/v1/hotkeys?{query}")
    assert status == 400, body
    assert "error" in orjson.loads(body)


# ---------------------------------------------------------------- the counters themselves


def test_space_saving_bounds_hold_on_a_skewed_stream() -> None:
    rng = random.Random(7)
    keys = [f"k{int(rng.paretovariate(1.1))}" for _ in range(20_000)]
    summary = SpaceSaving(capacity=40)
    for key in keys:
        summary.add(key)
    exact = collections.Counter(keys)
    counts = summary.counts()
    assert len(counts) == 40 and summary.total == len(keys)
    for key, (count, error) in counts.items():
        assert count - error <= exact[key] <= count, key
    # every key with more than N/capacity accesses is kept
    for key, n in exact.items():
        if n > len(keys) / 40:
            assert key in counts, key
    for key in exact:
        if key not in counts:
            assert exact[key] <= summary.min_count


def test_space_saving_is_exact_below_capacity_and_evicts_the_smallest() -> None:
    summary = SpaceSaving(capacity=3)
    for key in ["a", "a", "a", "b", "b", "c"]:
        summary.add(key)
    assert summary.counts() == {"a": (3, 0), "b": (2, 0), "c": (1, 0)}
    summary.add("d")  # takes c's counter: at most 2 accesses, at least 1
    assert summary.counts() == {"a": (3, 0), "b": (2, 0), "d": (2, 1)}
    assert summary.min_count == 2


def test_window_drops_accesses_older_than_its_slots() -> None:
    window = WindowedTopKeys(capacity=10, slots=3)
    for _ in range(5):
        window.add("old")
    window.rotate()
    window.add("new")
    assert [(k.key, k.count) for k in window.top(5)] == [("old", 5), ("new", 1)]
    window.rotate()
    window.rotate()  # the slot holding "old" falls out
    assert [(k.key, k.count) for k in window.top(5)] == [("new", 1)]
    window.rotate()
    assert window.top(5) == [] and window.total == 0


def test_window_counts_bound_the_truth_across_full_slots() -> None:
    rng = random.Random(11)
    window = WindowedTopKeys(capacity=8, slots=4)
    exact: collections.Counter[str] = collections.Counter()
    for slot in range(4):
        for _ in range(2_000):
            key = f"k{int(rng.paretovariate(1.0 + slot / 4))}"
            window.add(key)
            exact[key] += 1
        if slot < 3:
            window.rotate()
    top = window.top(8)
    assert top[0].key == exact.most_common(1)[0][0]
    for hot in top:
        assert hot.count - hot.error <= exact[hot.key] <= hot.count, hot


def test_hot_keys_json_shape() -> None:
    hot = HotKeys(window_seconds=30, slots=3, capacity=5)
    assert hot.rotate_interval == 10
    hot.wrote("w")
    hot.read("r")
    hot.read("r")
    assert hot.to_json(1) == {
        "window_seconds": 30,
        "reads": {"total": 2, "top": [{"key": "r", "count": 2, "error": 0}]},
        "writes": {"total": 1, "top": [{"key": "w", "count": 1, "error": 0}]},
    }


def test_each_node_has_its_own_registry() -> None:
    one, two = NodeMetrics(), NodeMetrics()
    one.observe_wal_fsync(0.002)
    one.observe_http("GET", "/v1/status", 0.001)
    assert one.registry.get_sample_value("raftkv_disk_wal_fsync_duration_seconds_count") == 1
    assert two.registry.get_sample_value("raftkv_disk_wal_fsync_duration_seconds_count") == 0
    assert two.registry.get_sample_value(
        "raftkv_http_request_duration_seconds_count", {"method": "GET", "route": "/v1/status"}
    ) is None


# ---------------------------------------------------------------- alert rules and dashboard


def promql_metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(raftkv_[a-z_]+)", expr))


def exposed_names(cluster: LocalCluster) -> set[str]:
    names: set[str] = set()
    for node in cluster.nodes:
        if node.running:
            names |= Scrape(node.url).sample_names()
    return names


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_alert_rules_cover_the_failures_and_use_exposed_metrics(cluster: LocalCluster) -> None:
    rules = alert_rules()
    exposed = exposed_names(cluster)
    referenced: set[str] = set()
    for rule in rules:
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        names = promql_metric_names(rule["expr"])
        assert names <= exposed, (rule["alert"], names - exposed)
        referenced |= names
    alerts = {rule["alert"] for rule in rules}
    assert {
        "RaftkvNoLeader",
        "RaftkvFrequentLeaderChanges",
        "RaftkvProposalsFailing",
        "RaftkvHighFsyncDurations",
        "RaftkvPeerRoundTripHigh",
        "RaftkvDiskAlmostFull",
    } <= alerts
    assert {
        "raftkv_server_has_leader",
        "raftkv_server_leader_changes_seen_total",
        "raftkv_server_proposals_failed_total",
        "raftkv_disk_wal_fsync_duration_seconds_bucket",
        "raftkv_network_peer_round_trip_time_seconds_bucket",
        "raftkv_disk_data_dir_free_bytes",
    } <= referenced


def test_dashboard_panels_query_exposed_metrics(cluster: LocalCluster) -> None:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    exposed = exposed_names(cluster)
    shown: set[str] = set()
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = promql_metric_names(target["expr"])
            assert names <= exposed, (panel["title"], names - exposed)
            shown |= names
    for variable in dashboard["templating"]["list"]:
        assert promql_metric_names(variable["query"]) <= exposed
    # every metric a node exposes has a panel (the histograms through _bucket or _count)
    families = {name for name in exposed if not name.endswith(("_sum", "_count"))}
    families = {re.sub(r"_bucket$", "", name) for name in families}
    shown_families = {re.sub(r"_(bucket|count)$", "", name) for name in shown}
    assert families - shown_families <= {"raftkv_disk_data_dir_capacity_bytes"}, families - shown_families


PROMTOOL = shutil.which("promtool")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian: apt-get install prometheus)")
def test_promtool_accepts_the_rules_and_the_config() -> None:
    assert PROMTOOL is not None
    rules = subprocess.run([PROMTOOL, "check", "rules", str(MONITORING / "alerts.yml")], capture_output=True, text=True)
    assert rules.returncode == 0, rules.stdout + rules.stderr
    config = subprocess.run(
        [PROMTOOL, "check", "config", "--syntax-only", str(MONITORING / "prometheus.yml")],
        capture_output=True,
        text=True,
    )
    assert config.returncode == 0, config.stdout + config.stderr


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian: apt-get install prometheus)")
def test_alert_rules_fire_on_the_failures_they_name() -> None:
    """promtool's rule unit tests (docs/monitoring/alerts_test.yml) against the real rules."""
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, "test", "rules", "alerts_test.yml"], cwd=MONITORING, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------- failures count (last: it breaks the cluster)


def test_failed_proposals_are_counted(cluster: LocalCluster) -> None:
    """Last in this module: it takes the quorum away."""
    url = leader_url(cluster)
    leader = cluster.leader()
    before = Scrape(url).value("raftkv_server_proposals_failed_total")
    for node in cluster.nodes:
        if node.node_id != leader:
            cluster.kill(node.node_id)
    status, _, body = call("PUT", f"{url}/v1/kv/lost?timeout=0.5", b"v")
    assert status in (503, 504), body
    after = Scrape(url)
    assert after.value("raftkv_server_proposals_failed_total") == before + 1
    assert after.value("raftkv_server_proposals_pending") == 0
