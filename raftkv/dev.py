"""`raftkv dev`: a local cluster of supervised `raftkv serve` processes."""

from __future__ import annotations

import shutil
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from raftkv.dev_preflight import node_wal_dir, reasons_cluster_in_use, wal_lock_held
from raftkv.local_cluster import LocalCluster

RESTART_BACKOFF_MAX = 5.0
# Exit status when the ports or data directories are already in use.
EXIT_IN_USE = 3


class DevCluster:
    def __init__(
        self,
        nodes: int,
        data_dir: Path,
        http_port: int,
        peer_port: int,
        engine: str,
        tls: bool = False,
    ) -> None:
        self.data_dir = data_dir
        self.cluster = LocalCluster(
            data_dir,
            nodes=nodes,
            engine=engine,
            http_ports=[http_port + i for i in range(nodes)],
            peer_ports=[peer_port + i for i in range(nodes)],
            die_with_owner=True,
            # Peers run mutual TLS (certificates in data_dir/certs) unless the engine cannot.
            client_tls=tls,
        )
        self._restarts = {n.node_id: 0 for n in self.cluster.nodes}
        self._next_start = {n.node_id: 0.0 for n in self.cluster.nodes}
        # Nodes not restarted any more: another process holds their data directory.
        self._given_up: set[str] = set()
        self._stopping = False

    def run_forever(self, clean: bool = False) -> int:
        # Before anything is deleted: --clean must never wipe a cluster that is running.
        in_use = reasons_cluster_in_use(self.cluster)
        if in_use:
            print(
                "raftkv dev: refusing to start, this cluster looks already running "
                "(another `raftkv dev`, or nodes left from one):\n"
                + "".join(f"  {reason}\n" for reason in in_use)
                + "Stop it first, or pick other --http-port/--peer-port/--data-dir. Nothing was deleted.",
                file=sys.stderr,
                flush=True,
            )
            return EXIT_IN_USE
        if clean and self.data_dir.exists():
            shutil.rmtree(self.data_dir)
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        self.cluster.start()
        print(
            f"raftkv dev: starting {len(self.cluster.nodes)} nodes ({self.cluster.engine} engine); "
            f"data and logs in {self.data_dir}/",
            flush=True,
        )
        announced = False
        try:
            while not self._stopping:
                self._supervise()
                if not announced and all(self.cluster.is_ready(n.node_id, 0.5) for n in self.cluster.nodes):
                    self._announce()
                    announced = True
                time.sleep(0.2)
        finally:
            self.cluster.stop()
            print("raftkv dev: stopped", flush=True)
        return 0

    def _supervise(self) -> None:
        now = time.monotonic()
        for node in self.cluster.nodes:
            if node.running or node.node_id in self._given_up:
                continue
            if node.process is not None and wal_lock_held(node_wal_dir(node.data_dir)):
                # Restarting cannot help while another process owns the data.
                print(
                    f"raftkv dev: {node.node_id} exited with code {node.process.returncode}: another process "
                    f"holds the lock on its data directory {node.data_dir}; not restarting it "
                    f"(log: {node.log_path})",
                    file=sys.stderr,
                    flush=True,
                )
                self._given_up.add(node.node_id)
                node.process = None
                continue
            if node.process is not None:
                self._restarts[node.node_id] += 1
                delay = min(RESTART_BACKOFF_MAX, 0.2 * 2 ** min(self._restarts[node.node_id], 5))
                print(
                    f"raftkv dev: {node.node_id} exited with code {node.process.returncode}; "
                    f"restarting in {delay:.1f}s (log: {node.log_path})",
                    flush=True,
                )
                node.process = None
                self._next_start[node.node_id] = now + delay
            if now >= self._next_start[node.node_id]:
                self.cluster.start_node(node.node_id)

    def _announce(self) -> None:
        nodes = self.cluster.nodes
        first, last = nodes[0].url, nodes[-1].url
        print(f"raftkv dev: cluster ready. Endpoints: {','.join(self.cluster.endpoints)}")
        print("Try:")
        print(f"  curl -X PUT --data-binary 'hello' {first}/v1/kv/greeting")
        print(f"  curl {last}/v1/kv/greeting")
        print(f"  curl '{first}/v1/kv?prefix=gr'")
        print(f"  curl {first}/v1/status")
        if self.cluster.client_tls:
            ca = self.cluster.certs_dir / "ca.pem"
            print(f"HTTPS: add --cacert {ca} to these curl commands and to raftkv commands (or export RAFTKV_CACERT={ca})")
        print(f"Ctrl-C stops the cluster; its data stays in {self.data_dir}/", flush=True)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True
