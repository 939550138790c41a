"""Node-to-node message transport over TCP (asyncio streams).

Each node sends on its own outbound connection per peer and receives on the
connections peers open to it, so a proxy can sit on any single direction of
any link. Payloads are opaque bytes; Raft tolerates loss, duplication and
reordering, so this layer never blocks or raises for an unreachable peer: it
queues (bounded, dropping the oldest) and reconnects in the background.

With ``tls`` (a PeerTLS) every connection is mutual TLS with the cluster CA,
and a peer is who its certificate says (URI SANs, see raftkv/tls.py), not
what its address suggests: the dialler checks the listener's certificate
names the peer it meant to reach, the listener checks the hello's node id
is the one in the dialler's certificate.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from raftkv.tls import CertIdentity, PeerTLS, identity_of_peer, refusal
from raftkv.transport.errors import PeerProtocolError
from raftkv.transport.framing import (
    DEFAULT_MAX_FRAME_BYTES,
    MAX_HELLO_BYTES,
    FrameDecoder,
    FrameTooLargeError,
    HandshakeError,
    decode_hello,
    decode_reject,
    encode_frame,
    encode_frames,
    encode_hello,
    encode_reject,
)

log = logging.getLogger(__name__)

Address = tuple[str, int]
MessageHandler = Callable[[str, bytes], None]

READ_CHUNK_BYTES = 256 << 10
# A reject frame must fit the peer's hello-sized reader (MAX_HELLO_BYTES).
_MAX_REJECT_REASON_CHARS = 512
# A connection that stayed up this long counts as healthy: when it drops, the
# peer probably restarted, so reconnect at once instead of continuing to back off.
STABLE_CONNECTION_SECONDS = 1.0
# Refused inbound connections logged at ERROR, by reason; repeats (a peer
# retrying with backoff) go to DEBUG. Bounded, so a flood cannot grow it.
_MAX_REMEMBERED_REFUSALS = 256


class ReconnectBackoff:
    """Delays between connection attempts: none after a reset, then doubling with jitter.

    The jitter (a delay drawn from [d/2, d]) keeps the nodes of a cluster
    from reconnecting in lockstep after a shared failure.
    """

    def __init__(self, initial: float, cap: float, rng: random.Random) -> None:
        self.initial = initial
        self.cap = cap
        self._rng = rng
        self._failures = 0

    def reset(self) -> None:
        self._failures = 0

    def next_delay(self) -> float:
        failures = self._failures
        self._failures += 1
        if failures == 0:
            return 0.0
        ceiling = min(self.cap, self.initial * 2 ** (failures - 1))
        return self._rng.uniform(ceiling / 2, ceiling)


@dataclass
class _PeerLink:
    """Our outbound side of the link to one peer."""

    peer_id: str
    addr: Address
    backoff: ReconnectBackoff
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    queue: collections.deque[bytes] = field(default_factory=collections.deque)
    queued_bytes: int = 0
    sent: int = 0
    dropped: int = 0
    connects: int = 0
    last_error: str | None = None
    writer: asyncio.StreamWriter | None = None
    connected_at: float = 0.0
    task: asyncio.Task[None] | None = None
    monitor: asyncio.Task[None] | None = None
    retired: bool = False  # removed or stopped: must not reconnect
    wrote_directly: bool = False  # send() wrote a frame itself in this loop iteration


class TcpTransport:
    def __init__(
        self,
        node_id: str,
        listen_addr: Address,
        peer_addrs: dict[str, Address],
        on_message: MessageHandler,
        *,
        cluster_id: str = "raftkv",
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        max_queue_frames: int = 4096,
        max_queue_bytes: int = 64 << 20,
        backoff_initial: float = 0.02,
        backoff_max: float = 0.5,
        connect_timeout: float = 1.0,
        hello_timeout: float = 5.0,
        rng: random.Random | None = None,
        tls: PeerTLS | None = None,
    ) -> None:
        self.node_id = node_id
        self.listen_addr = listen_addr
        self.cluster_id = cluster_id
        self.on_message = on_message
        self.max_frame_bytes = max_frame_bytes
        self.max_queue_frames = max_queue_frames
        self.max_queue_bytes = max_queue_bytes
        self.connect_timeout = connect_timeout
        self.hello_timeout = hello_timeout
        self.tls = tls
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._rng = rng or random.Random()
        self._hello_frame = encode_frame(encode_hello(node_id, cluster_id))
        self._links: dict[str, _PeerLink] = {}
        self._server: asyncio.Server | None = None
        self._inbound: set[asyncio.Task[Any]] = set()
        self._retired: set[asyncio.Task[Any]] = set()
        self._started = False
        self._stopping = False
        self.received_from: collections.Counter[str] = collections.Counter()
        self.unknown_peer_drops = 0
        self.rejected_inbound = 0
        self._refusals_logged: set[str] = set()
        for peer_id, addr in peer_addrs.items():
            self._add_link(peer_id, addr)

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._started:
            raise RuntimeError("transport already started")
        self._started = True
        tls = self.tls
        # A failed TLS handshake (plaintext, unknown CA, no client certificate)
        # never reaches _serve_inbound: asyncio closes it silently, and the
        # dialling side is the one that logs it.
        self._server = await asyncio.start_server(
            self._serve_inbound,
            self.listen_addr[0],
            self.listen_addr[1],
            ssl=tls.server if tls is not None else None,
            ssl_handshake_timeout=self.hello_timeout if tls is not None else None,
        )
        # With port 0 the OS picked one; peers need the real address.
        self.listen_addr = self._server.sockets[0].getsockname()[:2]
        for link in self._links.values():
            self._start_link(link)

    async def stop(self) -> None:
        """Close the listener and every connection; no task is left behind."""
        if self._stopping:
            return
        self._stopping = True
        if self._server is not None:
            self._server.close()
        for link in self._links.values():
            self._retire(link)
        while self._inbound or self._retired:
            pending = self._inbound | self._retired
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            self._inbound -= pending
            self._retired -= pending
            # A connection accepted just before the listener closed starts its
            # handler on a later loop iteration; let it appear and be cancelled.
            await asyncio.sleep(0)
        if self._server is not None:
            await self._server.wait_closed()

    # ------------------------------------------------------------- sending

    def send(self, peer_id: str, payload: bytes) -> None:
        """Send or queue ``payload`` for ``peer_id``; never blocks, never raises for a down peer.

        The first frame of a loop iteration to a connected, idle link (nothing
        queued, nothing in the socket's buffer) is written at once: a hand-off
        to the link's task would cost every replication hop a loop iteration
        (measured: 1-connection writes ~10% slower). Later frames join the
        queue, which the link's task writes out in one batch, so a burst
        costs two writes, not one per frame.
        """
        link = self._links.get(peer_id)
        if link is None or self._stopping:
            self.unknown_peer_drops += link is None
            return
        if not isinstance(payload, bytes):
            raise TypeError(f"payload must be bytes, got {type(payload).__name__}")
        size = len(payload)
        if size > self.max_frame_bytes:
            raise ValueError(f"message of {size} bytes exceeds the frame limit of {self.max_frame_bytes}")
        queue = link.queue
        if not queue and not link.wrote_directly:
            writer = link.writer
            if writer is not None and writer.transport.get_write_buffer_size() == 0:
                link.wrote_directly = True
                asyncio.get_running_loop().call_soon(_end_direct_write, link)
                try:
                    writer.write(encode_frame(payload))
                except (ConnectionError, OSError, RuntimeError) as exc:
                    link.dropped += 1
                    self._drop_connection(link, f"write failed: {exc!r}")
                else:
                    link.sent += 1
                return
        queue.append(payload)
        link.queued_bytes += size
        while len(queue) > self.max_queue_frames or (link.queued_bytes > self.max_queue_bytes and len(queue) > 1):
            link.queued_bytes -= len(queue.popleft())
            link.dropped += 1
        link.wake.set()

    def set_peer_addr(self, peer_id: str, addr: Address) -> None:
        """Add a peer, or point an existing one at a new address (reconnecting)."""
        link = self._links.get(peer_id)
        if link is None:
            link = self._add_link(peer_id, addr)
            if self._started and not self._stopping:
                self._start_link(link)
            return
        if link.addr != addr:
            link.addr = addr
            link.backoff.reset()
            if link.writer is not None:
                self._drop_connection(link, f"address changed to {addr[0]}:{addr[1]}")

    def remove_peer(self, peer_id: str) -> None:
        link = self._links.pop(peer_id, None)
        if link is not None:
            self._retire(link)

    def stats(self) -> dict[str, dict[str, Any]]:
        return {
            peer_id: {
                "addr": f"{link.addr[0]}:{link.addr[1]}",
                "connected": link.writer is not None,
                "queued": len(link.queue),
                "queued_bytes": link.queued_bytes,
                "sent": link.sent,
                "dropped": link.dropped,
                "connects": link.connects,
                "received": self.received_from[peer_id],
                "last_error": link.last_error,
            }
            for peer_id, link in self._links.items()
        }

    # ------------------------------------------------------ outbound links

    def _add_link(self, peer_id: str, addr: Address) -> _PeerLink:
        if peer_id == self.node_id:
            raise ValueError(f"node {peer_id!r} cannot be its own peer")
        link = _PeerLink(peer_id, addr, ReconnectBackoff(self._backoff_initial, self._backoff_max, self._rng))
        self._links[peer_id] = link
        return link

    def _start_link(self, link: _PeerLink) -> None:
        link.task = asyncio.create_task(self._run_link(link), name=f"transport {self.node_id}->{link.peer_id}")

    def _retire(self, link: _PeerLink) -> None:
        link.retired = True
        for task in (link.task, link.monitor):
            if task is not None and not task.done():
                task.cancel()
                self._retired.add(task)
                task.add_done_callback(self._retired.discard)
        if link.writer is not None:
            link.writer.transport.abort()
            link.writer = None
        link.queue.clear()
        link.queued_bytes = 0

    async def _run_link(self, link: _PeerLink) -> None:
        while True:
            try:
                await self._run_link_once(link)
            except Exception as exc:
                # A bug here must not silently end all traffic to this peer.
                log.exception("%s -> %s: link task failed; restarting it", self.node_id, link.peer_id)
                self._drop_connection(link, f"internal error: {exc!r}")
                await asyncio.sleep(self._backoff_max)

    async def _run_link_once(self, link: _PeerLink) -> None:
        while True:
            writer = link.writer
            if writer is None:
                delay = link.backoff.next_delay()
                if delay:
                    await asyncio.sleep(delay)
                await self._connect(link)
                continue
            if not link.queue:
                link.wake.clear()
                await link.wake.wait()
                continue
            count = len(link.queue)
            data = encode_frames(link.queue)
            link.queue.clear()
            link.queued_bytes = 0
            try:
                writer.write(data)
                await writer.drain()
            except (ConnectionError, OSError, RuntimeError) as exc:
                # RuntimeError: the stream was aborted under us (connection lost).
                link.dropped += count
                if link.writer is writer:
                    self._drop_connection(link, f"write failed: {exc!r}")
                continue
            if link.writer is writer:
                link.sent += count
            else:
                link.dropped += count  # the connection died while draining

    async def _connect(self, link: _PeerLink) -> None:
        host, port = link.addr
        try:
            # Not wait_for: in 3.11 it can swallow a cancellation that races
            # with the connection completing, and stop() would wait forever.
            async with asyncio.timeout(self.connect_timeout):
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=self.tls.client if self.tls is not None else None
                )
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            self._note_error(link, f"connect to {host}:{port} failed: {exc!r}")
            return
        if link.retired:
            writer.transport.abort()
            return
        if self.tls is not None:
            # Whatever address we dialled (a proxy, say), the certificate must name the peer we meant.
            why = refusal(_peer_identity(writer), link.peer_id, self.cluster_id)
            if why is not None:
                writer.transport.abort()
                self._note_error(link, f"refusing {host}:{port} as {link.peer_id}: {why}")
                return
        _set_nodelay(writer)
        writer.write(self._hello_frame)
        link.writer = writer
        link.connects += 1
        link.connected_at = asyncio.get_running_loop().time()
        log.info("%s: connected to %s at %s:%d", self.node_id, link.peer_id, host, port)
        link.monitor = asyncio.create_task(
            self._watch_outbound(link, reader, writer), name=f"transport {self.node_id}->{link.peer_id} watch"
        )

    async def _watch_outbound(self, link: _PeerLink, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Notice a dead connection without waiting for the next write; read a rejection."""
        decoder = FrameDecoder(MAX_HELLO_BYTES)
        reason = "closed by peer"
        try:
            while True:
                data = await reader.read(MAX_HELLO_BYTES)
                if not data:
                    break
                frame = decoder.feed(data)
                if frame:
                    reason = f"peer rejected the connection: {decode_reject(frame[0])}"
                    log.error("%s -> %s: %s", self.node_id, link.peer_id, reason)
                    break
        except (ConnectionError, OSError) as exc:
            reason = f"connection error: {exc!r}"
        except (FrameTooLargeError, HandshakeError) as exc:
            reason = f"peer sent garbage on our outbound connection: {exc}"
        if link.writer is writer:
            self._drop_connection(link, reason)

    def _drop_connection(self, link: _PeerLink, reason: str) -> None:
        writer = link.writer
        if writer is None:
            return
        link.writer = None
        # abort, not close: close would wait to flush to a peer that may never read.
        writer.transport.abort()
        monitor = link.monitor
        if monitor is not None and monitor is not asyncio.current_task():
            monitor.cancel()
        link.monitor = None
        if asyncio.get_running_loop().time() - link.connected_at >= STABLE_CONNECTION_SECONDS:
            link.backoff.reset()
        self._note_error(link, reason)
        link.wake.set()

    def _note_error(self, link: _PeerLink, reason: str) -> None:
        # Repeats of the same failure while a peer is down go to debug, not to the operator.
        level = logging.DEBUG if reason == link.last_error else logging.WARNING
        log.log(level, "%s -> %s: %s", self.node_id, link.peer_id, reason)
        link.last_error = reason

    # ------------------------------------------------------------ inbound

    async def _serve_inbound(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._inbound.add(task)
        peername = writer.get_extra_info("peername")
        try:
            if self._stopping:
                return
            _set_nodelay(writer)
            await self._receive(reader, writer, peername)
        except (ConnectionError, OSError) as exc:
            log.debug("%s: inbound connection from %s ended: %r", self.node_id, peername, exc)
        except asyncio.CancelledError:
            # Only stop() cancels these. Ending normally matters: asyncio 3.11's
            # stream server callback calls task.exception() on its handler task,
            # which raises (and logs an error) for a cancelled task.
            pass
        finally:
            writer.transport.abort()
            self._inbound.discard(task)

    async def _receive(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peername: Any) -> None:
        decoder = FrameDecoder(MAX_HELLO_BYTES)
        try:
            async with asyncio.timeout(self.hello_timeout):
                hello_frame = decoder.pop_frame()
                while hello_frame is None:
                    data = await reader.read(MAX_HELLO_BYTES)
                    if not data:
                        return
                    decoder.extend(data)
                    hello_frame = decoder.pop_frame()
            hello = decode_hello(hello_frame)
            if hello.cluster_id != self.cluster_id:
                raise HandshakeError(
                    f"cluster id mismatch: this node is in {self.cluster_id!r}, "
                    f"{hello.node_id!r} says {hello.cluster_id!r}"
                )
            if self.tls is not None:
                why = refusal(_peer_identity(writer), hello.node_id, self.cluster_id)
                if why is not None:
                    raise HandshakeError(f"hello says {hello.node_id!r} but {why}")
        except TimeoutError:
            log.warning("%s: no hello from %s within %.1fs; closing", self.node_id, peername, self.hello_timeout)
            return
        except (HandshakeError, FrameTooLargeError) as exc:
            self.rejected_inbound += 1
            self._log_refusal(str(exc), peername)
            writer.write(encode_frame(encode_reject(str(exc))))
            try:
                async with asyncio.timeout(1.0):
                    await writer.drain()
            except (TimeoutError, ConnectionError, OSError):
                pass
            return
        sender = hello.node_id
        decoder.max_frame_bytes = self.max_frame_bytes
        deliver = self._deliver
        pop_frame = decoder.pop_frame
        try:
            while True:
                # Pop one at a time so frames ahead of an oversized one are still delivered.
                frame = pop_frame()
                while frame is not None:
                    deliver(sender, frame)
                    frame = pop_frame()
                data = await reader.read(READ_CHUNK_BYTES)
                if not data:
                    return
                decoder.extend(data)
        except FrameTooLargeError as exc:
            log.error("%s: closing connection from %s at %s: %s", self.node_id, sender, peername, exc)
        except PeerProtocolError as exc:
            # Logged once per connection: the frames behind the bad one are
            # dropped with it, and the peer learns why from the reject frame.
            self.rejected_inbound += 1
            log.error("%s: closing connection from %s at %s: %s", self.node_id, sender, peername, exc)
            writer.write(encode_frame(encode_reject(str(exc)[:_MAX_REJECT_REASON_CHARS])))
            try:
                async with asyncio.timeout(1.0):
                    await writer.drain()
            except (TimeoutError, ConnectionError, OSError):
                pass

    def _log_refusal(self, reason: str, peername: Any) -> None:
        # The reason names the sender, so one line per misconfigured peer, not one per retry.
        logged = self._refusals_logged
        level = logging.DEBUG if reason in logged else logging.ERROR
        if len(logged) >= _MAX_REMEMBERED_REFUSALS:
            logged.clear()
        logged.add(reason)
        log.log(level, "%s: rejecting connection from %s: %s", self.node_id, peername, reason)

    def _deliver(self, sender: str, frame: bytes) -> None:
        self.received_from[sender] += 1
        try:
            self.on_message(sender, frame)
        except PeerProtocolError:
            raise  # _receive closes the connection
        except Exception:
            # One bad message must not cut the link and lose the ones behind it.
            log.exception("%s: on_message failed for a message from %s", self.node_id, sender)


def _peer_identity(writer: asyncio.StreamWriter) -> CertIdentity:
    """Who the peer's verified certificate names (the handshake required one)."""
    return identity_of_peer(writer.get_extra_info("ssl_object").getpeercert())


def _end_direct_write(link: _PeerLink) -> None:
    link.wrote_directly = False


def _set_nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
