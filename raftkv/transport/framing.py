"""Length-prefixed frames and the connection handshake: pure, no I/O.

A frame is a 4-byte big-endian payload length followed by the payload. The
first frame a connecting node sends is a hello naming itself and its cluster;
a receiver that refuses it answers with one reject frame and closes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import orjson

LENGTH = struct.Struct(">I")
DEFAULT_MAX_FRAME_BYTES = 64 << 20
MAX_HELLO_BYTES = 4096
HELLO_MAGIC = b"RKVHELLO"
REJECT_MAGIC = b"RKVREJCT"
PROTOCOL_VERSION = 1


class FrameTooLargeError(ValueError):
    """A frame header announced more bytes than the connection allows."""


class HandshakeError(ValueError):
    """A hello or reject frame could not be understood or was refused."""


def encode_frame(payload: bytes) -> bytes:
    return LENGTH.pack(len(payload)) + payload


def encode_frames(payloads: list[bytes] | tuple[bytes, ...]) -> bytes:
    """All payloads as one buffer, so a batch costs a single write."""
    parts: list[bytes] = []
    append = parts.append
    pack = LENGTH.pack
    for payload in payloads:
        append(pack(len(payload)))
        append(payload)
    return b"".join(parts)


class FrameDecoder:
    """Splits a byte stream into frames; ``max_frame_bytes`` may change between calls."""

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buffer = bytearray()
        self._start = 0  # bytes before this offset are consumed

    @property
    def buffered_bytes(self) -> int:
        return len(self._buffer) - self._start

    def extend(self, data: bytes) -> None:
        if self._start:
            del self._buffer[: self._start]
            self._start = 0
        self._buffer += data

    def pop_frame(self) -> bytes | None:
        """The next complete frame, or None until more bytes arrive.

        Raises FrameTooLargeError as soon as an oversized header is seen,
        without waiting for (or buffering) its payload.
        """
        buffer, start = self._buffer, self._start
        if len(buffer) - start < LENGTH.size:
            return None
        (size,) = LENGTH.unpack_from(buffer, start)
        if size > self.max_frame_bytes:
            raise FrameTooLargeError(f"frame of {size} bytes exceeds the limit of {self.max_frame_bytes}")
        end = start + LENGTH.size + size
        if end > len(buffer):
            return None
        self._start = end
        return bytes(buffer[start + LENGTH.size : end])

    def feed(self, data: bytes) -> list[bytes]:
        """Add ``data`` and return every frame now complete, in order.

        An oversized header raises, discarding frames decoded before it in
        this call; use extend() and pop_frame() to keep those.
        """
        self.extend(data)
        frames = []
        frame = self.pop_frame()
        while frame is not None:
            frames.append(frame)
            frame = self.pop_frame()
        return frames


@dataclass(frozen=True)
class Hello:
    node_id: str
    cluster_id: str


def encode_hello(node_id: str, cluster_id: str) -> bytes:
    return HELLO_MAGIC + orjson.dumps({"v": PROTOCOL_VERSION, "node_id": node_id, "cluster_id": cluster_id})


def decode_hello(payload: bytes) -> Hello:
    if not payload.startswith(HELLO_MAGIC):
        raise HandshakeError("first frame is not a raftkv hello")
    try:
        fields = orjson.loads(payload[len(HELLO_MAGIC) :])
    except orjson.JSONDecodeError as exc:
        raise HandshakeError(f"hello is not valid JSON: {exc}") from None
    if not isinstance(fields, dict):
        raise HandshakeError("hello is not a JSON object")
    if fields.get("v") != PROTOCOL_VERSION:
        raise HandshakeError(f"unsupported protocol version {fields.get('v')!r} (this node speaks {PROTOCOL_VERSION})")
    node_id, cluster_id = fields.get("node_id"), fields.get("cluster_id")
    if not isinstance(node_id, str) or not node_id:
        raise HandshakeError(f"hello has no valid node_id: {node_id!r}")
    if not isinstance(cluster_id, str):
        raise HandshakeError(f"hello has no valid cluster_id: {cluster_id!r}")
    return Hello(node_id, cluster_id)


def encode_reject(reason: str) -> bytes:
    return REJECT_MAGIC + reason.encode("utf-8", "replace")


def decode_reject(payload: bytes) -> str:
    if not payload.startswith(REJECT_MAGIC):
        raise HandshakeError("peer sent an unexpected frame on our outbound connection")
    return payload[len(REJECT_MAGIC) :].decode("utf-8", "replace")
