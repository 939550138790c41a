"""Size limits a node enforces on client requests.

They are checked by the server (through :mod:`raftkv.server.json_codec`) before a
command is proposed, never by the state machine: nodes may be configured with
different limits, and a replicated state machine must not let configuration
decide whether a committed command applies.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    max_key_bytes: int = 4096
    max_value_bytes: int = 1_048_576
    max_txn_ops: int = 128  # compares + success ops + failure ops
    max_request_bytes: int = 2_097_152
