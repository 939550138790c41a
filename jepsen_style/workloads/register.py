"""`register`: reads, writes and compare-and-swaps on many independent keys,
checked for linearizability key by key.

Each worker moves through generations of keys so that no key collects more
operations than the checker can search quickly; within a generation the
worker picks among `KEYS_PER_GENERATION` keys, which the other workers of
the same generation share.
"""
from __future__ import annotations

import random
from typing import Iterable

from jepsen_style.checker.linearizability import check
from jepsen_style.checker.models import keyed_register_model
from jepsen_style.checker.render import render_svg, render_text
from jepsen_style.history import HistoryEvent, history_to_operations
from jepsen_style.workloads.base import (
    CheckOutcome,
    Completion,
    Op,
    OpGenerator,
    Workload,
    read_failure,
    write_completion,
)
from jepsen_style.workloads.node_api import NodeApi

KEY_PREFIX = "jepsen/register/"
KEYS_PER_GENERATION = 3
OPS_PER_GENERATION = 30
VALUES = 5
CHECK_TIMEOUT_S = 60.0
# Wide enough that labels keep the key and the operation.
PICTURE_COLUMNS = 200


class RegisterGenerator(OpGenerator):
    def __init__(self) -> None:
        self.count = 0

    def next_op(self, rng: random.Random) -> Op:
        generation = self.count // OPS_PER_GENERATION
        self.count += 1
        key = f"{KEY_PREFIX}{generation * KEYS_PER_GENERATION + rng.randrange(KEYS_PER_GENERATION)}"
        roll = rng.random()
        if roll < 0.5:
            return Op("read", key, None)
        if roll < 0.75:
            return Op("write", key, rng.randrange(VALUES))
        return Op("cas", key, [rng.randrange(VALUES), rng.randrange(VALUES)])


class RegisterWorkload(Workload):
    name = "register"
    needs_final_reads = False

    def __init__(self, serializable_reads: bool = False) -> None:
        # Serializable reads skip the read fence; used to prove the checker
        # catches stale reads, never as a safe configuration.
        self.serializable_reads = serializable_reads

    def generator(self, worker: int) -> OpGenerator:
        return RegisterGenerator()

    async def invoke(self, api: NodeApi, op: Op) -> Completion:
        assert op.key is not None
        if op.f == "read":
            return await self._read(api, op.key, self.serializable_reads)
        if op.f == "write":
            return write_completion(await api.put(op.key, str(op.value).encode()))
        expected, new = op.value
        reply = await api.txn({
            "compare": [{"key": op.key, "target": "value", "cmp": "==", "value": str(expected)}],
            "success": [{"op": "put", "key": op.key, "value": str(new)}],
            "failure": [],
        })
        if reply.status == 200:
            if reply.json()["succeeded"]:
                return Completion("ok", op.value)
            return Completion("fail", None, "compare failed")
        completion = write_completion(reply)
        return self.not_applied(op, completion.error or "") if completion.type == "fail" else completion

    def not_applied(self, op: Op, reason: str) -> Completion:
        # The checker reads a failed cas as "the compare was false", which
        # would be a lie for a cas that never reached the state machine; an
        # unknown outcome is the truthful claim the history format allows.
        if op.f == "cas":
            return Completion("info", None, f"{reason} (cas not applied; recorded as info)",
                              in_flight=False)
        return Completion("fail", None, reason)

    @staticmethod
    async def _read(api: NodeApi, key: str, serializable: bool) -> Completion:
        reply = await api.get(key, serializable=serializable)
        if reply.status == 404 and reply.error_code == "key_not_found":
            return Completion("ok", None)
        if reply.status != 200:
            return read_failure(reply)
        text = reply.body.decode("utf-8", errors="replace")
        # Something we never wrote is kept as text so the checker flags it.
        return Completion("ok", int(text) if text.isdigit() else text)

    def final_ops(self, events: Iterable[HistoryEvent]) -> list[Op]:
        keys = sorted({e.key for e in events if not e.is_nemesis and e.key is not None})
        return [Op("read", key, None) for key in keys]

    async def invoke_final(self, api: NodeApi, op: Op) -> Completion:
        assert op.key is not None
        return await self._read(api, op.key, serializable=False)

    def check(self, events: list[HistoryEvent]) -> CheckOutcome:
        model = keyed_register_model()
        ops = history_to_operations(events, "register")
        result = check(ops, model, timeout=CHECK_TIMEOUT_S)
        scope = f"{result.partitions} keys, {len(ops)} operations"
        if result.verdict == "linearizable":
            return CheckOutcome("valid", scope=scope)
        if result.verdict == "unknown":
            return CheckOutcome("unknown", [f"linearizability undecided: {result.detail}"], scope)
        failure = result.failure
        assert failure is not None
        key = failure.partition[0].input[0] if failure.partition else "?"
        anomaly = (f"key {key}: not linearizable; the longest linearizable order found has "
                   f"{len(failure.linearized)} of {len(failure.partition)} operations")
        return CheckOutcome("invalid", [anomaly], scope,
                            failure_text=render_text(failure, model.describe_operation, PICTURE_COLUMNS),
                            failure_svg=render_svg(failure, model.describe_operation, PICTURE_COLUMNS))
