"""`watch`: writers put unique values on a few keys under a prefix (and
sometimes delete one) while watchers stream the prefix from revision 1 over
SSE, reconnecting to the next node with Last-Event-ID whenever a stream
breaks or ends (killed node, no leader, partition). After the run the
committed history is read revision by revision, and each watcher must have
received exactly it: no gap, no duplicate, no reorder
(`checker/watch_checker.py`).

The watchers read raw SSE, not the Python client's `Watch` iterator, which
drops anything below its resume point: a server that sent an event twice
across a reconnect must show up here.
"""
from __future__ import annotations

import asyncio
import random
from typing import Any, Iterable

import aiohttp
import orjson

from jepsen_style.checker.watch_checker import HISTORY_KEY, WATCHER_KEY_PREFIX, check_watch
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

PREFIX = "jepsen/watch/"
KEYS = 4
WATCHERS = 3
DELETE_CHANCE = 0.1
# Watchers ask for progress this often, so a quiet stream still moves its
# resume point and a silent one is noticed.
PROGRESS_INTERVAL_S = 1.0
# No line for this long: the node or the path to it is gone; try the next.
SILENCE_S = 5.0
# How long a watcher may take to reach the final revision after the run.
CATCH_UP_S = 30.0

Version = tuple[int, int, Any]  # mod_revision, create_revision, value


class WatchGenerator(OpGenerator):
    def __init__(self, worker: int) -> None:
        self.worker = worker
        self.count = 0

    def next_op(self, rng: random.Random) -> Op:
        key = f"{PREFIX}{rng.randrange(KEYS)}"
        if rng.random() < DELETE_CHANCE:
            return Op("delete", PREFIX, [key, None])
        self.count += 1
        return Op("put", PREFIX, [key, f"{self.worker}-{self.count}"])


class Watcher:
    """One SSE watch of PREFIX from revision 1 that moves on to the next
    node whenever its stream fails, resuming with Last-Event-ID."""

    def __init__(self, number: int, apis: list[NodeApi]) -> None:
        self.number = number
        self.apis = apis
        self.events: list[list[Any]] = []  # [revision, key, value or None], as received
        self.reached = 0  # last event or progress id: everything up to it was received
        self.reconnects = 0
        self.compacted = False
        self.progressed = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"watcher {self.number}")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        node = self.number
        while True:
            api = self.apis[node % len(self.apis)]
            if api.session.closed:
                return
            try:
                await self._stream(api)
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError):
                pass
            if self.compacted:
                return
            self.reconnects += 1
            node += 1
            await asyncio.sleep(0.1)

    async def _stream(self, api: NodeApi) -> None:
        headers = {"Accept": "text/event-stream"}
        if self.reached:
            headers["Last-Event-ID"] = str(self.reached)
        params = {"prefix": PREFIX, "start_revision": "1", "progress_interval": f"{PROGRESS_INTERVAL_S:g}"}
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=2.0, sock_read=SILENCE_S)
        async with api.session.get(api.base_url + "/v1/watch", params=params, headers=headers,
                                   timeout=timeout) as response:
            if response.status == 410:
                self.compacted = True
                return
            if response.status != 200:
                return
            fields: dict[str, str] = {}
            async for raw in response.content:
                line = raw.decode("utf-8").rstrip("\r\n")
                if line:
                    if not line.startswith(":"):
                        name, _, value = line.partition(":")
                        fields[name] = value[1:] if value.startswith(" ") else value
                    continue
                if fields and self._dispatch(fields):
                    return
                fields = {}

    def _dispatch(self, fields: dict[str, str]) -> bool:
        """Take one SSE message; True: the server ended the stream."""
        kind = fields.get("event")
        data = orjson.loads(fields.get("data", "null"))
        if kind in ("put", "delete"):
            value = data.get("value", data.get("value_base64")) if kind == "put" else None
            self.events.append([int(data["revision"]), data["key"], value])
            self.reached = max(self.reached, int(fields["id"]))
        elif kind == "progress":
            self.reached = max(self.reached, int(fields["id"]))
            self.progressed.set()
        elif kind == "end":
            if data["error"]["code"] == "compacted":
                self.compacted = True
            return True
        return False

    async def wait_until(self, revision: int, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.reached < revision and not self.compacted:
            self.progressed.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self.progressed.wait(), min(remaining, 1.0))
            except asyncio.TimeoutError:
                pass
        return self.reached >= revision

    def report(self) -> dict[str, Any]:
        return {"events": self.events, "reached": self.reached, "reconnects": self.reconnects,
                "compacted": self.compacted}


class WatchWorkload(Workload):
    name = "watch"

    def __init__(self) -> None:
        self.watchers: list[Watcher] = []
        self.final_revision: int | None = None

    def generator(self, worker: int) -> OpGenerator:
        return WatchGenerator(worker)

    async def start(self, apis: list[NodeApi]) -> None:
        self.watchers = [Watcher(n, apis) for n in range(WATCHERS)]
        for watcher in self.watchers:
            watcher.start()

    async def invoke(self, api: NodeApi, op: Op) -> Completion:
        key, value = op.value
        if op.f == "put":
            return write_completion(await api.put(key, value.encode()))
        return write_completion(await api.request("DELETE", "/v1/kv/" + key))  # 404: nothing deleted

    async def invoke_final(self, api: NodeApi, op: Op) -> Completion:
        if op.key == HISTORY_KEY:
            return await self._read_history(api)
        watcher = self.watchers[int(str(op.key)[len(WATCHER_KEY_PREFIX):])]
        if self.final_revision is None:
            return Completion("fail", None, "the history was not read")
        await watcher.wait_until(self.final_revision, CATCH_UP_S)
        await watcher.stop()
        return Completion("ok", watcher.report())

    async def _read_history(self, api: NodeApi) -> Completion:
        """The committed changes under PREFIX, walked down from the final
        revision with point reads of past versions (a prefix listing at a
        past revision costs as much as the range's whole history, a key's
        version at a revision one index lookup).

        Every revision of the run is one change under PREFIX (only the
        writers write, and a delete of an absent key makes none), so going
        down from state(R): the key whose mod_revision is r was put at r,
        and its version before comes from reading it at r - 1; if no key's
        mod_revision is r, r deleted the one absent key that existed at
        r - 1. A revision that fits neither is reported, not guessed."""
        reply = await api.request("GET", "/v1/kv", params={"prefix": PREFIX})
        if reply.status != 200:
            return read_failure(reply)
        page = reply.json()  # linearizable: this node has applied the final revision
        final = int(page["revision"])
        state: dict[str, Version] = {kv["key"]: (kv["mod_revision"], kv["create_revision"], kv["value"])
                                     for kv in page["kvs"]}
        changes: list[list[Any]] = []
        inconsistent: str | None = None
        # Kept-alive connections of its own: the run's session opens one per
        # request, which made these thousands of reads several times slower.
        async with aiohttp.ClientSession() as session:
            node = NodeApi(session, api.base_url, api.server_timeout_s)
            try:
                for revision in range(final, 0, -1):
                    put = [key for key, (mod, _c, _v) in state.items() if mod == revision]
                    if put:
                        key = put[0]
                        _mod, create, value = state.pop(key)
                        changes.append([revision, key, value])
                        if create < revision:
                            before = await _version_at(node, key, revision - 1)
                            if before is None:
                                inconsistent = f"{key} was not created at {revision} but is absent at {revision - 1}"
                                break
                            state[key] = before
                        continue
                    absent = [f"{PREFIX}{n}" for n in range(KEYS) if f"{PREFIX}{n}" not in state]
                    found = [] if revision == 1 else await asyncio.gather(
                        *(_version_at(node, key, revision - 1) for key in absent))
                    existed = [(key, version) for key, version in zip(absent, found) if version is not None]
                    if len(existed) != 1:
                        inconsistent = f"revision {revision} changed nothing under {PREFIX} (or several keys)"
                        break
                    key, version = existed[0]
                    changes.append([revision, key, None])
                    state[key] = version
            except UnexpectedReply as error:
                return read_failure(error.reply)
        changes.reverse()
        self.final_revision = final
        result: dict[str, Any] = {"revision": final, "changes": changes}
        if inconsistent is not None:
            result["inconsistent"] = inconsistent
        return Completion("ok", result)

    def final_ops(self, events: Iterable[HistoryEvent]) -> list[Op]:
        return [Op("read", HISTORY_KEY, None)] + [
            Op("read", f"{WATCHER_KEY_PREFIX}{n}", None) for n in range(len(self.watchers))
        ]

    def check(self, events: list[HistoryEvent]) -> CheckOutcome:
        result = check_watch(events)
        return CheckOutcome("valid" if result.valid else "invalid", list(result.anomalies),
                            f"{result.checked} watchers")


async def _version_at(api: NodeApi, key: str, revision: int) -> Version | None:
    """(mod_revision, create_revision, value) of ``key`` as of ``revision``,
    None if it did not exist then. The node has applied past ``revision``
    and history never changes, so a serializable read is exact."""
    reply = await api.request("GET", "/v1/kv/" + key, params={"revision": str(revision), "consistency": "serializable"})
    if reply.status == 404 and reply.error_code == "key_not_found":
        return None
    if reply.status != 200:
        raise UnexpectedReply(reply)
    return (int(reply.headers["X-Raftkv-Mod-Revision"]), int(reply.headers["X-Raftkv-Create-Revision"]),
            reply.body.decode("utf-8"))
