"""The watch hub: who watches what, catch-up from history, live fan-out.

etcd's design (server/mvcc/watchable_store.go) in small: a watcher starts
*unsynced* and its own stream task reads the MVCC history from its next
revision in chunks; once a chunk reaches the store's committed revision the
watcher joins the *synced* index and from then on gets each committed
batch from the state machine's change feed. The feed runs on the apply path
(KVStateMachine.add_change_listener), so dispatching only appends to
per-watcher queues and sets an asyncio.Event: the apply path never waits on
a watcher. A queue that outgrows its bound ends that watcher's stream with
the revision to resume from (``watcher_too_slow``).

Every registration keeps ``next_revision``, the first revision it has not
been given, and takes only events at or above it. That one rule makes the
hand-over from history to live events exact on both engines: the native
engine applies on the loop, so a catch-up read and its registration see no
batch in between; PySyncObj applies on its own thread and its batches reach
the loop later, possibly covering revisions the catch-up already read, which
the rule drops.

A snapshot restore replaces the state at once: synced watchers go back to
catching up from their next revision (a 410-style ``compacted`` end if the
new state's history no longer reaches back that far).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from time import monotonic
from typing import Any

from raftkv.config import env_setting
from raftkv.engine import Engine
from raftkv.kv import mvcc
from raftkv.kv.mvcc import META_COMPACT_REVISION, META_REVISION
from raftkv.kv.state_machine import Change, KVStateMachine
from raftkv.watch.events import Event

log = logging.getLogger(__name__)

# A stream whose node has had no leader this long ends with no_leader (a few
# election timeouts of either engine: 0.3-0.6 s native, 0.4-0.8 s PySyncObj),
# so its client reconnects to a node that has one.
NO_LEADER_AFTER = 3.0
# How often the hub looks at the engine's leader and health.
_MONITOR_INTERVAL = 0.25
# Revisions read from history per catch-up step (one store read each).
CATCH_UP_REVISIONS = 256
# After a slow watcher is ended, how long its stream may take to flush what
# it holds and the end message before the connection is cut.
SLOW_CLOSE_GRACE = 10.0


@dataclass(frozen=True)
class QueueLimits:
    """How far one watcher may fall behind before it is ended."""

    max_events: int = 10_000
    max_bytes: int = 16 * 1024 * 1024

    @classmethod
    def from_env(cls) -> "QueueLimits":
        """RAFTKV_WATCH_QUEUE_EVENTS / RAFTKV_WATCH_QUEUE_BYTES override the defaults."""
        events = env_setting("WATCH_QUEUE_EVENTS")
        size = env_setting("WATCH_QUEUE_BYTES")
        return cls(
            max_events=int(events) if events else cls.max_events,
            max_bytes=int(size) if size else cls.max_bytes,
        )


class Registration:
    """Something told of the committed writes to a key or a prefix."""

    def __init__(self, key: str | None, prefix: str | None, next_revision: int) -> None:
        if (key is None) == (prefix is None):
            raise ValueError("give exactly one of key and prefix")
        self.key = key
        self.prefix = prefix
        self.next_revision = next_revision

    def deliver(self, events: list[Event]) -> bool:
        """Take this batch's matching events; False: unregister me."""
        raise NotImplementedError

    def state_replaced(self) -> bool:
        """The whole state was replaced (snapshot restore); False: unregister me."""
        raise NotImplementedError


class Watcher(Registration):
    """One watch stream's registration and queue (its stream task drains it)."""

    def __init__(
        self,
        watch_id: int,
        key: str | None,
        prefix: str | None,
        start_revision: int,
        prev_kv: bool,
        no_put: bool,
        no_delete: bool,
        limits: QueueLimits,
    ) -> None:
        super().__init__(key, prefix, start_revision)
        self.id = watch_id
        self.start_revision = start_revision
        self.prev_kv = prev_kv
        self.no_put = no_put
        self.no_delete = no_delete
        self.limits = limits
        self.synced = False
        self.caught_up_to = 0  # the committed revision when it joined the synced index
        self.queue: deque[Event] = deque()
        self.queued_bytes = 0
        self.end: dict[str, Any] | None = None  # why the stream ends once the queue is written
        self.wakeup = asyncio.Event()
        self.progress_requested = False
        self.abort: Callable[[], None] | None = None  # cuts the connection (set by the stream)
        self.closed = False  # the stream finished

    def _wanted(self, event: Event) -> bool:
        if event.record is None:
            return not self.no_delete
        return not self.no_put

    def matches(self, key: str) -> bool:
        return key == self.key if self.key is not None else key.startswith(self.prefix)  # type: ignore[arg-type]

    def deliver(self, events: list[Event]) -> bool:
        if self.end is not None:
            return False
        limits = self.limits
        for event in events:
            if event.revision < self.next_revision:
                continue  # already read from history (see the module doc)
            if not self._wanted(event):
                continue
            if len(self.queue) >= limits.max_events or self.queued_bytes + event.size > limits.max_bytes:
                self._overflow(event.revision)
                return False
            self.queue.append(event)
            self.queued_bytes += event.size
        self.next_revision = max(self.next_revision, events[-1].revision + 1)
        self.wakeup.set()
        return True

    def _overflow(self, revision: int) -> None:
        # Never end inside a revision: drop the queued part of this one, so
        # a client resuming at `revision` gets the whole transaction once.
        while self.queue and self.queue[-1].revision >= revision:
            self.queued_bytes -= self.queue.pop().size
        self.finish(
            "watcher_too_slow",
            f"this watcher fell more than {self.limits.max_events} events or "
            f"{self.limits.max_bytes} bytes behind; resume with start_revision={revision}",
            resume_revision=revision,
        )
        # Its stream may be stuck writing to a client that reads nothing.
        asyncio.get_running_loop().call_later(SLOW_CLOSE_GRACE, self._cut_if_open)

    def _cut_if_open(self) -> None:
        if not self.closed and self.abort is not None:
            self.abort()

    def state_replaced(self) -> bool:
        self.synced = False
        self.wakeup.set()
        return False  # back to catching up, outside the index

    def add_history(self, events: list[Event], next_revision: int) -> None:
        for event in events:
            if self.matches(event.key) and self._wanted(event):
                self.queue.append(event)
                self.queued_bytes += event.size
        self.next_revision = next_revision

    def take(self) -> list[Event]:
        events = list(self.queue)
        self.queue.clear()
        self.queued_bytes = 0
        return events

    def finish(self, code: str, message: str, **extra: Any) -> None:
        """End the stream after what is queued (the first reason wins)."""
        if self.end is None:
            self.end = {"code": code, "message": message, **extra}
            self.wakeup.set()


class ChangeWaiter(Registration):
    """A blocking read's wait for the first write after a revision."""

    def __init__(self, key: str | None, prefix: str | None, after_revision: int) -> None:
        super().__init__(key, prefix, after_revision + 1)
        self.changed = asyncio.Event()

    def deliver(self, events: list[Event]) -> bool:
        if events[-1].revision < self.next_revision:
            return True
        self.changed.set()
        return False

    def state_replaced(self) -> bool:
        self.changed.set()
        return False


class WatchHub:
    """All watches of one node. Create and use it on the node's loop."""

    def __init__(
        self,
        engine: Engine,
        machine: KVStateMachine,
        limits: QueueLimits | None = None,
        no_leader_after: float = NO_LEADER_AFTER,
    ) -> None:
        self.engine = engine
        self.machine = machine
        self.limits = limits if limits is not None else QueueLimits.from_env()
        self.no_leader_after = no_leader_after
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._by_key: dict[str, dict[Registration, None]] = {}
        self._by_prefix: dict[str, dict[Registration, None]] = {}
        self._watchers: dict[int, Watcher] = {}
        self._ids = itertools.count(1)
        with engine.state_lock:
            # The last revision whose batch went to the synced registrations.
            self.dispatched_revision = machine.revision
        self.closed = False
        self._monitor: asyncio.Task[None] | None = None
        machine.add_change_listener(self._on_changes)

    # -- the change feed (apply path: only enqueue) -------------------------

    def _on_changes(self, changes: list[Change] | None) -> None:
        revision = self.machine.revision
        if threading.get_ident() == self._loop_thread:
            self._dispatch(changes, revision)
            return
        try:
            self._loop.call_soon_threadsafe(self._dispatch, changes, revision)
        except RuntimeError:
            pass  # the loop is closed: the node is stopping

    def _dispatch(self, changes: list[Change] | None, revision: int) -> None:
        if changes is None:
            for table in (self._by_key, self._by_prefix):
                for regs in table.values():
                    for reg in regs:
                        reg.state_replaced()
                table.clear()
            self.dispatched_revision = revision
            return
        hits: dict[Registration, list[Event]] = {}
        by_key, by_prefix = self._by_key, self._by_prefix
        for rev, sub, key, record in changes:
            event: Event | None = None
            regs = by_key.get(key)
            if regs:
                event = Event(rev, sub, key, record)
                for reg in regs:
                    hits.setdefault(reg, []).append(event)
            for prefix, regs in by_prefix.items():
                if key.startswith(prefix):
                    if event is None:
                        event = Event(rev, sub, key, record)
                    for reg in regs:
                        hits.setdefault(reg, []).append(event)
        for reg, events in hits.items():
            if not reg.deliver(events):
                self._unindex(reg)
        self.dispatched_revision = revision

    def _index(self, reg: Registration) -> None:
        if reg.key is not None:
            self._by_key.setdefault(reg.key, {})[reg] = None
        else:
            self._by_prefix.setdefault(reg.prefix, {})[reg] = None  # type: ignore[arg-type]

    def _unindex(self, reg: Registration) -> None:
        table, name = (self._by_key, reg.key) if reg.key is not None else (self._by_prefix, reg.prefix)
        regs = table.get(name)  # type: ignore[arg-type]
        if regs is not None:
            regs.pop(reg, None)
            if not regs:
                del table[name]  # type: ignore[arg-type]

    # -- watchers -------------------------------------------------------------

    def watch(
        self,
        key: str | None,
        prefix: str | None,
        start_revision: int,
        prev_kv: bool = False,
        no_put: bool = False,
        no_delete: bool = False,
    ) -> Watcher:
        """A new watcher from ``start_revision`` (inclusive); it catches up
        as its stream calls :meth:`catch_up`."""
        self._start_monitor()
        watcher = Watcher(next(self._ids), key, prefix, start_revision, prev_kv, no_put, no_delete, self.limits)
        self._watchers[watcher.id] = watcher
        return watcher

    def get(self, watch_id: int) -> Watcher | None:
        return self._watchers.get(watch_id)

    def remove(self, watcher: Watcher) -> None:
        """The stream is done (ended, or its client went away)."""
        watcher.closed = True
        if watcher.synced:
            self._unindex(watcher)
        self._watchers.pop(watcher.id, None)

    @property
    def watcher_count(self) -> int:
        return len(self._watchers)

    def delivered_through(self, watcher: Watcher) -> int:
        """The revision up to which every event for ``watcher`` is in its
        queue now (so, once the queue is written, delivered)."""
        if watcher.synced:
            return max(self.dispatched_revision, watcher.caught_up_to)
        return watcher.next_revision - 1

    def resume_revision(self, watcher: Watcher) -> int:
        """Where a client resumes if the stream ended now, after its queue."""
        return self.delivered_through(watcher) + 1 if watcher.synced else watcher.next_revision

    def catch_up(self, watcher: Watcher) -> None:
        """Read the next chunk of ``watcher``'s history into its queue; join
        the synced index once the chunk reaches the committed revision."""
        if watcher.synced or watcher.end is not None:
            return
        events: list[Event] = []
        with self.engine.state_lock:
            txn = self.machine.store.read()
            try:
                committed = mvcc.read_int(txn, META_REVISION)
                compacted = mvcc.read_int(txn, META_COMPACT_REVISION)
                start = watcher.next_revision
                if start < compacted:
                    watcher.finish(
                        "compacted",
                        f"revision {start} is compacted: history before revision {compacted} is gone; "
                        "read the current state and watch from its revision + 1",
                        compact_revision=compacted,
                        revision=committed,
                    )
                    return
                stop = start + CATCH_UP_REVISIONS
                if start <= committed:
                    for rk, data in txn.scan("history", mvcc.rev_key(start, 0), mvcc.rev_key(stop, 0)):
                        key, value, create_revision, version = mvcc.unpack(data)
                        revision, sub = mvcc.parse_rev_key(rk)
                        record = None if value is None else (value, create_revision, revision, version)
                        events.append(Event(revision, sub, key, record))
            finally:
                txn.close()
            if stop <= committed:
                watcher.add_history(events, stop)
                return
            watcher.add_history(events, max(start, committed + 1))
            watcher.synced = True
            watcher.caught_up_to = committed
            self._index(watcher)

    # -- blocking reads -------------------------------------------------------

    async def wait_for_change(self, key: str | None, prefix: str | None, after_revision: int, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a write to ``key`` (or under
        ``prefix``) at a revision above ``after_revision``, which the caller
        read just before, with no await in between. True: one came (or the
        state was replaced, or the node is stopping: read again)."""
        if self.closed:
            return False
        waiter = ChangeWaiter(key, prefix, after_revision)
        self._index(waiter)
        try:
            async with asyncio.timeout(timeout):
                await waiter.changed.wait()
            return True
        except TimeoutError:
            return False
        finally:
            self._unindex(waiter)

    # -- leader monitor and shutdown ------------------------------------------

    def _start_monitor(self) -> None:
        if self._monitor is None and not self.closed:
            self._monitor = asyncio.create_task(self._watch_leader(), name="watch leader monitor")

    async def _watch_leader(self) -> None:
        leaderless_since: float | None = None
        while True:
            await asyncio.sleep(_MONITOR_INTERVAL)
            if not self._watchers:
                leaderless_since = None
                continue
            status = self.engine.status()
            if status.failure is not None:
                self._end_all("engine_failed", f"this node's engine failed ({status.failure}); watch another node")
                continue
            if status.leader_id is not None:
                leaderless_since = None
                continue
            now = monotonic()
            if leaderless_since is None:
                leaderless_since = now
            elif now - leaderless_since >= self.no_leader_after:
                self._end_all(
                    "no_leader",
                    f"this node has had no leader for {now - leaderless_since:.1f} s; "
                    "resume on another node from resume_revision",
                )

    def _end_all(self, code: str, message: str) -> None:
        for watcher in list(self._watchers.values()):
            if watcher.end is None:
                watcher.finish(code, message, resume_revision=self.resume_revision(watcher))
                if watcher.synced:
                    self._unindex(watcher)
                    watcher.synced = False

    def close(self) -> None:
        """End every stream (``shutting_down``) and wake every blocking read."""
        self.closed = True
        if self._monitor is not None:
            self._monitor.cancel()
        self._end_all("shutting_down", "this node is stopping; resume on another node from resume_revision")
        for table in (self._by_key, self._by_prefix):
            for regs in table.values():
                for reg in regs:
                    reg.state_replaced()
            table.clear()
