"""A node's configuration, from command-line flags or environment variables."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from raftkv.kv.limits import Limits

ENGINES = ("native", "pysyncobj")


def env_setting(name: str, default: str | None = None) -> str | None:
    """The RAFTKV_<name> environment variable: the default of a `serve` flag."""
    return os.environ.get(f"RAFTKV_{name}", default)


DEFAULT_ENGINE = "native"
DEFAULT_CLUSTER_ID = "raftkv"
# etcd's --quota-backend-bytes; the LMDB map is sized past it (kv/store.py).
DEFAULT_QUOTA_BACKEND_BYTES = 16 << 30


def parse_host_port(text: str) -> tuple[str, int]:
    """'127.0.0.1:7001' -> ('127.0.0.1', 7001); raises ValueError with a clear message."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def parse_peers(text: str) -> dict[str, str]:
    """'n1=127.0.0.1:7101,n2=127.0.0.1:7102' -> {'n1': '127.0.0.1:7101', ...}."""
    peers: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        node_id, sep, addr = item.partition("=")
        if not sep or not node_id:
            raise ValueError(f"expected ID=HOST:PORT in --peers, got {item!r}")
        parse_host_port(addr)
        if node_id in peers:
            raise ValueError(f"node id {node_id!r} appears twice in --peers")
        peers[node_id] = addr
    return peers


class InsecurePeersError(ValueError):
    """Plaintext peers on an address beyond loopback, without --insecure-peers."""


def is_loopback_host(host: str) -> bool:
    """True only for addresses nothing beyond this machine can reach ('' and 0.0.0.0 are every interface)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


@dataclass(frozen=True)
class PeerTLSFiles:
    """This node's certificate and key, and the cluster CA that signs every member's."""

    cert_file: Path
    key_file: Path
    ca_file: Path


@dataclass(frozen=True)
class HttpTLSFiles:
    """HTTPS for the client API; with ``client_ca_file`` clients must show a certificate it signed."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None


@dataclass(frozen=True)
class NodeConfig:
    node_id: str
    data_dir: Path
    client_addr: str  # HOST:PORT the HTTP API listens on
    peer_addr: str  # HOST:PORT this node listens on for Raft traffic
    # How THIS node reaches every member (itself included). With the native
    # engine each node may use a different address per peer, so a proxy can
    # sit on a single link.
    peers: dict[str, str]
    engine: str = DEFAULT_ENGINE
    limits: Limits = field(default_factory=Limits)
    default_timeout: float = 5.0
    max_timeout: float = 60.0
    # Peers say it in their hello and their certificates name it: a node of
    # another cluster is refused even if it reaches our peer port.
    cluster_id: str = DEFAULT_CLUSTER_ID
    peer_tls: PeerTLSFiles | None = None
    # Plaintext peers on an address beyond loopback, accepted knowingly.
    insecure_peers: bool = False
    http_tls: HttpTLSFiles | None = None
    # The leader proposes compacting all but the last N revisions (0: never).
    auto_compaction_retention: int = 0
    # Writes that would grow the store are refused (507 no_space) while its
    # pages in use exceed this many bytes (0: no quota); see docs/storage.md.
    quota_backend_bytes: int = DEFAULT_QUOTA_BACKEND_BYTES

    def __post_init__(self) -> None:
        if self.auto_compaction_retention < 0:
            raise ValueError(
                f"--auto-compaction-retention must be 0 (off) or a number of revisions, got {self.auto_compaction_retention}"
            )
        if self.quota_backend_bytes < 0:
            raise ValueError(f"--quota-backend-bytes must be 0 (no quota) or a number of bytes, got {self.quota_backend_bytes}")
        if self.engine not in ENGINES:
            raise ValueError(f"unknown engine {self.engine!r}; choose one of {', '.join(ENGINES)}")
        if self.node_id not in self.peers:
            raise ValueError(f"--peers must include this node's own id {self.node_id!r}")
        if not self.cluster_id:
            raise ValueError("--cluster-id must not be empty")
        parse_host_port(self.client_addr)
        peer_host, _ = parse_host_port(self.peer_addr)
        if self.peer_tls is not None:
            if self.engine == "pysyncobj":
                raise ValueError(
                    "the pysyncobj engine cannot use TLS between peers: use --engine native, "
                    "or drop the --peer-*-file flags and keep its peer port on 127.0.0.1"
                )
            if self.insecure_peers:
                raise ValueError("--insecure-peers contradicts --peer-cert-file/--peer-key-file/--peer-ca-file")
        elif not self.insecure_peers and not is_loopback_host(peer_host):
            raise InsecurePeersError(
                f"refusing plaintext peers on {self.peer_addr}: anyone who reaches it can act as a member. "
                "Give --peer-cert-file, --peer-key-file and --peer-ca-file (make them with `raftkv certs`), "
                "listen on 127.0.0.1, or pass --insecure-peers if the network is trusted"
            )
