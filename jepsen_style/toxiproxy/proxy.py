"""One named proxy: a listener, its open connections and its toxics.

Disabling a proxy closes the listener and every open connection, so peers
see both a cut and a refusal to reconnect: that is how the harness makes a
network partition.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace

from .connection import Connection, set_nodelay
from .errors import listen_failed, toxic_already_exists, toxic_not_found
from .proxy_config import ProxyConfig, parse_host_port
from .toxics import ToxicSpec


class TcpProxy:
    def __init__(self, config: ProxyConfig, rng: random.Random) -> None:
        self.config = config
        self.toxics: dict[str, ToxicSpec] = {}
        self._rng = rng
        self._server: asyncio.Server | None = None
        self._connections: set[Connection] = set()

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    def to_json(self) -> dict[str, object]:
        result = self.config.to_json()
        result["toxics"] = [spec.to_json() for spec in self.toxics.values()]
        return result

    async def start(self) -> None:
        """Listen (if not already). Port 0 is resolved once and then kept, so a
        re-enabled proxy comes back on the address its clients know."""
        if self._server is not None:
            return
        host, port = parse_host_port(self.config.listen, "listen")
        try:
            self._server = await asyncio.start_server(
                self._accept, host or None, port, reuse_address=True
            )
        except OSError as error:
            raise listen_failed(self.config.listen, str(error)) from error
        actual_port = self._server.sockets[0].getsockname()[1]
        listen_host = self.config.listen.rpartition(":")[0]
        self.config = replace(
            self.config, listen=f"{listen_host}:{actual_port}", enabled=True
        )

    async def stop(self) -> None:
        """Stop listening and cut every open connection."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for connection in list(self._connections):
            connection.close()
        self.config = replace(self.config, enabled=False)
        # Let the aborted transports finish closing their sockets, so a new
        # listener on the same port and the peers see a settled state.
        await asyncio.sleep(0)

    async def reconfigure(self, new: ProxyConfig) -> None:
        """Apply an update; a new listen or upstream address restarts the proxy."""
        address_changed = (new.listen, new.upstream) != (
            self.config.listen,
            self.config.upstream,
        )
        if address_changed or not new.enabled:
            await self.stop()
        self.config = replace(new, enabled=self.running)
        if new.enabled:
            await self.start()

    def add_toxic(self, spec: ToxicSpec) -> None:
        if spec.name in self.toxics:
            raise toxic_already_exists(spec.name)
        self.toxics[spec.name] = spec
        for connection in list(self._connections):
            connection.add_toxic(spec)

    def get_toxic(self, name: str) -> ToxicSpec:
        spec = self.toxics.get(name)
        if spec is None:
            raise toxic_not_found(name)
        return spec

    def update_toxic(self, spec: ToxicSpec) -> None:
        self.get_toxic(spec.name)
        self.toxics[spec.name] = spec
        for connection in list(self._connections):
            connection.update_toxic(spec)

    def remove_toxic(self, name: str) -> None:
        spec = self.get_toxic(name)
        del self.toxics[name]
        for connection in list(self._connections):
            connection.remove_toxic(spec)

    def remove_all_toxics(self) -> None:
        for name in list(self.toxics):
            self.remove_toxic(name)

    async def _accept(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if self._server is None:
            # Accepted just before the proxy was disabled: cut it like the rest.
            writer.transport.abort()
            return
        set_nodelay(writer)
        connection = Connection(
            reader, writer, random.Random(self._rng.random()), self._forget
        )
        self._connections.add(connection)
        upstream = parse_host_port(self.config.upstream, "upstream")
        await connection.run(upstream, lambda: list(self.toxics.values()))

    def _forget(self, connection: Connection) -> None:
        self._connections.discard(connection)

