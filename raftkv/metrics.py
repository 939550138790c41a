"""A node's Prometheus metrics (``GET /metrics``), named after etcd's under ``raftkv_``.

Each node has its own ``CollectorRegistry``, never prometheus_client's global
one: tests run several engines in one process, and each must report its own.

Two kinds of figures:

* Events are recorded where they happen, by hooks the engine and the server
  call: ``observe_wal_fsync``, ``observe_backend_commit``,
  ``observe_snapshot_save``, ``observe_peer_rtt``, ``leader_changed``,
  ``proposal_failed`` and ``observe_http``. Each is one counter increment or histogram observation,
  so the hot path pays nothing else.
* State (leader, commit and applied index, pending proposals, sizes on disk)
  is read when Prometheus scrapes, by a collector over the engine's
  ``status()`` (see ``track``): nothing to keep up to date per request.

``observe_backend_commit`` takes the duration of each commit of the state
machine's store: the native driver times the LMDB write transaction of each
applied batch (etcd times its bbolt commit the same way); a state machine
without a store of its own has its applied batch timed instead
(docs/operations.md, "Monitoring").
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from raftkv.engine import EngineStatus

# No <name>_created series next to each counter and histogram: etcd has none,
# and they would double the scrape for a start time nobody graphs. (A
# process-wide switch of prometheus_client; raftkv is its only user in a node.)
disable_created_metrics()


def exponential_buckets(start: float, factor: float, count: int) -> tuple[float, ...]:
    """Go's prometheus.ExponentialBuckets, which etcd's histograms use."""
    return tuple(start * factor**i for i in range(count))


# etcd's buckets, so dashboards and alert thresholds written for etcd read the same.
WAL_FSYNC_BUCKETS = exponential_buckets(0.001, 2, 14)  # 1 ms .. 8.192 s
BACKEND_COMMIT_BUCKETS = exponential_buckets(0.001, 2, 14)  # 1 ms .. 8.192 s
SNAPSHOT_SAVE_BUCKETS = exponential_buckets(0.001, 2, 14)  # 1 ms .. 8.192 s
PEER_RTT_BUCKETS = exponential_buckets(0.0001, 2, 14)  # 0.1 ms .. 0.8192 s
# A request is a few fsyncs and a round trip at best, an election at worst.
HTTP_BUCKETS = exponential_buckets(0.0005, 2, 14)  # 0.5 ms .. 4.096 s

# Request methods get a label of their own; any other token a client sends
# is "other", so a client cannot grow the label set without bound.
HTTP_METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "DELETE", "PATCH", "OPTIONS"})
UNMATCHED_ROUTE = "unmatched"

# How the collector learns a node's state at scrape time.
StatusSource = Callable[[], EngineStatus]
CountSource = Callable[[], int]


class NodeMetrics:
    """The metrics of one node, in a registry of its own."""

    def __init__(self, data_dir: Path | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.data_dir = data_dir
        registry = self.registry
        self.leader_changes = Counter(
            "raftkv_server_leader_changes_seen",
            "The number of leader changes seen (counts the first leader too).",
            registry=registry,
        )
        self.proposals_failed = Counter(
            "raftkv_server_proposals_failed",
            "Writes proposed on this node that failed: no leader, node stopped, or outcome unknown "
            "(timeouts).",
            registry=registry,
        )
        self.wal_fsync = Histogram(
            "raftkv_disk_wal_fsync_duration_seconds",
            "The latency of WAL syncs (write + fsync, or one direct block write) called by the Raft driver.",
            buckets=WAL_FSYNC_BUCKETS,
            registry=registry,
        )
        self.backend_commit = Histogram(
            "raftkv_disk_backend_commit_duration_seconds",
            "The latency of the state machine store's commits (one per applied batch of entries).",
            buckets=BACKEND_COMMIT_BUCKETS,
            registry=registry,
        )
        self.snapshot_save = Histogram(
            "raftkv_snap_save_total_duration_seconds",
            "The time to write a Raft snapshot to the snapshot store (ours, or one received from the leader).",
            buckets=SNAPSHOT_SAVE_BUCKETS,
            registry=registry,
        )
        self.peer_rtt = Histogram(
            "raftkv_network_peer_round_trip_time_seconds",
            "Round trip of the leader's heartbeats to each follower (send to answer), observed on the leader.",
            ["To"],
            buckets=PEER_RTT_BUCKETS,
            registry=registry,
        )
        self.http_duration = Histogram(
            "raftkv_http_request_duration_seconds",
            "Time to answer an HTTP request, by method and route template.",
            ["method", "route"],
            buckets=HTTP_BUCKETS,
            registry=registry,
        )
        # Label lookups cost a lock and a tuple each; the children are cached
        # here by their label values (bounded: methods x routes, peers).
        self._http_children: dict[tuple[str, str], Histogram] = {}
        self._rtt_children: dict[str, Histogram] = {}

    # ------------------------------------------------------------- events

    def observe_wal_fsync(self, seconds: float) -> None:
        self.wal_fsync.observe(seconds)

    def observe_backend_commit(self, seconds: float) -> None:
        """One commit of the state machine's backend took ``seconds``."""
        self.backend_commit.observe(seconds)

    def observe_snapshot_save(self, seconds: float) -> None:
        self.snapshot_save.observe(seconds)

    def observe_peer_rtt(self, peer: str, seconds: float) -> None:
        child = self._rtt_children.get(peer)
        if child is None:
            child = self._rtt_children[peer] = self.peer_rtt.labels(peer)
        child.observe(seconds)

    def leader_changed(self) -> None:
        self.leader_changes.inc()

    def proposal_failed(self) -> None:
        self.proposals_failed.inc()

    def observe_http(self, method: str, route: str, seconds: float) -> None:
        """``route`` must come from a bounded set (route templates, UNMATCHED_ROUTE)."""
        key = (method, route)
        child = self._http_children.get(key)
        if child is None:
            label = method if method in HTTP_METHODS else "other"
            child = self._http_children[key] = self.http_duration.labels(label, route)
        child.observe(seconds)

    # -------------------------------------------------------------- state

    def track(self, status: StatusSource, pending: CountSource, watchers: CountSource | None = None) -> None:
        """Report the node's state at each scrape: leadership and indexes from
        ``status``, proposals in flight from ``pending``, watchers from
        ``watchers`` (0 while nothing watches), sizes from the data dir."""
        self.registry.register(_NodeStateCollector(status, pending, watchers, self.data_dir))


class _NodeStateCollector(Collector):
    """Gauges computed from the node's state when Prometheus scrapes."""

    def __init__(
        self,
        status: StatusSource,
        pending: CountSource,
        watchers: CountSource | None,
        data_dir: Path | None,
    ) -> None:
        self._status = status
        self._pending = pending
        self._watchers = watchers
        self._data_dir = data_dir

    def describe(self) -> list[Metric]:
        # Names only, so the registry can refuse a duplicate without calling
        # status() at registration.
        return list(self._families(None))

    def collect(self) -> Iterator[Metric]:
        yield from self._families(self._status())

    def _families(self, status: EngineStatus | None) -> Iterator[Metric]:
        def gauge(name: str, doc: str, value: float | None) -> GaugeMetricFamily:
            family = GaugeMetricFamily(name, doc)
            if value is not None:
                family.add_metric([], value)
            return family

        scraping = status is not None
        leader = status.leader_id if status is not None else None
        yield gauge(
            "raftkv_server_has_leader",
            "Whether this node knows a leader (1) or not (0).",
            (1 if leader is not None else 0) if scraping else None,
        )
        yield gauge(
            "raftkv_server_is_leader",
            "Whether this node is the leader (1) or not (0).",
            (1 if status.role == "leader" else 0) if status is not None else None,
        )
        # Gauges, as in etcd: they are the commit and applied indexes, which a
        # snapshot install can move by more than one at a time.
        yield gauge(
            "raftkv_server_proposals_committed_total",
            "The index of the last committed Raft entry known to this node.",
            status.commit_index if status is not None else None,
        )
        yield gauge(
            "raftkv_server_proposals_applied_total",
            "The index of the last Raft entry this node applied to its state machine.",
            status.applied_index if status is not None else None,
        )
        yield gauge(
            "raftkv_server_proposals_pending",
            "Writes proposed on this node whose answer has not come back yet.",
            self._pending() if scraping else None,
        )
        watchers = self._watchers
        yield gauge(
            "raftkv_mvcc_watcher_total",
            "Watchers open on this node (always 0: raftkv has no watches yet).",
            (watchers() if watchers is not None else 0) if scraping else None,
        )
        data_dir = self._data_dir
        on_disk = scraping and data_dir is not None and data_dir.is_dir()
        yield gauge(
            "raftkv_mvcc_db_total_size_in_bytes",
            "Bytes of the node's state on disk: every file under its data dir (WAL, snapshots, the LMDB store).",
            _tree_bytes(data_dir) if on_disk and data_dir is not None else None,
        )
        usage = shutil.disk_usage(data_dir) if on_disk and data_dir is not None else None
        yield gauge(
            "raftkv_disk_data_dir_free_bytes",
            "Bytes free for unprivileged use on the filesystem holding the data dir.",
            usage.free if usage is not None else None,
        )
        yield gauge(
            "raftkv_disk_data_dir_capacity_bytes",
            "Size in bytes of the filesystem holding the data dir.",
            usage.total if usage is not None else None,
        )


def _tree_bytes(root: Path) -> int:
    """Bytes of the regular files under ``root``; files deleted meanwhile (WAL compaction) count 0."""
    total = 0
    for directory, _dirs, files in os.walk(root):
        for name in files:
            try:
                total += os.stat(os.path.join(directory, name), follow_symlinks=False).st_size
            except FileNotFoundError:
                pass
    return total
