"""Transport tests: real TCP sockets on 127.0.0.1, one event loop per test."""

from __future__ import annotations

import asyncio
import functools
import random
import struct
from collections import defaultdict
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from raftkv.transport import FrameDecoder, FrameTooLargeError, HandshakeError, ReconnectBackoff, TcpTransport
from raftkv.transport.framing import (
    decode_hello,
    decode_reject,
    encode_frame,
    encode_frames,
    encode_hello,
)

LOCAL = ("127.0.0.1", 0)


def run_async(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    @functools.wraps(test)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        async def with_deadline() -> None:
            async with asyncio.timeout(20):
                await test(*args, **kwargs)

        asyncio.run(with_deadline())

    return wrapper


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


class Inbox:
    def __init__(self) -> None:
        self.by_sender: dict[str, list[bytes]] = defaultdict(list)

    def __call__(self, sender: str, payload: bytes) -> None:
        self.by_sender[sender].append(payload)

    def count(self, sender: str) -> int:
        return len(self.by_sender[sender])


async def started(node_id: str, inbox: Callable[[str, bytes], None], **kwargs: Any) -> TcpTransport:
    transport = TcpTransport(node_id, LOCAL, {}, inbox, **kwargs)
    await transport.start()
    return transport


def connect_all(transports: list[TcpTransport]) -> None:
    for a in transports:
        for b in transports:
            if a is not b:
                a.set_peer_addr(b.node_id, b.listen_addr)


def other_tasks() -> set[asyncio.Task[Any]]:
    return asyncio.all_tasks() - {asyncio.current_task()}  # type: ignore[operator]


# ------------------------------------------------------------------ framing


def test_decoder_reassembles_frames_split_at_every_byte() -> None:
    payloads = [b"", b"a", b"hello world", bytes(range(256)) * 5]
    stream = encode_frames(payloads)
    for split in range(len(stream) + 1):
        decoder = FrameDecoder()
        got = decoder.feed(stream[:split]) + decoder.feed(stream[split:])
        assert got == payloads, split
        assert decoder.buffered_bytes == 0
    one_by_one = FrameDecoder()
    assert [f for i in range(len(stream)) for f in one_by_one.feed(stream[i : i + 1])] == payloads


def test_decoder_rejects_oversized_header_before_payload_arrives() -> None:
    decoder = FrameDecoder(max_frame_bytes=100)
    assert decoder.feed(encode_frame(b"x" * 100)) == [b"x" * 100]
    with pytest.raises(FrameTooLargeError, match="101 bytes"):
        decoder.feed(struct.pack(">I", 101))


def test_hello_round_trip_and_bad_hellos() -> None:
    hello = decode_hello(encode_hello("n1", "prod"))
    assert (hello.node_id, hello.cluster_id) == ("n1", "prod")
    bad = [
        b"GET / HTTP/1.1\r\n",
        b"RKVHELLO{not json",
        b"RKVHELLO[1]",
        b'RKVHELLO{"v": 2, "node_id": "n1", "cluster_id": "c"}',
        b'RKVHELLO{"v": 1, "node_id": "", "cluster_id": "c"}',
        b'RKVHELLO{"v": 1, "node_id": "n1", "cluster_id": 5}',
    ]
    for payload in bad:
        with pytest.raises(HandshakeError):
            decode_hello(payload)
    with pytest.raises(HandshakeError):
        decode_reject(b"something else")


def test_backoff_starts_immediately_doubles_with_jitter_and_caps() -> None:
    backoff = ReconnectBackoff(0.02, 0.5, random.Random(7))
    delays = [backoff.next_delay() for _ in range(12)]
    assert delays[0] == 0.0
    for attempt, delay in enumerate(delays[1:], start=1):
        ceiling = min(0.5, 0.02 * 2 ** (attempt - 1))
        assert ceiling / 2 <= delay <= ceiling
    assert max(delays) <= 0.5 and delays[-1] >= 0.25
    backoff.reset()
    assert backoff.next_delay() == 0.0


# ---------------------------------------------------------------- transport


@run_async
async def test_two_transports_exchange_messages_in_order() -> None:
    inbox_a, inbox_b = Inbox(), Inbox()
    a, b = await started("a", inbox_a), await started("b", inbox_b)
    connect_all([a, b])
    for i in range(3000):
        a.send("b", b"a->b %d" % i)
        b.send("a", b"b->a %d" % i)
        if i % 500 == 0:
            await asyncio.sleep(0)
    await wait_until(lambda: inbox_b.count("a") == 3000 and inbox_a.count("b") == 3000)
    assert inbox_b.by_sender["a"] == [b"a->b %d" % i for i in range(3000)]
    assert inbox_a.by_sender["b"] == [b"b->a %d" % i for i in range(3000)]
    stats = a.stats()["b"]
    assert stats["connected"] and stats["sent"] == 3000 and stats["dropped"] == 0 and stats["queued"] == 0
    assert a.stats()["b"]["received"] == 3000
    await a.stop()
    await b.stop()
    assert other_tasks() == set()


@run_async
async def test_three_transports_keep_per_link_order() -> None:
    inboxes = {name: Inbox() for name in "xyz"}
    nodes = [await started(name, inboxes[name]) for name in "xyz"]
    connect_all(nodes)
    for i in range(500):
        for node in nodes:
            for peer in nodes:
                if peer is not node:
                    node.send(peer.node_id, f"{node.node_id}->{peer.node_id} {i}".encode())
    await wait_until(lambda: all(inboxes[r].count(s) == 500 for r in "xyz" for s in "xyz" if r != s))
    for receiver in "xyz":
        for sender in "xyz":
            if sender != receiver:
                expected = [f"{sender}->{receiver} {i}".encode() for i in range(500)]
                assert inboxes[receiver].by_sender[sender] == expected
    for node in nodes:
        await node.stop()
    assert other_tasks() == set()


@run_async
async def test_queued_batch_goes_out_in_one_write() -> None:
    inbox = Inbox()
    a, b = await started("a", Inbox()), await started("b", inbox)
    connect_all([a, b])
    a.send("b", b"warm-up")
    await wait_until(lambda: inbox.count("a") == 1)
    writer = a._links["b"].writer
    assert writer is not None
    writes: list[int] = []
    real_write = writer.write

    def counting_write(data: bytes) -> None:
        writes.append(len(data))
        real_write(data)

    writer.write = counting_write  # type: ignore[method-assign]
    for i in range(500):
        a.send("b", b"m%d" % i)
    await wait_until(lambda: inbox.count("a") == 501)
    # The first goes out at once; the rest of the burst together, in order.
    assert len(writes) == 2
    assert inbox.by_sender["a"][1:] == [b"m%d" % i for i in range(500)]
    await a.stop()
    await b.stop()


@run_async
async def test_peer_down_then_up_reconnects_and_delivery_resumes() -> None:
    inbox_a = Inbox()
    first_b_inbox = Inbox()
    a = await started("a", inbox_a, backoff_initial=0.01, backoff_max=0.1)
    b = await started("b", first_b_inbox)
    port = b.listen_addr[1]
    connect_all([a, b])
    a.send("b", b"before")
    await wait_until(lambda: first_b_inbox.count("a") == 1)
    await b.stop()
    await wait_until(lambda: not a.stats()["b"]["connected"])
    for i in range(10):
        a.send("b", b"while down %d" % i)  # must neither raise nor block
    await asyncio.sleep(0.2)
    assert a.stats()["b"]["connects"] == 1
    second_b_inbox = Inbox()
    b2 = TcpTransport("b", ("127.0.0.1", port), {"a": a.listen_addr}, second_b_inbox)
    await b2.start()
    loop = asyncio.get_running_loop()
    restarted_at = loop.time()
    await wait_until(lambda: a.stats()["b"]["connected"], timeout=2)
    reconnect_seconds = loop.time() - restarted_at
    a.send("b", b"after")
    await wait_until(lambda: b"after" in second_b_inbox.by_sender["a"])
    # Messages queued while the peer was down are delivered, in order, ahead of the new one.
    assert second_b_inbox.by_sender["a"] == [b"while down %d" % i for i in range(10)] + [b"after"]
    assert a.stats()["b"]["connects"] == 2
    assert reconnect_seconds < 0.5
    b2.send("a", b"hello back")
    await wait_until(lambda: inbox_a.count("b") == 1)
    await a.stop()
    await b2.stop()
    assert other_tasks() == set()


@run_async
async def test_wrong_cluster_id_is_rejected() -> None:
    inbox = Inbox()
    a = await started("a", Inbox(), cluster_id="blue", backoff_max=0.05)
    b = await started("b", inbox, cluster_id="green")
    connect_all([a, b])
    a.send("b", b"should not arrive")
    await wait_until(lambda: b.rejected_inbound >= 1 and "cluster id mismatch" in (a.stats()["b"]["last_error"] or ""))
    assert "blue" in a.stats()["b"]["last_error"] and "green" in a.stats()["b"]["last_error"]
    await asyncio.sleep(0.1)
    assert inbox.by_sender == {}
    await a.stop()
    await b.stop()


@run_async
async def test_garbage_first_frame_gets_reject_frame_and_close() -> None:
    b = await started("b", Inbox())
    reader, writer = await asyncio.open_connection(*b.listen_addr)
    writer.write(encode_frame(b"GET / HTTP/1.1"))
    reply = await asyncio.wait_for(reader.read(), 2)
    frames = FrameDecoder().feed(reply)
    assert "not a raftkv hello" in decode_reject(frames[0])
    writer.close()
    await b.stop()
    assert b.rejected_inbound == 1


@run_async
async def test_connection_without_hello_times_out() -> None:
    b = await started("b", Inbox(), hello_timeout=0.2)
    reader, writer = await asyncio.open_connection(*b.listen_addr)
    assert await asyncio.wait_for(reader.read(), 2) == b""
    writer.close()
    await b.stop()


@run_async
async def test_oversized_frame_closes_the_connection() -> None:
    inbox = Inbox()
    b = await started("b", inbox, max_frame_bytes=1024)
    reader, writer = await asyncio.open_connection(*b.listen_addr)
    writer.write(encode_frame(encode_hello("raw", "raftkv")) + encode_frame(b"ok" * 512))
    writer.write(struct.pack(">I", 1025) + b"x" * 100)
    assert await asyncio.wait_for(reader.read(), 2) == b""
    assert inbox.by_sender["raw"] == [b"ok" * 512]
    writer.close()
    # The sending side refuses to build such a frame in the first place.
    a = await started("a", Inbox(), max_frame_bytes=1024)
    a.set_peer_addr("b", b.listen_addr)
    with pytest.raises(ValueError, match="exceeds the frame limit"):
        a.send("b", b"x" * 1025)
    with pytest.raises(TypeError, match="bytes"):
        a.send("b", "text")  # type: ignore[arg-type]
    assert a.stats()["b"]["queued"] == 0
    await a.stop()
    await b.stop()


@run_async
async def test_send_to_unknown_or_down_peer_never_raises_and_queue_is_bounded() -> None:
    # A port nobody listens on: bind, note the port, close.
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    dead_port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    a = TcpTransport("a", LOCAL, {"down": ("127.0.0.1", dead_port)}, Inbox(), max_queue_frames=100)
    a.send("down", b"before start")  # queued until start
    await a.start()
    for i in range(5000):
        a.send("down", b"m%d" % i)
        a.send("ghost", b"m%d" % i)
    stats = a.stats()["down"]
    assert stats["queued"] == 100 and stats["dropped"] == 4901 and not stats["connected"]
    assert a.unknown_peer_drops == 5000
    await asyncio.sleep(0.1)
    assert "connect to" in a.stats()["down"]["last_error"]
    await a.stop()
    a.send("down", b"after stop")  # silently dropped
    assert other_tasks() == set()


@run_async
async def test_queue_bound_in_bytes_drops_oldest() -> None:
    a = TcpTransport("a", LOCAL, {"down": ("127.0.0.1", 9)}, Inbox(), max_queue_bytes=1000)
    for i in range(30):
        a.send("down", bytes([i]) * 100)
    stats = a.stats()["down"]
    assert stats["queued"] == 10 and stats["queued_bytes"] == 1000 and stats["dropped"] == 20
    assert a._links["down"].queue[0] == bytes([20]) * 100


@run_async
async def test_sender_identity_comes_from_hello_not_address() -> None:
    """A forwarding proxy on the link (as Toxiproxy would be) does not confuse the receiver."""
    inbox = Inbox()
    b = await started("b", inbox)
    upstream = b.listen_addr

    async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        finally:
            dst.close()

    proxy_tasks: set[asyncio.Task[None]] = set()

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*upstream)
        both = {asyncio.create_task(pipe(reader, up_writer)), asyncio.create_task(pipe(up_reader, writer))}
        proxy_tasks.update(both)
        await asyncio.gather(*both, return_exceptions=True)

    proxy = await asyncio.start_server(forward, "127.0.0.1", 0)
    a = await started("a", Inbox())
    a.set_peer_addr("b", proxy.sockets[0].getsockname()[:2])
    for i in range(100):
        a.send("b", b"%d" % i)
    await wait_until(lambda: inbox.count("a") == 100)
    assert inbox.by_sender["a"] == [b"%d" % i for i in range(100)]
    await a.stop()
    await b.stop()
    proxy.close()
    for task in proxy_tasks:
        task.cancel()
    await asyncio.gather(*proxy_tasks, return_exceptions=True)
    await proxy.wait_closed()


@run_async
async def test_set_peer_addr_moves_the_link_and_remove_peer_stops_it() -> None:
    old_inbox, new_inbox = Inbox(), Inbox()
    old_b, new_b = await started("b", old_inbox), await started("b", new_inbox)
    a = await started("a", Inbox())
    a.set_peer_addr("b", old_b.listen_addr)
    a.send("b", b"to old")
    await wait_until(lambda: old_inbox.count("a") == 1)
    a.set_peer_addr("b", new_b.listen_addr)
    await wait_until(lambda: a.stats()["b"]["connected"] and a.stats()["b"]["addr"].endswith(str(new_b.listen_addr[1])))
    a.send("b", b"to new")
    await wait_until(lambda: new_inbox.count("a") == 1)
    assert old_inbox.by_sender["a"] == [b"to old"] and new_inbox.by_sender["a"] == [b"to new"]
    a.remove_peer("b")
    assert "b" not in a.stats()
    a.send("b", b"nowhere")
    assert a.unknown_peer_drops == 1
    with pytest.raises(ValueError, match="own peer"):
        a.set_peer_addr("a", old_b.listen_addr)
    for node in (a, old_b, new_b):
        await node.stop()
    assert other_tasks() == set()


@run_async
async def test_failing_handler_does_not_cut_the_link() -> None:
    seen: list[bytes] = []

    def handler(sender: str, payload: bytes) -> None:
        if payload == b"boom":
            raise RuntimeError("handler bug")
        seen.append(payload)

    a, b = await started("a", Inbox()), await started("b", handler)
    connect_all([a, b])
    for payload in (b"one", b"boom", b"two"):
        a.send("b", payload)
    await wait_until(lambda: seen == [b"one", b"two"])
    assert a.stats()["b"]["connects"] == 1
    await a.stop()
    await b.stop()


@run_async
async def test_stop_with_live_connections_leaves_no_tasks() -> None:
    nodes = [await started(name, Inbox()) for name in ("p", "q", "r")]
    connect_all(nodes)
    for node in nodes:
        for peer in nodes:
            if peer is not node:
                node.send(peer.node_id, b"x" * 10_000)
    await wait_until(lambda: all(s["connected"] for n in nodes for s in n.stats().values()))
    assert other_tasks()  # writers, watchers and inbound readers are running
    for node in nodes:
        await node.stop()
    assert other_tasks() == set()


@run_async
async def test_stop_without_start_and_twice_is_harmless() -> None:
    t = TcpTransport("a", LOCAL, {"b": ("127.0.0.1", 9)}, Inbox())
    t.send("b", b"queued")
    await t.stop()
    await t.stop()
    assert other_tasks() == set()
