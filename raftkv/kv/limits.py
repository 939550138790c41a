"""Limits a node enforces on its clients: request sizes, answer sizes and
connection deadlines.

They are checked by the server (through :mod:`raftkv.server.json_codec` and
the HTTP layer) before a command is proposed, never by the state machine:
nodes may be configured with different limits, and a replicated state
machine must not let configuration decide whether a committed command
applies.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    max_key_bytes: int = 4096
    max_value_bytes: int = 1_048_576
    max_txn_ops: int = 128  # compares + success ops + failure ops
    max_request_bytes: int = 2_097_152
    # A list answer stops (more: true) once its keys and values reach this
    # many bytes; it always holds at least one key.
    max_list_bytes: int = 4_194_304
    # Open client connections; more are answered 503 and closed. Well below
    # the usual 1,024 open-file limit, which the WAL, snapshots and peer
    # connections share.
    max_connections: int = 512
    # Seconds a request head may take from its first byte.
    head_timeout: float = 10.0
    # Seconds a connection may sit with no request before it is closed.
    idle_timeout: float = 60.0
    # Seconds a request body may take to arrive once the handler reads it.
    body_timeout: float = 30.0
