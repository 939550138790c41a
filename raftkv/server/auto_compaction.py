"""Automatic compaction: the leader proposes compacting away all but the
last N revisions, like etcd's revision-mode auto-compaction.

The state machine never reads a clock, so the policy lives here, on the
node: every ``interval`` seconds the leader looks at its revision and, when
the history holds more than ``retention`` revisions past the compact
revision, proposes ``compact(revision - retention)`` through the log like
any write. Followers do nothing (a follower that was leader until a moment
ago may still propose once; the state machine refuses a compaction that is
not ahead of the current one, so a duplicate is harmless).
"""

from __future__ import annotations

import asyncio
import logging
import os

from raftkv.engine import Engine
from raftkv.errors import EngineStoppedError, NoLeaderError, OutcomeUnknownError
from raftkv.kv import commands
from raftkv.kv.state_machine import KVStateMachine

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 5.0


def interval_from_env(environ: dict[str, str] | os._Environ[str] = os.environ) -> float:
    """Seconds between checks: RAFTKV_AUTO_COMPACTION_INTERVAL (tests), else 5."""
    text = environ.get("RAFTKV_AUTO_COMPACTION_INTERVAL")
    if text is None:
        return DEFAULT_INTERVAL
    try:
        interval = float(text)
    except ValueError:
        raise ValueError(f"RAFTKV_AUTO_COMPACTION_INTERVAL must be a number of seconds, got {text!r}") from None
    if not 0.05 <= interval <= 3600:
        raise ValueError(f"RAFTKV_AUTO_COMPACTION_INTERVAL must be from 0.05 to 3600 seconds, got {text!r}")
    return interval


class AutoCompactor:
    def __init__(
        self,
        engine: Engine,
        machine: KVStateMachine,
        retention: int,
        interval: float = DEFAULT_INTERVAL,
        timeout: float = 5.0,
    ) -> None:
        if retention < 1:
            raise ValueError(f"auto-compaction retention must be at least 1 revision, got {retention}")
        self.engine = engine
        self.machine = machine
        self.retention = retention
        self.interval = interval
        self.timeout = timeout

    def due(self) -> int | None:
        """The revision to compact to now, if this node leads and one is due."""
        if self.engine.status().role != "leader":
            return None
        with self.engine.state_lock:
            target = self.machine.revision - self.retention
            behind = self.machine.compact_revision
        return target if target > behind else None

    async def step(self) -> int | None:
        """Propose one compaction if due; the compact revision reached, or None."""
        target = self.due()
        if target is None:
            return None
        try:
            result = await self.engine.propose(commands.encode(commands.compact(target)), self.timeout)
        except (NoLeaderError, OutcomeUnknownError, EngineStoppedError) as exc:
            log.info("auto-compaction to revision %d not done: %s", target, exc)
            return None
        if not result["ok"]:  # another compaction got there first
            return None
        log.info("auto-compaction: history before revision %d dropped", target)
        return target

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.step()
            except Exception:
                log.exception("auto-compaction failed; trying again in %gs", self.interval)
