"""What every harness command (`run`, `drill`) shares: one error class, one
exit status for "nothing was proven", and one cluster lifecycle (a local
cluster in a temporary directory, optional per-link proxies, node logs kept in
the output directory).

This module imports no harness-only package at load time, so a command can
check for the `harness` extra before anything starts.
"""
from __future__ import annotations

import asyncio
import importlib.util
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from raftkv.local_cluster import LocalCluster

if TYPE_CHECKING:
    from jepsen_style.nemesis.link_proxies import LinkProxies

EXIT_HARNESS_FAILURE = 2
STARTUP_TIMEOUT_S = 30.0

# Import name -> distribution of the `harness` extra (pyproject.toml).
HARNESS_PACKAGES = {"matplotlib": "matplotlib", "toxiproxy": "toxiproxy-python"}


class HarnessError(RuntimeError):
    """The harness could not do its job (the cluster would not start, a client
    did not finish, a package is missing, ...): nothing was proven, exit 2."""


def require_harness_extra(*imports: str) -> None:
    """Raise HarnessError naming the missing packages of the `harness` extra."""
    missing = []
    for name in imports or tuple(HARNESS_PACKAGES):
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a module blocked in sys.modules, or a broken one
            found = False
        if not found:
            missing.append(HARNESS_PACKAGES.get(name, name))
    if missing:
        raise HarnessError(
            f"this command needs the harness extra, missing: {', '.join(missing)}; "
            "install it with `pip install 'raftkv[harness]'` (`make install` does)"
        )


class HarnessCluster:
    """A LocalCluster for one harness command, from start to cleanup.

    `start` raises HarnessError with the reason (a node's exit and log tail);
    `stop` always stops the nodes and proxies, copies the node logs (and the
    proxy log) to `logs_dir` and deletes the cluster's data.
    """

    def __init__(self, *, nodes: int, engine: str, node_args: tuple[str, ...], logs_dir: Path,
                 link_proxies: bool = False, prefix: str = "jepsen-cluster-") -> None:
        self.proxies: LinkProxies | None = None
        if link_proxies:
            from jepsen_style.nemesis.link_proxies import LinkProxies  # the Toxiproxy client: harness extra

            self.proxies = LinkProxies()
        self.data_dir = Path(tempfile.mkdtemp(prefix=prefix))
        self.logs_dir = logs_dir
        self.cluster = LocalCluster(self.data_dir, nodes=nodes, engine=engine, extra_args=list(node_args),
                                    router=self.proxies.route if self.proxies else None)

    async def start(self, timeout: float = STARTUP_TIMEOUT_S) -> None:
        try:
            await asyncio.to_thread(self._start, timeout)
        except Exception as error:  # whatever stopped the cluster, report it whole
            raise HarnessError(f"the cluster did not start: {error}") from None

    async def stop(self) -> None:
        await asyncio.to_thread(self._stop)

    def _start(self, timeout: float) -> None:
        if self.proxies is not None:
            self.proxies.start()
            self.proxies.create({node.node_id: node.peer_addr for node in self.cluster.nodes})
        self.cluster.start()
        self.cluster.wait_ready(timeout)

    def _stop(self) -> None:
        try:
            self.cluster.stop()
        finally:
            self.logs_dir.mkdir(parents=True, exist_ok=True)
            for node in [*self.cluster.nodes, *self.cluster.retired]:
                if node.log_path.exists():
                    shutil.copyfile(node.log_path, self.logs_dir / f"{node.node_id}.log")
            if self.proxies is not None:
                self.proxies.stop()
                (self.logs_dir / "toxiproxy.log").write_text(self.proxies.log_text(), encoding="utf-8")
            shutil.rmtree(self.data_dir, ignore_errors=True)
