"""The key-value state machine, its commands, limits and JSON request codec."""

from raftkv.kv.limits import Limits
from raftkv.kv.state_machine import KVStateMachine

__all__ = ["KVStateMachine", "Limits"]
