"""A probe of event-loop pauses: a task that asks to wake every few
milliseconds and records how late it woke. A late wake-up means something
held the loop (or the GIL) that long: the figure behind the rule "no
event-loop pause over 10 ms" (snapshots at any size, docs/storage.md).

Shown in /v1/status as ``loop_lag``: the longest pause seen and how many
went past 10, 50 and 100 ms since the node started, and when the last 20
pauses over 10 ms happened (unix time, ms). On a busy machine the
kernel's scheduler adds pauses of its own, so read the counts next to the
machine's load.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from raftkv.server.http_api import HttpApi

PROBE_INTERVAL = 0.005
THRESHOLDS_MS = (10, 50, 100)
RECENT_KEPT = 20


class LoopLagProbe:
    def __init__(self) -> None:
        self.max_ms = 0.0
        self.over = dict.fromkeys(THRESHOLDS_MS, 0)
        self.samples = 0
        # (unix time, ms) of the latest pauses over 10 ms, to line up with logs.
        self.recent: deque[tuple[float, float]] = deque(maxlen=RECENT_KEPT)

    def record(self, lag_ms: float) -> None:
        self.samples += 1
        if lag_ms > self.max_ms:
            self.max_ms = lag_ms
        if lag_ms > THRESHOLDS_MS[0]:
            self.recent.append((round(time.time(), 3), round(lag_ms, 1)))
        for threshold in THRESHOLDS_MS:
            if lag_ms > threshold:
                self.over[threshold] += 1

    async def run(self) -> None:
        clock = time.perf_counter
        while True:
            start = clock()
            await asyncio.sleep(PROBE_INTERVAL)
            self.record((clock() - start - PROBE_INTERVAL) * 1000)

    def status(self) -> dict[str, Any]:
        return {
            "max_ms": round(self.max_ms, 3),
            **{f"over_{t}ms": n for t, n in self.over.items()},
            "samples": self.samples,
            "recent": [list(pause) for pause in self.recent],
        }


def install(api: HttpApi) -> asyncio.Task[None]:
    """Start the probe on the running loop and show it in /v1/status."""
    probe = LoopLagProbe()
    api.status_sections["loop_lag"] = probe.status
    return asyncio.create_task(probe.run(), name="loop lag probe")
