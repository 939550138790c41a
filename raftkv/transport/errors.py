"""Errors a transport's message handler raises to act on a connection."""

from __future__ import annotations


class PeerProtocolError(Exception):
    """A frame broke the peer protocol (malformed, out of range, or from a
    sender that may not send it). Raised by ``on_message``: the transport
    answers with a reject frame carrying the message, closes the inbound
    connection the frame came on and drops every frame behind it."""
