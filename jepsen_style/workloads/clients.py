"""Client workers: invoke operations at a bounded rate and record each
invocation and its completion."""
from __future__ import annotations

import asyncio
import random
import time

from jepsen_style.workloads.base import Completion, Op, Workload
from jepsen_style.workloads.node_api import NodeApi, OutcomeUnknown, RequestNotSent
from jepsen_style.workloads.recorder import HistoryRecorder


class ProcessNumbers:
    """Jepsen's convention: a client whose operation ended with an unknown
    outcome continues as a new process, because the old one may still be
    "in" that operation forever."""

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency

    def successor(self, process: int) -> int:
        return process + self.concurrency


async def perform(workload: Workload, api: NodeApi, op: Op, process: int,
                  recorder: HistoryRecorder, final: bool = False) -> Completion:
    """Invoke `op` as `process`, recording the invoke and the completion."""
    node = api.base_url.rsplit("/", 1)[-1]
    recorder.record(process, "invoke", op.f, op.key, op.value, node=node)
    try:
        if final:
            completion = await workload.invoke_final(api, op)
        else:
            completion = await workload.invoke(api, op)
    except RequestNotSent as error:
        completion = workload.not_applied(op, f"not sent: {error}")
    except OutcomeUnknown as error:
        completion = Completion("info", None, str(error))
    # Reads report what they saw; other operations repeat their argument.
    value = completion.value if op.f == "read" else op.value
    recorder.record(process, completion.type, op.f, op.key, value, node=node, error=completion.error)
    return completion


async def run_client(worker: int, workload: Workload, api: NodeApi, recorder: HistoryRecorder,
                     rng: random.Random, interval_s: float, stop_at: float,
                     numbers: ProcessNumbers) -> None:
    """Invoke operations until `stop_at` (monotonic), starting one about
    every `interval_s` (jittered so clients do not march in step)."""
    generator = workload.generator(worker)
    process = worker
    while time.monotonic() < stop_at:
        started = time.monotonic()
        completion = await perform(workload, api, generator.next_op(rng), process, recorder)
        if completion.type == "info" and completion.in_flight:
            process = numbers.successor(process)
        pause = interval_s * rng.uniform(0.5, 1.5) - (time.monotonic() - started)
        if pause > 0:
            await asyncio.sleep(min(pause, max(0.0, stop_at - time.monotonic())))
