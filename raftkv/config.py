"""A node's configuration, from command-line flags or environment variables."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from raftkv.kv.limits import Limits

ENGINES = ("native", "pysyncobj")
DEFAULT_ENGINE = "native"


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

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"unknown engine {self.engine!r}; choose one of {', '.join(ENGINES)}")
        if self.node_id not in self.peers:
            raise ValueError(f"--peers must include this node's own id {self.node_id!r}")
        parse_host_port(self.client_addr)
        parse_host_port(self.peer_addr)
