"""A deterministic asyncio event loop on a virtual clock, and executors that
run "blocking" calls on it.

Every simulated node's RaftDriver, ticker and client runs as ordinary
asyncio code on ONE loop of this class. asyncio already runs ready
callbacks in FIFO order and timers in order of their deadline; the only
sources of nondeterminism left are the wall clock and the selector. Here
``time()`` is a virtual clock, and waiting for I/O (``select(timeout)``)
just moves that clock to the next timer: there is no I/O, so a run is a pure
function of the callbacks scheduled, and a simulated minute takes as long
as its callbacks take to run.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any


class SimDeadlock(RuntimeError):
    """The loop would wait forever: nothing is ready and no timer is set."""


class _VirtualSelector:
    """What BaseEventLoop._run_once needs of a selector: select() only."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[Any]:
        if timeout is None:
            raise SimDeadlock("the simulated loop has nothing to run and no timer set")
        if timeout > 0:
            self._loop.advance(timeout)
        return []

    def close(self) -> None:
        pass


class VirtualTimeLoop(asyncio.BaseEventLoop):
    """An event loop whose clock only moves when every callback has run."""

    def __init__(self) -> None:
        super().__init__()
        self._now = 0.0
        self._selector = _VirtualSelector(self)
        # asyncio fires timers due within this of now; virtual time is exact.
        self._clock_resolution = 1e-9

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds

    # BaseEventLoop hooks for I/O: there is none.
    def _process_events(self, event_list: list[Any]) -> None:
        pass

    def _write_to_self(self) -> None:
        # call_soon_threadsafe wakes a selector blocked in another thread;
        # everything here runs on the loop's own thread, so the FIFO append
        # that call_soon_threadsafe already did is all it takes.
        pass


class SimExecutor(Executor):
    """One simulated worker thread: calls run in submission order, each after
    a seeded virtual delay, on the loop itself.

    ``loop.run_in_executor(executor, fn)`` -- how RaftDriver reaches its WAL
    and snapshot threads -- then behaves like a thread whose work takes a
    random time, deterministically. ``crash()`` drops the calls not yet run,
    as a power cut drops a thread's unfinished work.
    """

    def __init__(self, loop: VirtualTimeLoop, rng: random.Random, max_delay: float) -> None:
        self._loop = loop
        self._rng = rng
        self._max_delay = max_delay
        self._busy_until = 0.0
        self._pending: list[tuple[Future[Any], asyncio.TimerHandle]] = []
        self.calls = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        loop = self._loop
        delay = self._rng.uniform(0, self._max_delay) if self._max_delay else 0.0
        # One thread: a call starts after the previous one finished.
        start = max(loop.time(), self._busy_until) + delay
        self._busy_until = start
        handle = loop.call_at(start, self._run, future, fn, args, kwargs)
        self._pending.append((future, handle))
        return future

    def _run(self, future: Future[Any], fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self._pending = [(f, h) for f, h in self._pending if f is not future]
        if not future.set_running_or_notify_cancel():
            return
        self.calls += 1
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            future.set_exception(exc)
        else:
            future.set_result(result)

    def crash(self) -> None:
        pending, self._pending = self._pending, []
        for future, handle in pending:
            handle.cancel()
            future.cancel()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if cancel_futures:
            self.crash()


def run_deterministically(main: Callable[[], Any]) -> Any:
    """Run the coroutine ``main()`` on a fresh VirtualTimeLoop and close it."""
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(main())
    finally:
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task.cancel()
        if tasks:
            loop.run_until_complete(asyncio.wait(tasks, timeout=1.0))
        loop.close()


__all__ = ["SimDeadlock", "SimExecutor", "VirtualTimeLoop", "run_deterministically"]
