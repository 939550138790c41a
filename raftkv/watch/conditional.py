"""Conditional and blocking reads (issue #11 part 2): If-None-Match answers
304 while the ETag still matches; ``?wait=30s`` first waits (on the watch
hub) for a write that could change it.

A key's ETag is its mod_revision (strong: the same ETag is the same
bytes). A listing's ETag is weak, ``W/"l-<hash>"`` of its keys, their
mod_revisions and ``more``: the JSON also carries the store's current
``revision``, which moves with writes elsewhere, so two bodies with one
ETag are equivalent but not byte-identical (RFC 9110 8.8.1).
"""

from __future__ import annotations

import hashlib
import re
from time import monotonic
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson
from aiohttp import web

from raftkv.engine import Engine
from raftkv.kv.state_machine import KVStateMachine
from raftkv.server.params import bad_argument
from raftkv.server.responses import ApiError
from raftkv.watch.hub import WatchHub

MAX_WAIT = 300.0  # seconds; Consul's blocking queries stop at 10 minutes
_DURATION = re.compile(r"([0-9]{1,7}(?:\.[0-9]{1,6})?)(ms|s|m)?\Z")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}


def parse_wait(text: str) -> float:
    """``30s``, ``500ms``, ``2m`` or plain seconds, in (0, MAX_WAIT]."""
    match = _DURATION.match(text)
    expected = f"a duration like 30s, 500ms or 2m, at most {MAX_WAIT:g} s"
    if match is None:
        raise bad_argument("wait", expected, text)
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if not 0 < seconds <= MAX_WAIT:
        raise bad_argument("wait", expected, text)
    return seconds


def parse_if_none_match(header: str | None) -> frozenset[str] | None:
    """The entity tags of If-None-Match, weak markers dropped (GET compares
    weakly), each as its quoted form; "*" stands for any."""
    if header is None:
        return None
    tags = set()
    for part in header.split(","):
        tag = part.strip()
        if tag.startswith("W/"):
            tag = tag[2:]
        if not tag:
            continue
        if tag != "*" and not (len(tag) >= 2 and tag[0] == tag[-1] == '"'):
            raise ApiError(
                400,
                "invalid_argument",
                f'If-None-Match must be "*" or quoted ETags like "12" (from a GET), got {header[:60]!r}',
            )
        tags.add(tag)
    if not tags:
        raise ApiError(400, "invalid_argument", "If-None-Match is empty")
    return frozenset(tags)


def list_etag(kvs: list[dict[str, Any]], more: bool) -> str:
    digest = hashlib.blake2b(
        orjson.dumps([[kv["key"], kv["mod_revision"]] for kv in kvs] + [more]), digest_size=8
    ).hexdigest()
    return f'W/"l-{digest}"'


class ConditionalRead:
    """One GET's If-None-Match and ?wait= (see the module doc)."""

    def __init__(self, tags: frozenset[str] | None, wait: float | None, hub: WatchHub | None) -> None:
        self.tags = tags
        self.deadline = None if wait is None else monotonic() + wait
        self.hub = hub

    @classmethod
    def from_request(cls, request: web.BaseRequest, query: dict[str, str], hub: WatchHub | None) -> "ConditionalRead":
        tags = parse_if_none_match(request.headers.get("If-None-Match"))
        text = query.get("wait")
        wait = None if text is None else parse_wait(text)
        if wait is not None:
            if tags is None:
                raise ApiError(
                    400, "invalid_argument", "wait needs If-None-Match: the ETag of your copy, to wait for a change to it"
                )
            if "revision" in query:
                raise ApiError(400, "invalid_argument", "wait cannot be combined with revision: a past revision never changes")
        return cls(tags, wait, hub)

    def unchanged(self, etag: str) -> bool:
        """The client's copy is current: answer 304 (or wait)."""
        if self.tags is None:
            return False
        bare = etag[2:] if etag.startswith("W/") else etag
        return "*" in self.tags or bare in self.tags

    async def wait(self, key: str | None, prefix: str | None, revision: int) -> bool:
        """Wait for a write to ``key`` / under ``prefix`` after ``revision``
        (read just before, with no await in between). False: the wait is
        over (or none was asked for) with nothing new."""
        if self.deadline is None or self.hub is None:
            return False
        remaining = self.deadline - monotonic()
        if remaining <= 0:
            return False
        return await self.hub.wait_for_change(key, prefix, revision, remaining)

    @staticmethod
    def not_modified(headers: dict[str, str]) -> web.Response:
        return web.Response(status=304, headers=headers)


class _ReadsState(Protocol):
    engine: Engine
    machine: KVStateMachine

    def _list_page(
        self, prefix: str, limit: int | None, start_after: str | None, keys_only: bool, at: int | None = None
    ) -> tuple[list[dict[str, Any]], bool]: ...


async def wait_while_unchanged(
    conditional: ConditionalRead,
    current: Callable[[], tuple[str | None, int]],
    key: str | None,
    prefix: str | None,
    fence: Callable[[], Awaitable[None]],
) -> None:
    """For ?wait=: return once ``current()``'s ETag (None: gone) differs
    from the client's, or the wait is over; the caller then reads and
    answers as usual (200, 404 or 304)."""
    if conditional.deadline is None:
        return
    while True:
        etag, revision = current()
        if etag is None or not conditional.unchanged(etag):
            return
        if not await conditional.wait(key, prefix, revision):
            return
        await fence()  # woken by a write: read as fresh as a new GET


def key_etag(api: _ReadsState, key: str) -> tuple[str | None, int]:
    with api.engine.state_lock:
        kv = api.machine.get(key)
        return (None if kv is None else f'"{kv["mod_revision"]}"'), api.machine.revision


def listing_etag(
    api: _ReadsState, prefix: str, limit: int | None, start_after: str | None, keys_only: bool
) -> tuple[str | None, int]:
    with api.engine.state_lock:
        kvs, more = api._list_page(prefix, limit, start_after, keys_only)
        return list_etag(kvs, more), api.machine.revision
