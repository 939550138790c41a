"""`set`: unique adds, one key per element under a prefix, and a final
listing of the prefix. Every acknowledged add must be in the final read and
nothing may appear that was never added (see `checker/set_checker.py`)."""
from __future__ import annotations

import random
from typing import Iterable

from jepsen_style.checker.set_checker import check_set
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
from jepsen_style.workloads.node_api import NodeApi, UnexpectedReply

SET_NAME = "jepsen/set/"
# Room for each worker's elements: worker w adds w * STRIDE + 0, 1, 2, ...
STRIDE = 1_000_000


class SetGenerator(OpGenerator):
    def __init__(self, worker: int) -> None:
        self.next_element = worker * STRIDE

    def next_op(self, rng: random.Random) -> Op:
        element = self.next_element
        self.next_element += 1
        return Op("add", SET_NAME, element)


def element_key(element: int) -> str:
    return f"{SET_NAME}{element:012d}"


class SetWorkload(Workload):
    name = "set"

    def generator(self, worker: int) -> OpGenerator:
        return SetGenerator(worker)

    async def invoke(self, api: NodeApi, op: Op) -> Completion:
        if op.f == "add":
            return write_completion(await api.put(element_key(op.value), b"1"))
        try:
            keys = await api.list_keys(SET_NAME)
        except UnexpectedReply as error:
            return read_failure(error.reply)
        elements: list[int | str] = []
        for key in keys:
            suffix = key[len(SET_NAME):]
            elements.append(int(suffix) if suffix.isdigit() else key)
        return Completion("ok", elements)

    def final_ops(self, events: Iterable[HistoryEvent]) -> list[Op]:
        return [Op("read", SET_NAME, None)]

    def check(self, events: list[HistoryEvent]) -> CheckOutcome:
        result = check_set(events)
        return CheckOutcome("valid" if result.valid else "invalid", list(result.anomalies),
                            f"{result.checked} set")
