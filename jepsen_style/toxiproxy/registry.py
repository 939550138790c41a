"""The set of named proxies and every operation the HTTP API offers on it.

Mutations hold one lock: each is a check-then-act spanning awaits (binding a
listener), and two concurrent creates of one name must not both succeed.
"""

from __future__ import annotations

import asyncio
import random

from .errors import ApiError, proxy_already_exists, proxy_not_found
from .proxy import TcpProxy
from .proxy_config import ProxyConfig, parse_proxy_update
from .toxics import ToxicSpec, parse_new_toxic, parse_toxic_update


class ProxyRegistry:
    def __init__(self, seed: int | None = None) -> None:
        self._proxies: dict[str, TcpProxy] = {}
        self._rng = random.Random(seed)
        self._lock = asyncio.Lock()

    def all(self) -> list[TcpProxy]:
        return list(self._proxies.values())

    def get(self, name: str) -> TcpProxy:
        proxy = self._proxies.get(name)
        if proxy is None:
            raise proxy_not_found(name)
        return proxy

    async def create(self, config: ProxyConfig) -> TcpProxy:
        async with self._lock:
            if config.name in self._proxies:
                raise proxy_already_exists(config.name)
            return await self._create_unlocked(config)

    async def _create_unlocked(self, config: ProxyConfig) -> TcpProxy:
        proxy = TcpProxy(config, random.Random(self._rng.random()))
        if config.enabled:
            await proxy.start()  # raises before the proxy is registered
        self._proxies[config.name] = proxy
        return proxy

    async def update(self, name: str, body: object) -> TcpProxy:
        async with self._lock:
            proxy = self.get(name)
            await proxy.reconfigure(parse_proxy_update(proxy.config, body))
            return proxy

    async def delete(self, name: str) -> None:
        async with self._lock:
            proxy = self.get(name)
            await proxy.stop()
            del self._proxies[name]

    async def populate(
        self, configs: list[ProxyConfig]
    ) -> tuple[list[TcpProxy], ApiError | None]:
        """Create or replace each proxy; one whose listen and upstream already
        match is kept as it is, open connections included.

        Returns the proxies handled before any failure, and that failure.
        """
        done: list[TcpProxy] = []
        async with self._lock:
            for config in configs:
                try:
                    done.append(await self._populate_one(config))
                except ApiError as error:
                    return done, error
        return done, None

    async def _populate_one(self, config: ProxyConfig) -> TcpProxy:
        existing = self._proxies.get(config.name)
        if existing is not None:
            same_addresses = (existing.config.listen, existing.config.upstream) == (
                config.listen,
                config.upstream,
            )
            if same_addresses:
                if config.enabled and not existing.running:
                    await existing.start()
                elif not config.enabled and existing.running:
                    await existing.stop()
                return existing
            await existing.stop()
            del self._proxies[config.name]
        return await self._create_unlocked(config)

    async def reset(self) -> None:
        """Enable every proxy and remove every toxic."""
        async with self._lock:
            for proxy in self._proxies.values():
                proxy.remove_all_toxics()
                await proxy.start()

    async def close(self) -> None:
        async with self._lock:
            for proxy in self._proxies.values():
                await proxy.stop()
            self._proxies.clear()

    def add_toxic(self, proxy_name: str, body: object) -> ToxicSpec:
        proxy = self.get(proxy_name)
        spec = parse_new_toxic(body)
        proxy.add_toxic(spec)
        return spec

    def update_toxic(self, proxy_name: str, toxic_name: str, body: object) -> ToxicSpec:
        proxy = self.get(proxy_name)
        spec = parse_toxic_update(proxy.get_toxic(toxic_name), body)
        proxy.update_toxic(spec)
        return spec

    def remove_toxic(self, proxy_name: str, toxic_name: str) -> None:
        self.get(proxy_name).remove_toxic(toxic_name)
