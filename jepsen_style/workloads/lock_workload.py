"""`lock`: clients take one lock (POST /v1/locks), hold it briefly, and
release it, each with a short lease of its own kept alive while it waits
and holds. Each hold is noted with client-side times on the history's
clock; a final read reports them and `checker/lock_checker.py` requires
that no two overlap (while both leases were certainly alive) and that
fencing tokens grow in acquire order.

A `hold` operation completes ok only if it held the lock; anything else
(no lease, lock busy past the server timeout, node gone) is a fail: a key it
may have left behind goes with its lease, which it revokes when it can.
"""
from __future__ import annotations

import asyncio
import random
import time
from typing import Any, Iterable
from urllib.parse import quote

import orjson

from jepsen_style.checker.lock_checker import HOLDS_KEY, check_locks
from jepsen_style.history import HistoryEvent
from jepsen_style.workloads.base import CheckOutcome, Completion, Op, OpGenerator, Workload
from jepsen_style.workloads.node_api import NodeApi, OutcomeUnknown, RequestNotSent

LOCK_NAME = "jepsen-lock"
LEASE_TTL_S = 2
HOLD_S = (0.02, 0.15)
_JSON = {"Content-Type": "application/json"}


class HoldGenerator(OpGenerator):
    def __init__(self, worker: int) -> None:
        self.worker = worker
        self.count = 0

    def next_op(self, rng: random.Random) -> Op:
        self.count += 1
        return Op("hold", LOCK_NAME, f"{self.worker}-{self.count}")


class LockWorkload(Workload):
    name = "lock"

    def __init__(self) -> None:
        self.origin = time.monotonic()
        self.holds: list[dict[str, Any]] = []

    def generator(self, worker: int) -> OpGenerator:
        return HoldGenerator(worker)

    async def start(self, apis: list[NodeApi]) -> None:
        self.origin = time.monotonic()  # the recorder's clock started just now

    def now(self) -> float:
        return round(time.monotonic() - self.origin, 6)

    async def invoke(self, api: NodeApi, op: Op) -> Completion:
        try:
            granted_at = self.now()
            reply = await api.request("POST", "/v1/leases", body=orjson.dumps({"ttl": LEASE_TTL_S}), headers=_JSON)
        except (RequestNotSent, OutcomeUnknown) as error:
            return Completion("fail", None, f"no lease: {error}", in_flight=False)
        if reply.status != 200:
            return Completion("fail", None, f"no lease: {reply.describe()}", in_flight=False)
        lease = reply.json()["id"]
        renewed = [granted_at]  # invocation times of acknowledged renewals
        keeper = asyncio.create_task(self._keep_alive(api, lease, renewed))
        try:
            return await self._hold(api, op, lease, renewed)
        finally:
            keeper.cancel()
            try:
                await api.request("DELETE", f"/v1/leases/{lease}")
            except (RequestNotSent, OutcomeUnknown):
                pass  # it expires within its TTL

    async def _keep_alive(self, api: NodeApi, lease: str, renewed: list[float]) -> None:
        while True:
            await asyncio.sleep(LEASE_TTL_S / 3)
            sent = self.now()
            try:
                reply = await api.request("POST", f"/v1/leases/{lease}/keepalive")
            except (RequestNotSent, OutcomeUnknown):
                continue
            if reply.status == 200:
                renewed.append(sent)
            elif reply.status == 404:
                return

    async def _hold(self, api: NodeApi, op: Op, lease: str, renewed: list[float]) -> Completion:
        path = f"/v1/locks/{quote(LOCK_NAME, safe='')}"
        try:
            reply = await api.request("POST", path, body=orjson.dumps({"lease": lease}), headers=_JSON)
        except (RequestNotSent, OutcomeUnknown) as error:
            return Completion("fail", None, f"not acquired: {error}", in_flight=False)
        if reply.status != 200:
            return Completion("fail", None, f"not acquired: {reply.describe()}", in_flight=False)
        acquired = self.now()
        body = reply.json()
        await asyncio.sleep(random.uniform(*HOLD_S))
        release_invoked = self.now()
        self.holds.append(
            {
                "id": op.value,
                "lease": lease,
                "token": body["fencing_token"],
                "acquired": acquired,
                "release_invoked": release_invoked,
                "lease_safe_until": round(max(renewed) + LEASE_TTL_S, 6),
            }
        )
        try:
            await api.request("DELETE", path, params={"key": body["key"]})
        except (RequestNotSent, OutcomeUnknown):
            pass  # the lease revoke (or its expiry) frees it
        return Completion("ok")

    async def invoke_final(self, api: NodeApi, op: Op) -> Completion:
        return Completion("ok", sorted(self.holds, key=lambda h: h["acquired"]))

    def final_ops(self, events: Iterable[HistoryEvent]) -> list[Op]:
        return [Op("read", HOLDS_KEY, None)]

    def check(self, events: list[HistoryEvent]) -> CheckOutcome:
        result = check_locks(events)
        if result.valid is None:
            return CheckOutcome("unknown", result.anomalies, "no holds report")
        return CheckOutcome("valid" if result.valid else "invalid", result.anomalies, f"{result.checked} holds")
