"""Workloads the harness can run: `make_workload(name, ...)`."""
from __future__ import annotations

from jepsen_style.workloads.base import CheckOutcome, Completion, Op, OpGenerator, Workload
from jepsen_style.workloads.inventory import InventoryWorkload
from jepsen_style.workloads.lock_workload import LockWorkload
from jepsen_style.workloads.register import RegisterWorkload
from jepsen_style.workloads.set_workload import SetWorkload
from jepsen_style.workloads.watch_workload import WatchWorkload

WORKLOAD_NAMES = ("register", "inventory", "set", "watch", "lock")

__all__ = ["CheckOutcome", "Completion", "Op", "OpGenerator", "Workload", "WORKLOAD_NAMES",
           "make_workload"]


def make_workload(name: str, unsafe_serializable_reads: bool = False) -> Workload:
    if name not in WORKLOAD_NAMES:
        raise ValueError(f"unknown workload {name!r}; choose one of {', '.join(WORKLOAD_NAMES)}")
    if unsafe_serializable_reads and name != "register":
        raise ValueError("--unsafe-serializable-reads applies to the register workload only")
    if name == "register":
        return RegisterWorkload(serializable_reads=unsafe_serializable_reads)
    if name == "inventory":
        return InventoryWorkload()
    if name == "watch":
        return WatchWorkload()
    if name == "lock":
        return LockWorkload()
    return SetWorkload()
