"""Checkers for recorded histories: linearizability, inventory and set invariants."""
from jepsen_style.checker.linearizability import CheckResult, Failure, check
from jepsen_style.checker.models import Model, keyed_register_model, kv_model, register_model
from jepsen_style.checker.operation import UNKNOWN, Operation

__all__ = [
    "CheckResult",
    "Failure",
    "Model",
    "Operation",
    "UNKNOWN",
    "check",
    "keyed_register_model",
    "kv_model",
    "register_model",
]
