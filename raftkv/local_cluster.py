"""Real `raftkv serve` processes on 127.0.0.1, managed from Python.

Used by `raftkv dev`, by the tests and by jepsen_style: one place that knows
how to start, kill, pause and restart nodes and how to find the leader.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import orjson

from raftkv.config import DEFAULT_ENGINE

# Given (node id, peer id) -> the address the node uses to reach that peer.
PeerRouter = Callable[[str, str], str]


_EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST_PICKED_PORT = 10000


def _first_ephemeral_port() -> int:
    """The lowest port the kernel gives outgoing connections (Linux; the
    usual default elsewhere)."""
    try:
        return int(_EPHEMERAL_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_ports(count: int) -> list[int]:
    """Ports free right now, all different.

    Picked below the kernel's ephemeral range where there is room: a port
    from that range (what binding port 0 gives) can be taken as the local
    port of some outgoing connection between the pick and the node's bind,
    or while a node restarts on it, and the node then fails with "address
    already in use"."""
    top = _first_ephemeral_port()
    if top - _LOWEST_PICKED_PORT >= 1000:
        rng = random.Random()
        picked: list[int] = []
        for _ in range(50 * count):
            port = rng.randrange(_LOWEST_PICKED_PORT, top)
            if port not in picked and port_is_free(port):
                picked.append(port)
                if len(picked) == count:
                    return picked
    return _kernel_picked_ports(count)


def _kernel_picked_ports(count: int) -> list[int]:
    """Ports the OS considers free right now (bound all at once so they differ)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def free_port_run(count: int, attempts: int = 200) -> int:
    """The first of `count` consecutive ports that are free right now (for `raftkv dev --http-port`)."""
    for _ in range(attempts):
        first = free_ports(1)[0]
        if first + count <= 65536 and all(port_is_free(first + i) for i in range(count)):
            return first
    raise RuntimeError(f"found no {count} consecutive free ports on 127.0.0.1")


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True if a server could listen on host:port now (a socket in TIME_WAIT does not count as taken)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _die_with_parent_hook() -> Callable[[], None] | None:
    """A preexec_fn that makes the kernel SIGKILL the child when its parent dies (Linux only).

    prctl is looked up before the fork so the child only makes one plain call.
    """
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()
    pr_set_pdeathsig = 1

    def hook() -> None:
        prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died between fork and prctl
            os._exit(1)

    return hook


@dataclass
class LocalNode:
    node_id: str
    http_addr: str
    peer_addr: str
    data_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    scheme: str = "http"
    bind_retries: int = 0  # restarts after its port was briefly taken (wait_ready)
    # A node added to a running cluster starts with --join these URLs, not --peers.
    join_urls: list[str] | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.http_addr}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class LocalCluster:
    def __init__(
        self,
        base_dir: Path,
        nodes: int = 3,
        engine: str = DEFAULT_ENGINE,
        http_ports: list[int] | None = None,
        peer_ports: list[int] | None = None,
        extra_args: list[str] | None = None,
        router: PeerRouter | None = None,
        die_with_owner: bool = False,
        peer_tls: bool | None = None,
        client_tls: bool = False,
    ) -> None:
        """`peer_tls`: the nodes talk mutual TLS with certificates made in
        base_dir/certs (default: on, except for the pysyncobj engine, which
        cannot); False runs plaintext peers. `client_tls`: the HTTP API is
        HTTPS with the same certificates (clients trust base_dir/certs/ca.pem).

        `die_with_owner`: on Linux the nodes get SIGKILL when the thread that
        started them exits (PR_SET_PDEATHSIG), so even a kill -9 of the owner
        leaves no orphans. The kernel ties this to the starting *thread*, so only
        an owner that starts nodes from its main thread (raftkv dev) may set it.
        """
        http_ports = http_ports or free_ports(nodes)
        peer_ports = peer_ports or free_ports(nodes)
        self.base_dir = base_dir
        self.engine = engine
        self.extra_args = extra_args or []
        self.nodes = [
            LocalNode(
                node_id=f"n{i + 1}",
                http_addr=f"127.0.0.1:{http_ports[i]}",
                peer_addr=f"127.0.0.1:{peer_ports[i]}",
                data_dir=base_dir / f"n{i + 1}",
                log_path=base_dir / f"n{i + 1}.log",
            )
            for i in range(nodes)
        ]
        self.founding = list(self.nodes)  # the --peers of every founding node, for good
        self.router = router
        self.die_with_owner = die_with_owner
        self.retired: list[LocalNode] = []  # nodes forget_node dropped (removed members)
        if peer_tls is None:
            peer_tls = engine != "pysyncobj"
        elif peer_tls and engine == "pysyncobj":
            raise ValueError("the pysyncobj engine cannot run peers over TLS")
        self.peer_tls = peer_tls
        self.client_tls = client_tls
        self.certs_dir = base_dir / "certs"
        self.ssl_context: ssl.SSLContext | None = None  # how our own HTTP calls trust the nodes
        if client_tls:
            for node in self.nodes:
                node.scheme = "https"

    # -- processes ---------------------------------------------------------

    def node(self, node_id: str) -> LocalNode:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise KeyError(node_id)

    @property
    def endpoints(self) -> list[str]:
        return [n.url for n in self.nodes]

    def peers_arg(self, node: LocalNode) -> str:
        def addr(peer: LocalNode) -> str:
            if self.router is None or peer is node:
                return peer.peer_addr
            return self.router(node.node_id, peer.node_id)

        # The founding members only, removed ones included: --peers is the
        # configuration a founding node replays its log on, so it must not
        # change when members are added or removed (docs/operations.md).
        return ",".join(f"{p.node_id}={addr(p)}" for p in self.founding)

    def command(self, node: LocalNode) -> list[str]:
        members = ["--join", ",".join(node.join_urls)] if node.join_urls else ["--peers", self.peers_arg(node)]
        return [
            sys.executable, "-m", "raftkv", "serve",
            "--id", node.node_id,
            "--data-dir", str(node.data_dir),
            "--listen", node.http_addr,
            "--peer-listen", node.peer_addr,
            *members,
            "--engine", self.engine,
            *self._tls_args(node),
            *self.extra_args,
        ]

    def _tls_args(self, node: LocalNode) -> list[str]:
        from raftkv.certs import CA_CERT_FILE, node_files

        files = node_files(self.certs_dir, node.node_id)
        ca = str(self.certs_dir / CA_CERT_FILE)
        args: list[str] = []
        if self.peer_tls:
            args += ["--peer-cert-file", str(files.cert), "--peer-key-file", str(files.key), "--peer-ca-file", ca]
        if self.client_tls:
            args += ["--cert-file", str(files.cert), "--key-file", str(files.key)]
        return args

    def make_certs(self) -> None:
        """A CA and one certificate per node in base_dir/certs, kept across restarts of the cluster."""
        if not (self.peer_tls or self.client_tls):
            return
        from raftkv.certs import CA_CERT_FILE, make_ca, make_node, node_files

        ca = self.certs_dir / CA_CERT_FILE
        if not ca.exists():
            make_ca(self.certs_dir)
        for node in self.nodes:
            if not node_files(self.certs_dir, node.node_id).cert.exists():
                make_node(self.certs_dir, node.node_id)
        if self.client_tls and self.ssl_context is None:
            self.ssl_context = ssl.create_default_context(cafile=ca)

    def start_node(self, node_id: str) -> None:
        node = self.node(node_id)
        if node.running:
            return
        node.data_dir.mkdir(parents=True, exist_ok=True)
        self.make_certs()
        preexec = None
        if self.die_with_owner:
            if threading.current_thread() is not threading.main_thread():
                raise RuntimeError("die_with_owner nodes must be started from the main thread")
            preexec = _die_with_parent_hook()
        with open(node.log_path, "ab") as log:
            # A session of its own: a terminal's Ctrl-C reaches the owner, which
            # stops the nodes in order, not every process at once.
            node.process = subprocess.Popen(
                self.command(node), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=preexec,
            )

    def start(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        # `raftkv serve --join` run in a dev cluster's directory reads it (raftkv/join.py).
        (self.base_dir / "endpoints").write_text(",".join(self.endpoints) + "\n")
        for node in self.nodes:
            self.start_node(node.node_id)

    def add_node(
        self, node_id: str | None = None, join_via: list[str] | None = None, http_addr: str | None = None
    ) -> LocalNode:
        """A new node (free ports, an empty data dir) that joins the running
        cluster as a learner through ``join_via`` (default: every current
        node's URL); started at once. Promote it with POST /v1/members/{id}/promote.
        ``http_addr``: its client address (e.g. a replaced node's, so clients
        that know that URL keep working)."""
        taken = {n.node_id for n in self.nodes}
        if node_id is None:
            node_id = next(f"n{i}" for i in range(1, len(taken) + 2) if f"n{i}" not in taken)
        elif node_id in taken:
            raise ValueError(f"node {node_id!r} already exists")
        http_port, peer_port = free_ports(2)
        node = LocalNode(
            node_id=node_id,
            http_addr=http_addr or f"127.0.0.1:{http_port}",
            peer_addr=f"127.0.0.1:{peer_port}",
            data_dir=self.base_dir / node_id,
            log_path=self.base_dir / f"{node_id}.log",
            scheme="https" if self.client_tls else "http",
            join_urls=join_via if join_via is not None else self.endpoints,
        )
        self.nodes.append(node)
        self.start_node(node_id)
        return node

    def forget_node(self, node_id: str) -> None:
        """Stop a node (one removed from the cluster) and drop it from this
        LocalCluster; its data dir and log stay."""
        self.terminate(node_id)
        self.retired += [n for n in self.nodes if n.node_id == node_id]
        self.nodes = [n for n in self.nodes if n.node_id != node_id]

    def kill(self, node_id: str) -> None:
        """kill -9: no shutdown code runs, unsynced state is lost."""
        node = self.node(node_id)
        if node.process is not None:
            if node.process.poll() is None:
                node.process.send_signal(signal.SIGCONT)
                node.process.kill()
            node.process.wait()
            node.process = None

    def terminate(self, node_id: str, timeout: float = 10.0) -> None:
        node = self.node(node_id)
        if node.process is None:
            return
        if node.process.poll() is None:
            node.process.send_signal(signal.SIGCONT)
            node.process.terminate()
            try:
                node.process.wait(timeout)
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait()
        node.process = None

    def restart(self, node_id: str) -> None:
        self.terminate(node_id)
        self.start_node(node_id)

    def pause(self, node_id: str) -> None:
        process = self.node(node_id).process
        if process is not None:
            os.kill(process.pid, signal.SIGSTOP)

    def resume(self, node_id: str) -> None:
        process = self.node(node_id).process
        if process is not None:
            os.kill(process.pid, signal.SIGCONT)

    def stop(self) -> None:
        for node in self.nodes:
            if node.running:
                assert node.process is not None
                node.process.send_signal(signal.SIGCONT)
                node.process.terminate()
        for node in self.nodes:
            self.terminate(node.node_id)

    def __enter__(self) -> "LocalCluster":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- observing ---------------------------------------------------------

    def status(self, node_id: str, timeout: float = 1.0) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(
                f"{self.node(node_id).url}/v1/status", timeout=timeout, context=self.ssl_context
            ) as r:
                return orjson.loads(r.read())
        except (OSError, ValueError):
            return None

    def is_ready(self, node_id: str, timeout: float = 1.0) -> bool:
        try:
            with urllib.request.urlopen(
                f"{self.node(node_id).url}/readyz", timeout=timeout, context=self.ssl_context
            ) as r:
                return r.status == 200
        except (OSError, urllib.error.HTTPError):
            return False

    def leader(self, among: list[str] | None = None) -> str | None:
        """The leader that a majority of the running nodes asked agree on."""
        ids = among or [n.node_id for n in self.nodes if n.running]
        for node_id in ids:
            status = self.status(node_id, timeout=0.5)
            if status and status["role"] == "leader":
                return node_id
        return None

    def wait_ready(self, timeout: float = 30.0, nodes: list[str] | None = None) -> str:
        """Wait until the given (default: running) nodes are ready; returns the leader id."""
        deadline = time.monotonic() + timeout
        ids = nodes or [n.node_id for n in self.nodes if n.running]
        while time.monotonic() < deadline:
            for node_id in ids:
                node = self.node(node_id)
                if node.process is not None and node.process.poll() is not None:
                    if "address already in use" in tail(node.log_path) and node.bind_retries < 3:
                        # Its fixed port was taken meanwhile as some client's
                        # ephemeral source port (after a kill, say): that
                        # passes within moments, so start it again.
                        node.bind_retries += 1
                        time.sleep(0.5)
                        self.start_node(node_id)
                        continue
                    raise RuntimeError(
                        f"node {node_id} exited with code {node.process.returncode}; "
                        f"log: {node.log_path}\n{tail(node.log_path)}"
                    )
            if all(self.is_ready(i, 0.5) for i in ids):
                leader = self.leader(ids)
                if leader is not None:
                    return leader
            time.sleep(0.05)
        logs = "\n".join(f"--- {i}\n{tail(self.node(i).log_path)}" for i in ids)
        raise TimeoutError(f"cluster not ready within {timeout:g}s\n{logs}")


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
