"""One proxied TCP connection: two links, each moving bytes through toxics.

The upstream link carries client -> server bytes, the downstream link
server -> client bytes. Each link has a reader task (socket -> queue,
stamping every chunk with its arrival time so latency is added per chunk
without cutting throughput) and a writer task (queue -> toxics -> socket).
The bounded queue gives backpressure: a slow destination stops the reads.

Toxics can be added, changed and removed while a connection is open, as in
Toxiproxy; each link keeps its own per-toxic state (the toxicity roll,
bytes counted by limit_data, timers).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import struct
from dataclasses import dataclass, field
from typing import Callable, Coroutine, Iterable

from .toxics import (
    Stream,
    ToxicSpec,
    bandwidth_delay_s,
    bandwidth_piece_size,
    latency_delay_s,
    limit_data_allowance,
    slice_sizes,
    split_by_sizes,
    toxic_applies,
)

log = logging.getLogger(__name__)

READ_SIZE = 32 * 1024
QUEUE_CHUNKS = 16
UPSTREAM_CONNECT_TIMEOUT_S = 5.0

Chunk = tuple[float, bytes]  # (arrival time on the loop clock, data)


@dataclass
class LinkToxic:
    """A toxic as one link sees it."""

    spec: ToxicSpec
    applies: bool
    passed_bytes: int = 0  # limit_data
    timer: asyncio.TimerHandle | None = None  # timeout's close, reset_peer's reset

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


@dataclass
class Link:
    """One direction of a connection."""

    connection: Connection
    stream: Stream
    source: asyncio.StreamReader
    destination: asyncio.StreamWriter
    rng: random.Random
    toxics: dict[str, LinkToxic] = field(default_factory=dict)
    queue: asyncio.Queue[Chunk | None] = field(
        default_factory=lambda: asyncio.Queue(QUEUE_CHUNKS)
    )
    next_send_at: float = 0.0  # bandwidth pacing

    def attach(self, spec: ToxicSpec) -> None:
        toxic = LinkToxic(spec, toxic_applies(spec.toxicity, self.rng))
        self.toxics[spec.name] = toxic
        self._arm(toxic)

    def update(self, spec: ToxicSpec) -> None:
        old = self.toxics.get(spec.name)
        if old is None:
            self.attach(spec)
            return
        old.cancel_timer()
        applies = old.applies
        if spec.toxicity != old.spec.toxicity:
            applies = toxic_applies(spec.toxicity, self.rng)
        toxic = LinkToxic(spec, applies, passed_bytes=old.passed_bytes)
        self.toxics[spec.name] = toxic
        self._arm(toxic)

    def detach(self, name: str) -> None:
        toxic = self.toxics.pop(name, None)
        if toxic is None:
            return
        toxic.cancel_timer()
        # Toxiproxy closes a link when its timeout toxic goes away: the data it
        # dropped is lost, so the stream could not be trusted any more.
        if toxic.applies and toxic.spec.type == "timeout":
            self.connection.close()

    def _arm(self, toxic: LinkToxic) -> None:
        spec = toxic.spec
        if toxic.applies and spec.type == "timeout" and spec.attributes["timeout"] > 0:
            toxic.timer = asyncio.get_running_loop().call_later(
                spec.attributes["timeout"] / 1000.0, self.connection.close
            )

    def _trigger_reset(self, toxic: LinkToxic) -> None:
        if toxic.timer is None:
            toxic.timer = asyncio.get_running_loop().call_later(
                toxic.spec.attributes["timeout"] / 1000.0,
                self.connection.reset,
                self.destination,
            )

    def _applying(self) -> list[LinkToxic]:
        return [toxic for toxic in self.toxics.values() if toxic.applies]

    async def read_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await self.source.read(READ_SIZE)
            if not data:
                await self.queue.put(None)
                return
            await self.queue.put((loop.time(), data))

    async def write_loop(self) -> None:
        while True:
            chunk = await self.queue.get()
            if chunk is None:
                await self._finish()
                return
            await self._deliver(*chunk)

    async def _deliver(self, arrived_at: float, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        toxics = self._applying()
        if any(toxic.spec.type == "timeout" for toxic in toxics):
            return  # dropped, as Toxiproxy's timeout toxic does
        resets = [toxic for toxic in toxics if toxic.spec.type == "reset_peer"]
        if resets:
            self._trigger_reset(resets[0])
            return
        delay = sum(
            latency_delay_s(toxic.spec.attributes, self.rng)
            for toxic in toxics
            if toxic.spec.type == "latency"
        )
        if delay:
            await asyncio.sleep(max(0.0, arrived_at + delay - loop.time()))
        close_after = False
        for toxic in toxics:
            if toxic.spec.type == "limit_data":
                allowance = limit_data_allowance(
                    toxic.spec.attributes["bytes"], toxic.passed_bytes
                )
                data = data[:allowance]
                toxic.passed_bytes += len(data)
                close_after |= toxic.passed_bytes >= toxic.spec.attributes["bytes"]
        for piece, pause_s in self._pieces(data, toxics):
            await self._paced_write(piece, toxics)
            if pause_s:
                await asyncio.sleep(pause_s)
        if close_after:
            self.connection.close()

    def _pieces(
        self, data: bytes, toxics: list[LinkToxic]
    ) -> Iterable[tuple[bytes, float]]:
        slicers = [toxic for toxic in toxics if toxic.spec.type == "slicer"]
        if not slicers or not data:
            return [(data, 0.0)] if data else []
        attributes = slicers[0].spec.attributes
        sizes = slice_sizes(
            len(data), attributes["average_size"], attributes["size_variation"], self.rng
        )
        pause_s = attributes["delay"] / 1_000_000.0
        return [(piece, pause_s) for piece in split_by_sizes(data, sizes)]

    async def _paced_write(self, data: bytes, toxics: list[LinkToxic]) -> None:
        rates = [
            toxic.spec.attributes["rate"]
            for toxic in toxics
            if toxic.spec.type == "bandwidth" and toxic.spec.attributes["rate"] > 0
        ]
        if not rates:
            self.destination.write(data)
            await self.destination.drain()
            return
        rate = min(rates)
        loop = asyncio.get_running_loop()
        step = bandwidth_piece_size(rate)
        for start in range(0, len(data), step):
            piece = data[start : start + step]
            send_at = max(loop.time(), self.next_send_at)
            self.next_send_at = send_at + bandwidth_delay_s(len(piece), rate)
            await asyncio.sleep(send_at - loop.time())
            self.destination.write(piece)
            await self.destination.drain()

    async def _finish(self) -> None:
        slow_closes = [t for t in self._applying() if t.spec.type == "slow_close"]
        if slow_closes:
            await asyncio.sleep(slow_closes[0].spec.attributes["delay"] / 1000.0)
        # Pass the half-close on, so request/response protocols that end a
        # request with EOF still work through the proxy.
        if self.destination.can_write_eof():
            self.destination.write_eof()
        self.connection.link_finished()

    def cancel_timers(self) -> None:
        for toxic in self.toxics.values():
            toxic.cancel_timer()


class Connection:
    """A client connection and its upstream connection, joined by two links."""

    def __init__(
        self,
        client_reader: asyncio.StreamReader,
        client_writer: asyncio.StreamWriter,
        rng: random.Random,
        on_closed: Callable[[Connection], None],
    ) -> None:
        self._client_reader = client_reader
        self._client_writer = client_writer
        self._upstream_writer: asyncio.StreamWriter | None = None
        self._rng = rng
        self._on_closed = on_closed
        self._links: dict[Stream, Link] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._finished_links = 0
        self._closed = asyncio.Event()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def run(
        self,
        upstream: tuple[str, int],
        current_toxics: Callable[[], Iterable[ToxicSpec]],
    ) -> None:
        """Connect upstream, then proxy until either side or a toxic ends it.

        The proxy's toxics are read after the upstream connect, so toxics
        added or removed while connecting are honoured.
        """
        try:
            upstream_reader, upstream_writer = await asyncio.wait_for(
                asyncio.open_connection(*upstream), UPSTREAM_CONNECT_TIMEOUT_S
            )
        except (OSError, asyncio.TimeoutError):
            # Toxiproxy's answer to an unreachable upstream: drop the client.
            self.close()
            return
        self._upstream_writer = upstream_writer
        set_nodelay(upstream_writer)
        if self.closed:  # the proxy was disabled while we were connecting
            upstream_writer.transport.abort()
            return
        self._links = {
            "upstream": Link(
                self, "upstream", self._client_reader, upstream_writer, self._rng
            ),
            "downstream": Link(
                self, "downstream", upstream_reader, self._client_writer, self._rng
            ),
        }
        for spec in current_toxics():
            self._links[spec.stream].attach(spec)
        for link in self._links.values():
            self._tasks.append(asyncio.create_task(self._guard(link.read_loop())))
            self._tasks.append(asyncio.create_task(self._guard(link.write_loop())))
        await self._closed.wait()

    async def _guard(self, work: Coroutine[object, object, None]) -> None:
        try:
            await work
        except (OSError, asyncio.IncompleteReadError):
            self.close()  # a peer went away: the normal end of many connections
        except Exception:
            log.exception("proxied connection failed; closing it")
            self.close()

    def add_toxic(self, spec: ToxicSpec) -> None:
        if spec.stream in self._links:
            self._links[spec.stream].attach(spec)

    def update_toxic(self, spec: ToxicSpec) -> None:
        if spec.stream in self._links:
            self._links[spec.stream].update(spec)

    def remove_toxic(self, spec: ToxicSpec) -> None:
        if spec.stream in self._links:
            self._links[spec.stream].detach(spec.name)

    def link_finished(self) -> None:
        self._finished_links += 1
        if self._finished_links == len(self._links):
            self.close()

    def reset(self, writer: asyncio.StreamWriter) -> None:
        """Close with a TCP RST towards ``writer``'s peer."""
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                # Linger on with a zero timeout makes close() send RST and
                # discard unsent data instead of a graceful FIN.
                sock.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        self._closed.set()
        for link in self._links.values():
            link.cancel_timers()
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        self._client_writer.transport.abort()
        if self._upstream_writer is not None:
            self._upstream_writer.transport.abort()
        self._on_closed(self)


def set_nodelay(writer: asyncio.StreamWriter) -> None:
    # Small Raft messages must not wait for Nagle's algorithm; delays are
    # the toxics' job only.
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
