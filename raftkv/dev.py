"""`raftkv dev`: a local cluster of supervised `raftkv serve` processes."""

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path
from types import FrameType

from raftkv.local_cluster import LocalCluster

RESTART_BACKOFF_MAX = 5.0


class DevCluster:
    def __init__(
        self,
        nodes: int,
        data_dir: Path,
        http_port: int,
        peer_port: int,
        engine: str,
    ) -> None:
        self.data_dir = data_dir
        self.cluster = LocalCluster(
            data_dir,
            nodes=nodes,
            engine=engine,
            http_ports=[http_port + i for i in range(nodes)],
            peer_ports=[peer_port + i for i in range(nodes)],
        )
        self._restarts = {n.node_id: 0 for n in self.cluster.nodes}
        self._next_start = {n.node_id: 0.0 for n in self.cluster.nodes}
        self._stopping = False

    def run_forever(self, clean: bool = False) -> int:
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
            if node.running:
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
        print(f"Ctrl-C stops the cluster; its data stays in {self.data_dir}/", flush=True)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True
