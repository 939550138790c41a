"""`inventory`: SKUs with stock; purchases are guarded decrements through
`/v1/txn` (refused when stock would go negative), plus restocks.

Invariants (see `checker/inventory.py`): stock never negative, and the final
stock equals initial + restocks - purchases within the bounds left by
operations whose outcome is unknown.
"""
from __future__ import annotations

import asyncio
import random
from typing import Iterable

from jepsen_style.checker.inventory import check_inventory
from jepsen_style.history import HistoryEvent
from jepsen_style.workloads.base import (
    CheckOutcome,
    Completion,
    Op,
    OpGenerator,
    Workload,
    read_failure,
    write_completion,
)
from jepsen_style.workloads.node_api import NodeApi, OutcomeUnknown, RequestNotSent

KEY_PREFIX = "jepsen/inventory/"
SKUS = 4
INITIAL_STOCK = 10
SETUP_ATTEMPTS = 20


class SetupError(RuntimeError):
    """The initial state could not be written; the run cannot be checked."""


class InventoryGenerator(OpGenerator):
    def __init__(self, skus: list[str]) -> None:
        self.skus = skus

    def next_op(self, rng: random.Random) -> Op:
        sku = rng.choice(self.skus)
        roll = rng.random()
        if roll < 0.3:
            return Op("read", sku, None)
        if roll < 0.5:
            return Op("restock", sku, rng.randint(1, 5))
        return Op("purchase", sku, rng.randint(1, 3))


class InventoryWorkload(Workload):
    name = "inventory"

    def __init__(self, skus: int = SKUS, initial_stock: int = INITIAL_STOCK) -> None:
        self.skus = [f"{KEY_PREFIX}sku{i}" for i in range(skus)]
        self.initial_stock = {sku: initial_stock for sku in self.skus}

    def generator(self, worker: int) -> OpGenerator:
        return InventoryGenerator(self.skus)

    async def setup(self, api: NodeApi) -> None:
        for sku, stock in self.initial_stock.items():
            await _put_until_ok(api, sku, str(stock).encode())

    async def invoke(self, api: NodeApi, op: Op) -> Completion:
        assert op.key is not None
        if op.f == "read":
            reply = await api.get(op.key)
            if reply.status != 200:
                return read_failure(reply)
            text = reply.body.decode("utf-8", errors="replace")
            try:
                return Completion("ok", int(text))
            except ValueError:
                return Completion("fail", None, f"stock is not an integer: {text!r}")
        if op.f == "restock":
            reply = await api.txn({"compare": [], "failure": [],
                                   "success": [{"op": "add", "key": op.key, "delta": op.value}]})
            return write_completion(reply)
        reply = await api.txn({
            "compare": [{"key": op.key, "target": "number", "cmp": ">=", "value": op.value}],
            "success": [{"op": "add", "key": op.key, "delta": -op.value}],
            "failure": [],
        })
        if reply.status == 200 and not reply.json()["succeeded"]:
            return Completion("fail", None, "not enough stock")
        return write_completion(reply)

    def final_ops(self, events: Iterable[HistoryEvent]) -> list[Op]:
        return [Op("read", sku, None) for sku in self.skus]

    def check(self, events: list[HistoryEvent]) -> CheckOutcome:
        result = check_inventory(events, self.initial_stock)
        return CheckOutcome("valid" if result.valid else "invalid", list(result.anomalies),
                            f"{result.checked} SKUs")


async def _put_until_ok(api: NodeApi, key: str, value: bytes) -> None:
    """A plain overwrite is safe to repeat, so retry through elections."""
    last = "no attempt"
    for _ in range(SETUP_ATTEMPTS):
        try:
            reply = await api.put(key, value)
        except (RequestNotSent, OutcomeUnknown) as error:
            last = str(error)
        else:
            if reply.status == 200:
                return
            last = reply.describe()
        await asyncio.sleep(0.5)
    raise SetupError(f"could not write the initial value of {key} at {api.base_url}: {last}")
