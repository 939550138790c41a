"""The lease clock: the leader decides when a lease ran out and proposes
its expiry as a logged command (the state machine never reads a clock).

Every node keeps a deadline per lease, set to ``now + ttl`` (monotonic
clock) when it applies the lease's grant or keepalive. Only the leader acts
on them. A node that becomes leader (a new term) first moves every deadline
to ``now + ttl``, as etcd's lessor Promote does, so a new leader never
expires a lease earlier than the old leader could have: whatever the old
leader last applied happened before this election. The price is that a
lease outlives its TTL by up to one TTL per leader change (etcd's "TTL
reset" issue); docs/leases.md argues why that side is the safe one.

``lease_expire`` names the stamp of the grant/keepalive the deadline came
from; a keepalive committed before the expiry changes the stamp and the
state machine refuses the expiry, so a client that was told "renewed" keeps
its lease.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

from raftkv.engine import Engine
from raftkv.errors import EngineStoppedError, NoLeaderError, OutcomeUnknownError
from raftkv.kv import commands, leases
from raftkv.kv.state_machine import Change, KVStateMachine

log = logging.getLogger(__name__)

# How often the leader looks for expired leases: expiry comes at most this
# late (plus the commit), which is small beside a TTL of whole seconds.
CHECK_INTERVAL = 0.1
# Expiries in flight at once: a burst of expiring leases cannot flood the log.
MAX_IN_FLIGHT = 64
PROPOSE_TIMEOUT = 5.0


class LeaseKeeper:
    def __init__(
        self,
        engine: Engine,
        machine: KVStateMachine,
        clock: Callable[[], float] = time.monotonic,
        interval: float = CHECK_INTERVAL,
    ) -> None:
        self._engine = engine
        self._machine = machine
        self._clock = clock
        self._interval = interval
        # lease id -> (deadline, ttl, stamp). The PySyncObj engine applies on
        # its own thread, so the listeners and the loop share it under a lock.
        self._deadlines: dict[int, tuple[float, int, int]] = {}
        self._lock = threading.Lock()
        self._leading_term: int | None = None  # the term we promoted in
        self._in_flight: set[int] = set()
        self.expired = 0  # leases this node expired (tests, metrics)
        machine.leases.add_listener(self._on_lease_event)
        machine.add_change_listener(self._on_changes)
        self._reload()

    # ---- told by the state machine (on the applying thread) ---------------

    def _on_lease_event(self, event: leases.LeaseEvent) -> None:
        lease_id, ttl, stamp = event
        with self._lock:
            if ttl == 0:
                self._deadlines.pop(lease_id, None)
            else:
                self._deadlines[lease_id] = (self._clock() + ttl, ttl, stamp)

    def _on_changes(self, changes: list[Change] | None) -> None:
        if changes is None:  # a snapshot replaced the state
            self._reload()

    def _reload(self) -> None:
        txn = self._machine.store.read()
        try:
            found = list(leases.all_leases(txn))
        finally:
            txn.close()
        now = self._clock()
        with self._lock:
            self._deadlines = {lease_id: (now + ttl, ttl, stamp) for lease_id, ttl, stamp in found}

    # ---- reads ---------------------------------------------------------------

    def remaining(self, lease_id: int) -> float | None:
        """Seconds until this node would expire the lease (exact on the
        leader; on a follower an estimate from when it applied the last
        keepalive); None when it knows no such lease."""
        with self._lock:
            found = self._deadlines.get(lease_id)
        if found is None:
            return None
        return max(0.0, found[0] - self._clock())

    # ---- the leader's loop -------------------------------------------------------

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                self.check()
            except Exception:  # the loop must outlive a bug in one round
                log.exception("lease keeper round failed")

    def check(self) -> None:
        """One round: promote if we just became leader, then expire what ran out."""
        status = self._engine.status()
        if status.role != "leader":
            self._leading_term = None
            return
        now = self._clock()
        if self._leading_term != status.term:
            self._leading_term = status.term
            with self._lock:
                self._deadlines = {
                    lease_id: (now + ttl, ttl, stamp) for lease_id, (_, ttl, stamp) in self._deadlines.items()
                }
            return
        with self._lock:
            due = [
                (lease_id, stamp)
                for lease_id, (deadline, _ttl, stamp) in self._deadlines.items()
                if deadline <= now and lease_id not in self._in_flight
            ]
        for lease_id, stamp in due[: max(0, MAX_IN_FLIGHT - len(self._in_flight))]:
            self._in_flight.add(lease_id)
            asyncio.get_running_loop().create_task(self._expire(lease_id, stamp), name=f"expire lease {lease_id:x}")

    async def _expire(self, lease_id: int, stamp: int) -> None:
        try:
            result = await self._engine.propose(commands.encode(leases.expire(lease_id, stamp)), PROPOSE_TIMEOUT)
            if result.get("expired"):
                self.expired += 1
                log.info("lease %s expired; %d key(s) deleted", leases.format_id(lease_id), result.get("deleted", 0))
        except (NoLeaderError, OutcomeUnknownError, EngineStoppedError) as exc:
            # The next round tries again if this node still leads and the
            # lease is still due; an expiry applied twice is refused.
            log.info("expiring lease %s: %s", leases.format_id(lease_id), exc)
        finally:
            self._in_flight.discard(lease_id)
