"""One Toxiproxy proxy per directed link between nodes, driven with the
`toxiproxy-python` client: node a reaches peer b through proxy "a_to_b", so
disabling that proxy drops exactly a's messages to b."""
from __future__ import annotations

from typing import Iterable, Sequence

from toxiproxy import Toxiproxy
from toxiproxy.proxy import Proxy

from jepsen_style.nemesis.partitions import Link, all_links
from jepsen_style.toxiproxy.launcher import ToxiproxyProcess, start_toxiproxy

LATENCY_TOXIC = "nemesis_latency"


def proxy_name(link: Link) -> str:
    return f"{link[0]}_to_{link[1]}"


class LinkProxies:
    """Start with `start()`, create proxies with `create(...)` before the
    cluster starts, pass `route` as the cluster's router, `stop()` at the end."""

    def __init__(self) -> None:
        self.server: ToxiproxyProcess | None = None
        self._client = Toxiproxy()
        self._proxies: dict[Link, Proxy] = {}
        self._cut: set[Link] = set()

    def start(self) -> None:
        self.server = start_toxiproxy()
        # toxiproxy-python keeps the API address in class attributes.
        self._client.update_api_consumer(self.server.host, self.server.port)

    def create(self, peer_addrs: dict[str, str]) -> None:
        """A proxy for every directed link, forwarding to the peer's Raft address."""
        for link in all_links(sorted(peer_addrs)):
            self._proxies[link] = self._client.create(
                upstream=peer_addrs[link[1]], name=proxy_name(link), listen="127.0.0.1:0")

    def route(self, node_id: str, peer_id: str) -> str:
        """The address `node_id` uses to reach `peer_id` (a LocalCluster router)."""
        return str(self._proxies[(node_id, peer_id)].listen)

    @property
    def links(self) -> list[Link]:
        return list(self._proxies)

    def cut(self, links: Iterable[Link]) -> None:
        for link in links:
            if link not in self._cut:
                self._proxies[link].disable()
                self._cut.add(link)

    def heal(self) -> None:
        for link in sorted(self._cut):
            self._proxies[link].enable()
        self._cut.clear()

    def add_latency(self, latency_ms: int, jitter_ms: int, links: Sequence[Link] | None = None) -> None:
        for link in links or self.links:
            self._proxies[link].add_toxic(type="latency", name=LATENCY_TOXIC, stream="upstream",
                                          attributes={"latency": latency_ms, "jitter": jitter_ms})

    def remove_latency(self) -> None:
        for proxy in self._proxies.values():
            if proxy.get_toxic(LATENCY_TOXIC) is not None:
                proxy.destroy_toxic(LATENCY_TOXIC)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    def log_text(self) -> str:
        return self.server.log_text() if self.server is not None else ""
