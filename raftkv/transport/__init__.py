"""Node-to-node transport for the native Raft engine: framed TCP streams."""

from raftkv.transport.framing import FrameDecoder, FrameTooLargeError, HandshakeError
from raftkv.transport.tcp import ReconnectBackoff, TcpTransport

__all__ = ["FrameDecoder", "FrameTooLargeError", "HandshakeError", "ReconnectBackoff", "TcpTransport"]
