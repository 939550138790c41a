"""The PySyncObj engine: consensus from the pysyncobj library.

PySyncObj runs its own tick thread (the library forces it), so this module is
the only place where threads meet the asyncio loop: results cross over with
``call_soon_threadsafe`` and the state machine is guarded by a lock that
``state_lock`` hands to the server for local reads.

Durability (see docs/durability.md): PySyncObj writes its journal through a
memory map and never fsyncs it, so acknowledged writes survive a process
crash (kill -9: the page cache survives) but not a power loss.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from pathlib import Path
from typing import Any, Callable

from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, SyncObjConsumer, replicated

from raftkv.engine import Engine, EngineStatus, Member, StateMachine
from raftkv.errors import (
    EngineStoppedError,
    NoLeaderError,
    NotLeaderError,
    OutcomeUnknownError,
    ReadTimeoutError,
)
from raftkv.kv import commands

log = logging.getLogger(__name__)

_NOOP = commands.encode(commands.noop())
# How long a started transfer may take before it is tried again.
_TRANSFER_SETTLE_S = 1.0

# Failures for which PySyncObj guarantees the command was never appended to a
# leader's log (or was overwritten there), so the caller may safely retry.
_NOT_APPLIED = {
    FAIL_REASON.QUEUE_FULL,
    FAIL_REASON.MISSING_LEADER,
    FAIL_REASON.DISCARDED,
    FAIL_REASON.NOT_LEADER,
    FAIL_REASON.REQUEST_DENIED,
}


class _ReplicatedStateMachine(SyncObjConsumer):
    """Adapts a byte-command state machine to PySyncObj's replicated calls."""

    def __init__(self, machine: StateMachine, lock: threading.Lock) -> None:
        super().__init__()
        self._machine = machine
        self._lock = lock

    @replicated
    def apply(self, command: bytes) -> Any:
        with self._lock:
            return self._machine.apply(command)

    # PySyncObj snapshots consumers by calling these from its tick thread.
    def _serialize(self) -> bytes:
        with self._lock:
            return self._machine.snapshot()

    def _deserialize(self, data: bytes) -> None:
        with self._lock:
            self._machine.restore(data)


class PySyncObjEngine(Engine):
    name = "pysyncobj"

    def __init__(
        self,
        node_id: str,
        peers: dict[str, str],
        data_dir: Path,
        machine: StateMachine,
    ) -> None:
        self._node_id = node_id
        self._peers = dict(peers)
        # PySyncObj names nodes by address; we report our own ids.
        self._id_by_addr = {addr: nid for nid, addr in peers.items()}
        self._data_dir = data_dir
        self.state_lock = threading.Lock()
        self._consumer = _ReplicatedStateMachine(machine, self.state_lock)
        self._sync: SyncObj | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tick_calls: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        # Set while no leadership transfer runs. During one, local proposals
        # wait, so the leader's log stops growing and the target can catch up.
        self._not_transferring = asyncio.Event()
        self._not_transferring.set()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._data_dir.mkdir(parents=True, exist_ok=True)
        conf = SyncObjConf(
            journalFile=str(self._data_dir / "pysyncobj.journal"),
            fullDumpFile=str(self._data_dir / "pysyncobj.snapshot"),
            # Batching makes a single write wait ~200 ms; off, ~0.65 ms.
            appendEntriesUseBatch=False,
            # Forking a process that runs an asyncio loop and threads is unsafe.
            useFork=False,
            # Fail fast with "no leader" instead of queueing commands forever.
            commandsWaitLeader=False,
            raftMinTimeout=0.4,
            raftMaxTimeout=0.8,
            appendEntriesPeriod=0.05,
            connectionRetryTime=0.5,
            connectionTimeout=1.5,
            logCompactionMinEntries=50_000,
            logCompactionMinTime=300,
        )
        self_addr = self._peers[self._node_id]
        others = [addr for nid, addr in self._peers.items() if nid != self._node_id]
        # The constructor binds sockets and replays the journal: keep it off the loop.
        self._sync = await asyncio.to_thread(
            SyncObj, self_addr, others, conf, [self._consumer]
        )
        self._sync.addOnTickCallback(self._run_in_tick_thread)

    def _run_in_tick_thread(self) -> None:
        # PySyncObj's control calls are not thread-safe: queue them for its thread.
        while True:
            try:
                call = self._tick_calls.get_nowait()
            except queue.Empty:
                return
            call()

    async def stop(self) -> None:
        if self._sync is not None:
            sync, self._sync = self._sync, None
            await asyncio.to_thread(sync.destroy_synchronous)

    def _require_running(self) -> SyncObj:
        if self._sync is None:
            raise EngineStoppedError("the engine is not running")
        return self._sync

    async def propose(self, command: bytes, timeout: float) -> Any:
        sync = self._require_running()
        if not self._not_transferring.is_set():
            loop = asyncio.get_running_loop()
            started = loop.time()
            try:
                await asyncio.wait_for(self._not_transferring.wait(), timeout)
            except TimeoutError:
                raise NoLeaderError("a leadership transfer is in progress; nothing was applied") from None
            timeout = max(0.001, timeout - (loop.time() - started))
        if sync._getLeader() is None:
            raise NoLeaderError("no leader is known; nothing was applied")
        loop = self._loop
        assert loop is not None
        future: asyncio.Future[Any] = loop.create_future()

        def on_result(result: Any, error: int) -> None:  # PySyncObj's thread
            loop.call_soon_threadsafe(_settle, future, result, error)

        self._consumer.apply(command, callback=on_result)
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise OutcomeUnknownError(
                f"no result within {timeout:g}s"
            ) from None

    async def read_fence(self, timeout: float) -> None:
        # PySyncObj has no ReadIndex: a no-op through the log is the fence.
        try:
            await self.propose(_NOOP, timeout)
        except OutcomeUnknownError:
            raise ReadTimeoutError(
                f"could not confirm the read with a quorum within {timeout:g}s"
            ) from None

    @property
    def failure(self) -> str | None:
        sync = self._sync
        return None if sync is None else _tick_thread_failure(sync)

    def status(self) -> EngineStatus:
        sync = self._sync
        members = [Member(id=nid, peer_addr=addr) for nid, addr in self._peers.items()]
        if sync is None:
            return EngineStatus(
                self._node_id, "unknown", 0, None, 0, 0, self.name, members,
                not_ready_reason="the engine is not running",
            )
        leader = sync._getLeader()
        leader_id = self._id_by_addr.get(leader.id if leader is not None else "")
        if leader_id == self._node_id:
            role = "leader"
        elif leader_id is not None:
            role = "follower"
        else:
            role = "candidate"
        commit, applied = sync.raftCommitIndex, sync.raftLastApplied
        failure = _tick_thread_failure(sync)
        not_ready: str | None = None
        if failure is not None:
            role, leader_id, not_ready = "failed", None, f"the engine failed: {failure}"
        elif leader_id is None:
            not_ready = "no leader is known"
        elif applied < commit:
            not_ready = f"catching up: applied {applied} of {commit}"
        return EngineStatus(
            node_id=self._node_id,
            role=role,
            term=sync.raftCurrentTerm,
            leader_id=leader_id,
            commit_index=commit,
            applied_index=applied,
            engine=self.name,
            members=members,
            failure=failure,
            not_ready_reason=not_ready,
        )

    async def transfer_leadership(self, target_id: str | None, timeout: float) -> None:
        sync = self._require_running()
        if target_id is not None and target_id not in self._peers:
            raise ValueError(f"unknown node id {target_id!r}")
        status = self.status()
        if status.role != "leader":
            # PySyncObj can only start a transfer on the leader.
            raise NotLeaderError(
                f"this node is not the leader; send the request to {status.leader_id}",
                status.leader_id,
            )
        self._not_transferring.clear()
        try:
            await self._transfer(sync, target_id, timeout)
        finally:
            self._not_transferring.set()

    async def _transfer(self, sync: SyncObj, target_id: str | None, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        target = self._peers[target_id] if target_id is not None else None
        # PySyncObj refuses (REQUEST_DENIED) unless the target has every entry
        # at that instant, and a target that campaigns while followers'
        # forwarded writes still grow the leader's log can lose: keep asking
        # until leadership has moved or time is up.
        while True:
            error = await self._start_transfer(sync, target)
            if error == FAIL_REASON.SUCCESS:
                settle = min(deadline, loop.time() + _TRANSFER_SETTLE_S)
                while loop.time() < settle:
                    if self._leadership_moved(target_id):
                        return
                    await asyncio.sleep(0.01)
            elif self._leadership_moved(target_id):
                return
            elif error == FAIL_REASON.NOT_LEADER:
                raise NotLeaderError("this node stopped being the leader", self.status().leader_id)
            if loop.time() >= deadline:
                raise OutcomeUnknownError(
                    f"leadership did not move in time (last answer: {_reason(error)})"
                )
            await asyncio.sleep(0.005)

    def _leadership_moved(self, target_id: str | None) -> bool:
        leader = self.status().leader_id
        return leader is not None and leader != self._node_id and target_id in (None, leader)

    async def _start_transfer(self, sync: SyncObj, target: str | None) -> int:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()

        def on_result(result: Any, error: int) -> None:  # PySyncObj's thread
            loop.call_soon_threadsafe(future.set_result, error)

        self._tick_calls.put(lambda: sync.transferLeadership(node=target, callback=on_result))
        return await future


def _settle(future: asyncio.Future[Any], result: Any, error: int) -> None:
    if future.done():  # the caller timed out already
        return
    if error == FAIL_REASON.SUCCESS:
        future.set_result(result)
    elif error in _NOT_APPLIED:
        future.set_exception(NoLeaderError(f"not applied ({_reason(error)}); safe to retry"))
    else:
        future.set_exception(OutcomeUnknownError(f"PySyncObj failed with {_reason(error)}"))


def _reason(error: int) -> str:
    for name, value in vars(FAIL_REASON).items():
        if value == error and name.isupper():
            return name.lower()
    return str(error)


def _tick_thread_failure(sync: SyncObj) -> str | None:
    """PySyncObj logs and retries a failing tick forever; the one failure it
    cannot get over is its tick thread ending (e.g. its transport could not
    start), after which the node does nothing. It has no public accessor."""
    thread = getattr(sync, "_SyncObj__thread", None)
    if thread is None or thread.is_alive():
        return None
    return "PySyncObj's tick thread has ended; see the node's log"
