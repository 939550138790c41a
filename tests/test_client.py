"""Tests for raftkv.client: pure policy/parsing by plain calls, then the real
AsyncClient/Client over real sockets against a scripted in-process HTTP server
that fails on purpose, then end-to-end against a real cluster when available."""

from __future__ import annotations

import asyncio
import base64
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from pathlib import Path
from urllib.parse import unquote

import aiohttp
import orjson
import pytest
from aiohttp import web

from raftkv.client import (
    AsyncClient,
    Client,
    Compare,
    InvalidResponse,
    NotFound,
    Op,
    OutcomeUnknown,
    PreconditionFailed,
    RequestRejected,
    ResultExpired,
    Unavailable,
)
from raftkv.client.discovery import leader_endpoint
from raftkv.client.models import (
    NodeStatus,
    parse_delete,
    parse_error,
    parse_get,
    parse_kv,
    parse_list,
    parse_put,
    parse_status,
    parse_txn,
)
from raftkv.client.retry import (
    EndpointSelector,
    Failure,
    RequestKind,
    backoff_cap,
    backoff_delay,
    failure_for_status,
    is_retryable,
    parse_endpoints,
    parse_retry_after,
)
from raftkv.client.txn import txn_body
from raftkv.client.values import decode_value, encode_value, key_path, to_bytes
from raftkv.errors import NoLeaderError, OutcomeUnknownError
from jepsen_style.workloads.base import Op as HistoryOp
from jepsen_style.workloads.clients import perform
from jepsen_style.workloads.node_api import NodeApi
from jepsen_style.workloads.recorder import HistoryRecorder
from jepsen_style.workloads.set_workload import SET_NAME, SetWorkload

# ---------------------------------------------------------------- pure: retry


def test_backoff_cap_doubles_then_saturates() -> None:
    assert [backoff_cap(i, 0.05, 1.0) for i in range(7)] == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert backoff_cap(10_000, 0.05, 2.0) == 2.0
    with pytest.raises(ValueError):
        backoff_cap(-1, 0.05, 1.0)


def test_backoff_delay_is_full_jitter_within_cap() -> None:
    calls: list[tuple[float, float]] = []

    def top(lo: float, hi: float) -> float:
        calls.append((lo, hi))
        return hi

    assert backoff_delay(3, 0.05, 2.0, uniform=top) == pytest.approx(0.4)
    assert backoff_delay(0, 0.05, 2.0, uniform=lambda lo, hi: lo) == 0.0
    assert calls == [(0.0, pytest.approx(0.4))]


def test_backoff_delay_honours_retry_after_up_to_max() -> None:
    bottom = lambda lo, hi: lo  # noqa: E731
    assert backoff_delay(0, 0.05, 2.0, uniform=bottom, retry_after=1.0) == 1.0
    assert backoff_delay(0, 0.05, 0.3, uniform=bottom, retry_after=1.0) == 0.3
    assert backoff_delay(0, 0.05, 2.0, uniform=bottom, retry_after=0) == 0.0


def test_parse_retry_after() -> None:
    assert parse_retry_after("1") == 1.0
    assert parse_retry_after(" 0.5 ") == 0.5
    assert parse_retry_after(None) is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") is None
    assert parse_retry_after("-3") is None


def test_failure_classes_and_retry_rules() -> None:
    assert failure_for_status(200) is None
    assert failure_for_status(404) is None
    assert failure_for_status(503) is Failure.NO_LEADER
    assert failure_for_status(504) is Failure.TIMED_OUT
    assert failure_for_status(500) is Failure.SERVER_ERROR
    for failure in Failure:
        assert is_retryable(RequestKind.READ, failure)
        assert is_retryable(RequestKind.WRITE, failure)
    assert is_retryable(RequestKind.CONTROL, Failure.NOT_SENT)
    assert is_retryable(RequestKind.CONTROL, Failure.NO_LEADER)
    assert not is_retryable(RequestKind.CONTROL, Failure.LOST)
    assert not is_retryable(RequestKind.CONTROL, Failure.TIMED_OUT)


def test_endpoint_selector_puts_leader_first_and_failed_last() -> None:
    sel = EndpointSelector(["a", "b", "c"])
    assert sel.order() == ["a", "b", "c"]
    sel.mark_leader("c")
    assert sel.order() == ["c", "a", "b"]
    sel.mark_failed("a", now=2.0)
    sel.mark_failed("c", now=1.0)  # the leader failing also forgets it
    assert sel.leader is None
    assert sel.order() == ["b", "c", "a"]
    sel.mark_ok("c")
    assert sel.order() == ["b", "c", "a"]
    with pytest.raises(ValueError, match="unknown endpoint"):
        sel.mark_leader("zzz")
    with pytest.raises(ValueError):
        EndpointSelector([])


def test_endpoint_selector_pick_prefers_leader_else_round_robin() -> None:
    sel = EndpointSelector(["a", "b", "c"])
    order = sel.order()
    assert [sel.pick(i, order) for i in range(5)] == ["a", "b", "c", "a", "b"]
    sel.mark_leader("b")
    assert [sel.pick(i, order) for i in range(3)] == ["b", "b", "b"]


def test_parse_endpoints() -> None:
    assert parse_endpoints("http://h:1/, https://x:2") == ["http://h:1", "https://x:2"]
    for bad in ["", " , ", "h:1", "ftp://h:1", "http://"]:
        with pytest.raises(ValueError):
            parse_endpoints(bad)


# ---------------------------------------------------------------- pure: values


@pytest.mark.parametrize("key", ["a", "a/b", "a/../b", "..", "/x", "a//b", "sp ace?#%&=", "ü/ø", "a%2Fb", "."])
def test_key_path_round_trips_and_hides_path_syntax(key: str) -> None:
    path = key_path(key)
    encoded = path.removeprefix("/v1/kv/")
    assert "/" not in encoded and "." not in encoded and "?" not in encoded and "#" not in encoded
    assert unquote(encoded) == key


def test_key_validation() -> None:
    with pytest.raises(ValueError, match="empty"):
        key_path("")
    with pytest.raises(TypeError):
        key_path(b"k")  # type: ignore[arg-type]


def test_value_json_shape_round_trips() -> None:
    assert encode_value(b"hello") == {"value": "hello"}
    blob = bytes(range(256))
    shaped = encode_value(blob)
    assert shaped["encoding"] == "base64"
    assert decode_value(shaped) == blob
    assert decode_value({"value": "h\u00e9"}) == "h\u00e9".encode()
    assert to_bytes("é") == "é".encode() and to_bytes(bytearray(b"x")) == b"x"
    with pytest.raises(TypeError):
        to_bytes(5)  # type: ignore[arg-type]


def test_value_decoding_errors_are_clear() -> None:
    with pytest.raises(InvalidResponse, match="base64"):
        decode_value({"value": "***", "encoding": "base64"})
    with pytest.raises(InvalidResponse, match="unknown value encoding"):
        decode_value({"value": "x", "encoding": "rot13"})
    with pytest.raises(InvalidResponse, match="must be a string"):
        decode_value({"value": 3})


# ---------------------------------------------------------------- pure: parsing

KV = {"key": "k", "value": "v", "create_revision": 2, "mod_revision": 5, "version": 3}


def test_parse_kv_and_list() -> None:
    kv = parse_kv(KV)
    assert (kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version) == ("k", b"v", 2, 5, 3)
    assert kv.text == "v" and kv.to_json() == KV
    keys_only = {k: v for k, v in KV.items() if k != "value"}
    listed = parse_list({"revision": 9, "kvs": [KV, keys_only], "more": True, "extra": 1})
    assert listed.revision == 9 and listed.more is True
    assert listed.kvs[1].value is None and listed.kvs[1].text is None
    assert listed.to_json()["kvs"][1] == keys_only


@pytest.mark.parametrize(
    "bad, match",
    [
        ({**KV, "version": "3"}, "version"),
        ({**KV, "mod_revision": True}, "mod_revision"),
        ({k: v for k, v in KV.items() if k != "key"}, "missing field 'key'"),
        ([1, 2], "JSON object"),
    ],
)
def test_parse_kv_rejects_contract_breaches(bad: Any, match: str) -> None:
    with pytest.raises(InvalidResponse, match=match):
        parse_kv(bad)


def test_parse_get_from_headers() -> None:
    headers = {
        "ETag": '"5"',
        "X-Raftkv-Create-Revision": "2",
        "X-Raftkv-Mod-Revision": "5",
        "X-Raftkv-Version": "3",
        "X-Raftkv-Revision": "11",
    }
    got = parse_get("a/b", headers, b"\x00raw")
    assert got.revision == 11 and got.kv.value == b"\x00raw" and got.kv.mod_revision == 5
    with pytest.raises(InvalidResponse, match="X-Raftkv-Version"):
        parse_get("a", {**headers, "X-Raftkv-Version": "three"}, b"")
    missing = dict(headers)
    del missing["X-Raftkv-Revision"]
    with pytest.raises(InvalidResponse, match="missing header X-Raftkv-Revision"):
        parse_get("a", missing, b"")


def test_parse_write_results() -> None:
    meta = {k: v for k, v in KV.items() if k != "value"}
    put = parse_put({"revision": 5, "kv": meta}, value=b"v", replayed=True)
    assert put.kv.value == b"v" and put.replayed and put.revision == 5
    assert parse_delete({"revision": 6, "deleted": 1}).deleted == 1
    with pytest.raises(InvalidResponse):
        parse_delete({"revision": 6})
    txn = parse_txn(
        {"succeeded": True, "revision": 7, "results": [{"kv": KV}, {"kv": None}, {"deleted": 2}]}
    )
    assert txn.succeeded and txn.results[0].kv == parse_kv(KV)
    assert txn.results[1].kv is None and txn.results[2].deleted == 2
    assert txn.to_json()["results"] == [{"kv": KV}, {"kv": None}, {"deleted": 2}]
    with pytest.raises(InvalidResponse, match="'kv' or 'deleted'"):
        parse_txn({"succeeded": True, "revision": 7, "results": [{}]})


def test_parse_status() -> None:
    body = {
        "node_id": "n1",
        "role": "leader",
        "term": 3,
        "leader_id": "n1",
        "commit_index": 10,
        "applied_index": 10,
        "engine": "native",
        "members": [{"id": "n1", "peer_addr": "127.0.0.1:8001", "voter": True}],
        "revision": 4,
    }
    st = parse_status(body, "http://x")
    assert st.is_leader and st.members[0].peer_addr == "127.0.0.1:8001" and st.endpoint == "http://x"
    assert parse_status({**body, "leader_id": None}, "http://x").leader_id is None
    with pytest.raises(InvalidResponse, match="leader_id"):
        parse_status({**body, "leader_id": 1}, "http://x")


def test_parse_error_shapes() -> None:
    assert parse_error(412, {"error": {"code": "precondition_failed", "message": "m", "mod_revision": 3}}) == (
        "precondition_failed",
        "m",
        {"mod_revision": 3},
    )
    code, message, extra = parse_error(502, "<html>bad gateway</html>")
    assert code == "http_502" and "bad gateway" in message and extra == {}


# ---------------------------------------------------------------- pure: txn builders


def test_txn_builders_make_contract_json() -> None:
    body = txn_body(
        [Compare.number("stock", ">=", 2), Compare.value("k", "==", "v"), Compare.absent("new")],
        [Op.add("stock", -2), Op.put("bin", b"\xff"), Op.get("k"), Op.delete("x"), Op.delete_prefix("p/")],
        [{"op": "get", "key": "stock"}],
    )
    assert body["compare"] == [
        {"key": "stock", "target": "number", "cmp": ">=", "value": 2},
        {"key": "k", "target": "value", "cmp": "==", "value": "v"},
        {"key": "new", "target": "version", "cmp": "==", "value": 0},
    ]
    assert body["success"][0] == {"op": "add", "key": "stock", "delta": -2}
    assert body["success"][1] == {"op": "put", "key": "bin", "value": "/w==", "encoding": "base64"}
    assert body["success"][4] == {"op": "delete_prefix", "prefix": "p/"}
    assert body["failure"] == [{"op": "get", "key": "stock"}]


def test_txn_builders_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="cmp must be one of"):
        Compare.number("k", "=", 1)
    with pytest.raises(ValueError, match="target must be one of"):
        Compare("k", "lease", "==", 1)
    with pytest.raises(TypeError, match="int"):
        Compare.version("k", "==", "1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="int"):
        Op.add("k", True)
    with pytest.raises(ValueError, match="empty"):
        Op.put("", "v")
    with pytest.raises(TypeError, match="Compare or a dict"):
        txn_body(["k == v"], [], [])  # type: ignore[list-item]


def test_client_constructor_rejects_bad_arguments() -> None:
    with pytest.raises(TypeError):
        AsyncClient("http://127.0.0.1:7001")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        AsyncClient([])
    with pytest.raises(ValueError):
        AsyncClient(["127.0.0.1:7001"])
    with pytest.raises(ValueError):
        AsyncClient(["http://127.0.0.1:7001"], timeout=0)
    with pytest.raises(ValueError):
        AsyncClient(["http://127.0.0.1:7001"], retries=-1)


# ---------------------------------------------------------------- scripted server

Step = tuple[str, Any]  # ("json", (status, body, headers)) | ("drop", None) | ("hang", seconds) | ("raw", ...)


@dataclass
class Seen:
    method: str
    path: str  # decoded key path, as the server's router sees it
    raw_path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


@dataclass
class ScriptedServer:
    """A real aiohttp server on 127.0.0.1 that answers from a script.

    Runs in its own thread and loop so both AsyncClient (in the test's loop)
    and the blocking Client (in its private loop) can talk to it.
    """

    script: list[Step] = field(default_factory=list)
    status_body: dict[str, Any] | None = None  # what GET /v1/status answers
    status_delay: float = 0.0
    seen: list[Seen] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests(self, path_prefix: str = "/v1/kv") -> list[Seen]:
        return [s for s in self.seen if s.path.startswith(path_prefix)]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append(
            Seen(request.method, request.path, request.raw_path, dict(request.query), dict(request.headers), body)
        )
        if request.path == "/v1/status":
            await asyncio.sleep(self.status_delay)
            if self.status_body is None:
                return web.json_response({"error": {"code": "not_found", "message": "no"}}, status=404)
            return web.json_response(self.status_body)
        if not self.script:
            raise AssertionError(f"unscripted request {request.method} {request.path}")
        action, arg = self.script.pop(0)
        if action == "drop":
            assert request.transport is not None
            request.transport.close()
            return web.Response()
        if action == "hang":
            await asyncio.sleep(arg)
            return web.json_response({"error": {"code": "late", "message": "late"}}, status=500)
        if action == "get":
            value, meta = arg
            return web.Response(body=value, headers={k: str(v) for k, v in meta.items()})
        status, payload, headers = arg
        return web.Response(status=status, body=orjson.dumps(payload), headers=headers or {},
                            content_type="application/json")

    @classmethod
    def running(cls, **kwargs: Any) -> Iterator[ScriptedServer]:
        server = cls(**kwargs)
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        runner_box: list[web.AppRunner] = []

        async def start() -> None:
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", server._handle)
            runner = web.AppRunner(app, handle_signals=False)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            server.port = runner.addresses[0][1]
            runner_box.append(runner)

        def run() -> None:
            loop.run_until_complete(start())
            ready.set()
            loop.run_forever()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        assert ready.wait(5)
        try:
            yield server
        finally:
            asyncio.run_coroutine_threadsafe(runner_box[0].cleanup(), loop).result(5)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
            loop.close()


@pytest.fixture
def scripted() -> Iterator[ScriptedServer]:
    yield from ScriptedServer.running()


@pytest.fixture
def scripted2() -> Iterator[ScriptedServer]:
    yield from ScriptedServer.running()


def dead_endpoint() -> str:
    """A 127.0.0.1 port nothing listens on (bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


PUT_OK = ("json", (200, {"revision": 7, "kv": {"key": "k", "create_revision": 7, "mod_revision": 7, "version": 1}},
                   {"ETag": '"7"'}))
NO_LEADER = ("json", (503, {"error": {"code": "no_leader", "message": "no leader"}}, {"Retry-After": "0"}))
UNKNOWN = ("json", (504, {"error": {"code": "outcome_unknown", "message": "may or may not"}}, None))


def run(coro_fn: Callable[[AsyncClient], Any], endpoints: list[str], **kwargs: Any) -> Any:
    async def main() -> Any:
        async with AsyncClient(endpoints, **{"backoff_base": 0.001, "backoff_max": 0.01, **kwargs}) as c:
            return await coro_fn(c)

    return asyncio.run(main())


def test_put_retries_503_then_succeeds_with_one_idempotency_key(scripted: ScriptedServer) -> None:
    scripted.script = [NO_LEADER, NO_LEADER, PUT_OK]
    result = run(lambda c: c.put("k", "v"), [scripted.url])
    assert result.revision == 7 and result.kv.value == b"v"
    reqs = scripted.requests()
    assert len(reqs) == 3
    keys = {r.headers["Idempotency-Key"] for r in reqs}
    assert len(keys) == 1 and len(keys.pop()) >= 16
    assert all(r.body == b"v" and r.method == "PUT" for r in reqs)


def test_connection_drop_then_success_reuses_idempotency_key(scripted: ScriptedServer) -> None:
    scripted.script = [("drop", None), PUT_OK]
    result = run(lambda c: c.put("k", b"v", idempotency_key="mine-1"), [scripted.url])
    assert result.revision == 7
    assert [r.headers["Idempotency-Key"] for r in scripted.requests()] == ["mine-1", "mine-1"]


def test_each_write_gets_a_fresh_key(scripted: ScriptedServer) -> None:
    scripted.script = [PUT_OK, PUT_OK]

    async def two(c: AsyncClient) -> None:
        await c.put("k", "a")
        await c.put("k", "a")

    run(two, [scripted.url])
    keys = [r.headers["Idempotency-Key"] for r in scripted.requests()]
    assert len(set(keys)) == 2


def test_504_everywhere_is_outcome_unknown_with_the_key(scripted: ScriptedServer) -> None:
    scripted.script = [UNKNOWN] * 3
    with pytest.raises(OutcomeUnknown) as info:
        run(lambda c: c.put("k", "v"), [scripted.url], retries=2)
    assert isinstance(info.value, OutcomeUnknownError)
    sent = {r.headers["Idempotency-Key"] for r in scripted.requests()}
    assert sent == {info.value.idempotency_key}
    assert len(scripted.requests()) == 3
    assert "may or may not have been applied" in str(info.value)


IN_FLIGHT = ("json", (409, {"error": {"code": "idempotency_key_in_flight", "message": "busy"}}, {"Retry-After": "0"}))


def test_409_in_flight_is_asked_again_with_the_same_key(scripted: ScriptedServer) -> None:
    replay = ("json", (200, PUT_OK[1][1], {"Idempotency-Replayed": "true"}))
    scripted.script = [UNKNOWN, IN_FLIGHT, replay]
    result = run(lambda c: c.put("k", "v"), [scripted.url])
    assert result.replayed and result.revision == 7
    assert len({r.headers["Idempotency-Key"] for r in scripted.requests()}) == 1


def test_409_in_flight_to_the_end_is_outcome_unknown(scripted: ScriptedServer) -> None:
    """The earlier attempt the node is still working on may yet apply."""
    scripted.script = [NO_LEADER, IN_FLIGHT, IN_FLIGHT]
    with pytest.raises(OutcomeUnknown):
        run(lambda c: c.put("k", "v"), [scripted.url], retries=2)


def test_422_answers_for_a_spent_key(scripted: ScriptedServer) -> None:
    expired = ("json", (422, {"error": {"code": "idempotency_result_expired", "message": "applied once"}}, None))
    reused = ("json", (422, {"error": {"code": "idempotency_key_reused", "message": "other request"}}, None))
    scripted.script = [expired, reused]
    with pytest.raises(ResultExpired) as info:
        run(lambda c: c.put("k", "v", idempotency_key="spent"), [scripted.url])
    assert info.value.idempotency_key == "spent" and not isinstance(info.value, RequestRejected)
    with pytest.raises(RequestRejected) as rejected:
        run(lambda c: c.delete("k", idempotency_key="spent"), [scripted.url])
    assert (rejected.value.status, rejected.value.code) == (422, "idempotency_key_reused")
    assert len(scripted.requests()) == 2  # neither was retried


def test_504_then_replayed_success(scripted: ScriptedServer) -> None:
    replay = ("json", (200, {"revision": 7, "deleted": 1}, {"Idempotency-Replayed": "true"}))
    scripted.script = [UNKNOWN, replay]
    result = run(lambda c: c.delete("k"), [scripted.url])
    assert result.deleted == 1 and result.replayed


def test_only_503s_is_unavailable_and_safe(scripted: ScriptedServer) -> None:
    scripted.script = [NO_LEADER] * 3
    with pytest.raises(Unavailable) as info:
        run(lambda c: c.put("k", "v"), [scripted.url], retries=2)
    assert isinstance(info.value, NoLeaderError)
    assert "nothing was applied" in str(info.value)


def test_503_after_a_lost_response_is_still_outcome_unknown(scripted: ScriptedServer) -> None:
    scripted.script = [("drop", None), NO_LEADER]
    with pytest.raises(OutcomeUnknown):
        run(lambda c: c.put("k", "v"), [scripted.url], retries=1)


def test_reads_time_out_and_become_unavailable(scripted: ScriptedServer) -> None:
    scripted.script = [("hang", 0.8), ("hang", 0.8)]
    started = time.monotonic()
    with pytest.raises(Unavailable):
        run(lambda c: c.get("k"), [scripted.url], retries=1, timeout=0.2)
    assert time.monotonic() - started < 1.5
    assert scripted.requests()[0].query["timeout"] == "0.2"


def test_dead_endpoint_fails_over_to_a_live_one(scripted: ScriptedServer) -> None:
    scripted.script = [PUT_OK]
    dead = dead_endpoint()

    async def go(c: AsyncClient) -> Any:
        result = await c.put("k", "v")
        return result, c._selector.order()

    result, order = run(go, [dead, scripted.url])
    assert result.revision == 7
    assert order[-1] == dead  # the failed endpoint is tried last from now on


def test_all_endpoints_dead_is_unavailable() -> None:
    with pytest.raises(Unavailable, match="cannot connect"):
        run(lambda c: c.put("k", "v"), [dead_endpoint(), dead_endpoint()], retries=3)


def test_definite_rejections_are_not_retried(scripted: ScriptedServer) -> None:
    bad = ("json", (413, {"error": {"code": "value_too_large", "message": "value over 1 MiB"}}, None))
    scripted.script = [bad]
    with pytest.raises(RequestRejected) as info:
        run(lambda c: c.put("k", "v"), [scripted.url])
    assert (info.value.status, info.value.code, info.value.message) == (413, "value_too_large", "value over 1 MiB")
    assert len(scripted.requests()) == 1


def test_precondition_failed_carries_current_revision(scripted: ScriptedServer) -> None:
    failed = ("json", (412, {"error": {"code": "precondition_failed", "message": "mod_revision is 9",
                                       "mod_revision": 9}}, None))
    scripted.script = [failed, failed]
    with pytest.raises(PreconditionFailed) as info:
        run(lambda c: c.put("k", "v", if_mod_revision=4), [scripted.url])
    assert info.value.mod_revision == 9
    assert scripted.requests()[0].headers["If-Match"] == '"4"'
    with pytest.raises(PreconditionFailed):
        run(lambda c: c.put("k", "v", if_absent=True), [scripted.url])
    assert scripted.requests()[1].headers["If-None-Match"] == "*"


def test_412_without_revision_is_an_invalid_response(scripted: ScriptedServer) -> None:
    scripted.script = [("json", (412, {"error": {"code": "precondition_failed", "message": "m"}}, None))]
    with pytest.raises(InvalidResponse, match="mod_revision"):
        run(lambda c: c.delete("k", if_mod_revision=1), [scripted.url])


def test_get_found_missing_and_other_404(scripted: ScriptedServer) -> None:
    meta = {"X-Raftkv-Create-Revision": 2, "X-Raftkv-Mod-Revision": 5, "X-Raftkv-Version": 3,
            "X-Raftkv-Revision": 8, "ETag": '"5"'}
    missing = ("json", (404, {"error": {"code": "key_not_found", "message": "no key"}}, None))
    other = ("json", (404, {"error": {"code": "not_found", "message": "no route"}}, None))
    scripted.script = [("get", (b"\x00\xffbin", meta)), missing, missing, other]

    async def go(c: AsyncClient) -> Any:
        kv = await c.get("dir/sub key", consistency="serializable")
        gone = await c.get("nope")
        with pytest.raises(NotFound):
            await c.delete("nope")
        with pytest.raises(RequestRejected) as info:
            await c.get("x")
        return kv, gone, info.value

    kv, gone, err = run(go, [scripted.url])
    assert kv.value == b"\x00\xffbin" and kv.key == "dir/sub key" and kv.version == 3
    assert gone is None and err.code == "not_found"
    first = scripted.requests()[0]
    assert first.path == "/v1/kv/dir/sub key" and "%2F" in first.raw_path
    assert first.query["consistency"] == "serializable"


def test_list_and_txn_requests_match_contract(scripted: ScriptedServer) -> None:
    scripted.script = [
        ("json", (200, {"revision": 3, "kvs": [KV], "more": False}, None)),
        ("json", (200, {"succeeded": False, "revision": 3, "results": [{"kv": KV}]}, None)),
        ("json", (200, {"revision": 4, "deleted": 2}, None)),
    ]

    async def go(c: AsyncClient) -> Any:
        listed = await c.list("a/", limit=10, start_after="a/b", keys_only=True)
        txn = await c.txn([Compare.number("s", ">=", 2)], [Op.add("s", -2)], [Op.get("s")])
        deleted = await c.delete_prefix("")
        return listed, txn, deleted

    listed, txn, deleted = run(go, [scripted.url])
    assert listed.kvs[0].key == "k" and not txn.succeeded and deleted.deleted == 2
    ls, tx, dp = [r for r in scripted.requests("/v1") if r.path != "/v1/status"]
    assert ls.query == {"prefix": "a/", "limit": "10", "start_after": "a/b", "keys_only": "true",
                        "consistency": "linearizable", "timeout": "5"}
    assert orjson.loads(tx.body) == {
        "compare": [{"key": "s", "target": "number", "cmp": ">=", "value": 2}],
        "success": [{"op": "add", "key": "s", "delta": -2}],
        "failure": [{"op": "get", "key": "s"}],
    }
    assert "Idempotency-Key" in tx.headers
    assert dp.method == "DELETE" and dp.query["prefix"] == "" and "Idempotency-Key" in dp.headers


def test_bad_arguments_fail_before_any_request(scripted: ScriptedServer) -> None:
    async def go(c: AsyncClient) -> None:
        with pytest.raises(ValueError, match="consistency"):
            await c.get("k", consistency="eventual")
        with pytest.raises(ValueError, match="limit"):
            await c.list(limit=0)
        with pytest.raises(ValueError, match="if_mod_revision"):
            await c.put("k", "v", if_mod_revision=-1)
        with pytest.raises(TypeError):
            await c.put("k", 12)  # type: ignore[arg-type]

    run(go, [scripted.url])
    assert scripted.seen == []


def status_of(node_id: str, role: str, leader_id: str | None) -> dict[str, Any]:
    return {"node_id": node_id, "role": role, "term": 2, "leader_id": leader_id, "commit_index": 5,
            "applied_index": 5, "engine": "native", "members": [], "revision": 3}


def test_leader_discovery_sends_to_the_leader(scripted: ScriptedServer, scripted2: ScriptedServer) -> None:
    scripted.status_body = status_of("n1", "follower", "n2")
    scripted2.status_body = status_of("n2", "leader", "n2")
    scripted2.script = [PUT_OK, PUT_OK]

    async def go(c: AsyncClient) -> str | None:
        await c.put("k", "v")
        await c.put("k", "v")
        return c.leader_endpoint

    assert run(go, [scripted.url, scripted2.url]) == scripted2.url
    assert scripted.requests() == [] and len(scripted2.requests()) == 2
    # Discovery happens once, not per request.
    assert len([s for s in scripted2.seen if s.path == "/v1/status"]) == 1


def test_leader_known_only_through_a_follower(scripted: ScriptedServer, scripted2: ScriptedServer) -> None:
    scripted.status_body = status_of("n1", "follower", "n2")
    scripted2.status_body = status_of("n2", "candidate", None)

    async def go(c: AsyncClient) -> Any:
        return await c.discover_leader(), await c.status_all()

    leader, all_status = run(go, [scripted.url, scripted2.url, dead_endpoint()])
    assert leader == scripted2.url
    assert all_status[scripted.url].role == "follower"
    assert isinstance(list(all_status.values())[2], Exception)


def test_discovery_does_not_wait_for_a_hung_node(scripted: ScriptedServer, scripted2: ScriptedServer) -> None:
    scripted.status_body, scripted.status_delay = status_of("n1", "follower", "n2"), 1.5
    scripted2.status_body = status_of("n2", "leader", "n2")

    async def go(c: AsyncClient) -> tuple[str | None, float]:
        started = time.monotonic()
        leader = await c.discover_leader()
        return leader, time.monotonic() - started

    leader, took = run(go, [scripted.url, scripted2.url])
    assert leader == scripted2.url and took < 0.5


def test_leader_endpoint_rule() -> None:
    def st(endpoint: str, node_id: str, role: str, leader_id: str | None) -> NodeStatus:
        return parse_status(status_of(node_id, role, leader_id), endpoint)

    follower = st("http://a", "n1", "follower", "n2")
    assert leader_endpoint([follower], {}) is None
    assert leader_endpoint([follower], {"n2": "http://b"}) == "http://b"
    assert leader_endpoint([follower, st("http://c", "n3", "leader", "n3")], {"n2": "http://b"}) == "http://c"
    assert leader_endpoint([st("http://a", "n1", "candidate", None)], {"n1": "http://a"}) is None


def test_sync_client_round_trip(scripted: ScriptedServer) -> None:
    scripted.script = [NO_LEADER, PUT_OK, ("json", (200, {"leader_id": "n3"}, None))]
    with Client([scripted.url], backoff_base=0.001, backoff_max=0.01) as c:
        assert c.put("k", "v").revision == 7
        assert c.transfer_leadership("n3") == "n3"
    assert orjson.loads(scripted.requests("/v1/leadership")[0].body) == {"to": "n3"}
    with pytest.raises(RuntimeError, match="closed"):
        c.put("k", "v")


def test_transfer_follows_not_leader_to_the_leader(scripted: ScriptedServer, scripted2: ScriptedServer) -> None:
    not_leader = ("json", (409, {"error": {"code": "not_leader", "message": "ask n2", "leader_id": "n2"}}, None))
    scripted.script = [not_leader]
    scripted2.script = [("json", (200, {"leader_id": "n1"}, None))]

    async def go(c: AsyncClient) -> str:
        # The client believes n1 leads; it was deposed before the request.
        c._selector.mark_leader(scripted.url)
        scripted.status_body = status_of("n1", "follower", "n2")
        scripted2.status_body = status_of("n2", "leader", "n2")
        return await c.transfer_leadership("n1")

    assert run(go, [scripted.url, scripted2.url]) == "n1"
    assert len(scripted2.requests("/v1/leadership")) == 1


def test_transfer_is_not_resent_after_a_lost_response(scripted: ScriptedServer) -> None:
    scripted.script = [("drop", None)]
    with pytest.raises(OutcomeUnknown):
        run(lambda c: c.transfer_leadership(), [scripted.url])
    assert len(scripted.requests("/v1/leadership")) == 1


def test_non_json_success_body_is_invalid_response(scripted: ScriptedServer) -> None:
    scripted.script = [("get", (b"<html>", {}))]
    with pytest.raises(InvalidResponse, match="not JSON"):
        run(lambda c: c.put("k", "v"), [scripted.url])


def test_base64_values_survive_txn_results(scripted: ScriptedServer) -> None:
    blob = b"\x80\x81"
    kv = {**KV, "value": base64.b64encode(blob).decode(), "encoding": "base64"}
    scripted.script = [("json", (200, {"succeeded": True, "revision": 3, "results": [{"kv": kv}]}, None))]
    result = run(lambda c: c.txn([], [Op.get("k")]), [scripted.url])
    assert result.results[0].kv.value == blob


# ---------------------------------------------------------------- end to end: a real 3-node cluster
# `cluster` (tests/conftest.py) is shared by this module's tests; they use
# distinct key prefixes so their order does not matter.

import io  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import uuid  # noqa: E402

from raftkv.local_cluster import LocalCluster  # noqa: E402


def test_e2e_put_get_delete_list(cluster: LocalCluster) -> None:
    p = f"e2e-{uuid.uuid4().hex[:6]}/"
    with Client(cluster.endpoints) as c:
        first = c.put(p + "a", "1")
        assert first.kv.version == 1 and first.kv.create_revision == first.revision
        second = c.put(p + "a", b"\x00\xff binary")
        assert second.kv.version == 2 and second.revision > first.revision
        got = c.get_with_revision(p + "a")
        assert got is not None and got.kv.value == b"\x00\xff binary" and got.revision >= second.revision
        assert got.kv.mod_revision == second.kv.mod_revision
        assert c.get(p + "a", consistency="serializable") is not None
        assert c.get(p + "missing") is None
        for k in ["b/../c", "sp ace?#&=", "ü/ø", "/lead", "."]:
            c.put(p + k, k)
            kv = c.get(p + k)
            assert kv is not None and kv.text == k
        listed = c.list(p)
        assert [kv.key for kv in listed.kvs] == sorted(kv.key for kv in listed.kvs)
        assert len(listed.kvs) == 6 and not listed.more
        page = c.list(p, limit=2, keys_only=True)
        assert page.more and len(page.kvs) == 2 and page.kvs[0].value is None
        rest = c.list(p, start_after=page.kvs[-1].key)
        assert len(rest.kvs) == 4
        assert c.delete(p + "a").deleted == 1
        with pytest.raises(NotFound):
            c.delete(p + "a")
        assert c.delete_prefix(p).deleted == 5
        assert c.list(p).kvs == []


def test_e2e_compare_and_set(cluster: LocalCluster) -> None:
    key = f"cas-{uuid.uuid4().hex[:6]}"
    with Client(cluster.endpoints) as c:
        created = c.put(key, "v1", if_absent=True)
        with pytest.raises(PreconditionFailed) as info:
            c.put(key, "again", if_absent=True)
        assert info.value.mod_revision == created.kv.mod_revision
        updated = c.put(key, "v2", if_mod_revision=created.kv.mod_revision)
        with pytest.raises(PreconditionFailed) as info:
            c.put(key, "stale", if_mod_revision=created.kv.mod_revision)
        assert info.value.mod_revision == updated.kv.mod_revision
        with pytest.raises(PreconditionFailed):
            c.delete(key, if_mod_revision=created.kv.mod_revision)
        assert c.get(key).value == b"v2"  # type: ignore[union-attr]
        assert c.delete(key, if_mod_revision=updated.kv.mod_revision).deleted == 1
        with pytest.raises(PreconditionFailed) as info:
            c.put(key, "x", if_mod_revision=5)
        assert info.value.mod_revision == 0


def test_e2e_idempotency_key_replays_instead_of_reapplying(cluster: LocalCluster) -> None:
    key = f"idem-{uuid.uuid4().hex[:6]}"
    with Client(cluster.endpoints) as c:
        ikey = uuid.uuid4().hex
        first = c.txn([], [Op.add(key, 5)], idempotency_key=ikey)
        again = c.txn([], [Op.add(key, 5)], idempotency_key=ikey)
        assert again.replayed and not first.replayed
        assert again.revision == first.revision
        assert c.get(key).value == b"5"  # type: ignore[union-attr]


def test_e2e_txn_stock_example(cluster: LocalCluster) -> None:
    key = f"stock-{uuid.uuid4().hex[:6]}"

    async def go() -> None:
        async with AsyncClient(cluster.endpoints) as c:
            await c.put(key, "3")
            buy = ([Compare.number(key, ">=", 2)], [Op.add(key, -2), Op.get(key)], [Op.get(key)])
            ok = await c.txn(*buy)
            assert ok.succeeded and ok.results[1].kv is not None and ok.results[1].kv.value == b"1"
            refused = await c.txn(*buy)
            assert not refused.succeeded and refused.results[0].kv.value == b"1"  # type: ignore[union-attr]
            await c.put(key, "many")
            with pytest.raises(RequestRejected) as info:
                await c.txn([], [Op.add(key, 1)])
            assert (info.value.status, info.value.code) == (409, "not_a_number")
            assert (await c.get(key)).value == b"many"  # type: ignore[union-attr]
            with pytest.raises(RequestRejected) as info:
                await c.txn([], [{"op": "put", "key": key}])
            assert info.value.status == 400

    asyncio.run(go())


def test_e2e_leader_discovery_and_status(cluster: LocalCluster) -> None:
    with Client(cluster.endpoints) as c:
        leader_endpoint = c.discover_leader()
        leader_id = cluster.leader()
        assert leader_endpoint == cluster.node(leader_id).url  # type: ignore[arg-type]
        statuses = c.status_all()
        assert {s.node_id for s in statuses.values() if not isinstance(s, Exception)} == {"n1", "n2", "n3"}
        assert sum(1 for s in statuses.values() if not isinstance(s, Exception) and s.is_leader) == 1
        one = c.status(cluster.endpoints[2])
        assert one.node_id == "n3" and one.leader_id == leader_id


def raftkv_cli(cluster: LocalCluster, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "RAFTKV_ENDPOINTS": ",".join(cluster.endpoints)}
    return subprocess.run(
        [sys.executable, "-m", "raftkv", *args], input=stdin, capture_output=True, env=env, timeout=30
    )


def test_e2e_cli_commands(cluster: LocalCluster) -> None:
    """As a user runs them: separate processes, bytes through stdin/stdout."""
    p = f"cli-{uuid.uuid4().hex[:6]}/"
    put = raftkv_cli(cluster, "put", p + "a", "hello")
    assert put.returncode == 0, put.stderr
    assert put.stdout.startswith(b"OK revision=")
    assert raftkv_cli(cluster, "put", p + "bin", "-", stdin=b"\x00\xff").returncode == 0
    got = raftkv_cli(cluster, "get", p + "bin")
    assert (got.returncode, got.stdout) == (0, b"\x00\xff")
    txn = {"compare": [{"key": p + "a", "target": "value", "cmp": "==", "value": "hello"}],
           "success": [{"op": "put", "key": p + "a", "value": "bye"}], "failure": []}
    ran = raftkv_cli(cluster, "txn", "-", stdin=orjson.dumps(txn))
    assert ran.returncode == 0 and orjson.loads(ran.stdout)["succeeded"] is True
    status = raftkv_cli(cluster, "status", "--all")
    assert status.returncode == 0 and status.stdout.count(b" leader ") == 1
    assert len(status.stdout.decode().strip().splitlines()) == 4


def test_e2e_cli_outputs_and_exit_codes(
    cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    monkeypatch.setenv("RAFTKV_ENDPOINTS", ",".join(cluster.endpoints))
    p = f"cli2-{uuid.uuid4().hex[:6]}/"

    def cli(*args: str) -> tuple[int, bytes, bytes]:
        code = run_cli_in_process(*args)
        out, err = capsysbinary.readouterr()
        return code, out, err

    assert cli("put", p + "a", "hello")[0] == 0
    with Client(cluster.endpoints) as c:
        c.put(p + "bin", b"\x80")
    assert cli("get", p + "a", "--serializable")[1] == b"hello"
    code, _, err = cli("get", p + "nope")
    assert code == 1 and b"not found" in err
    code, _, err = cli("put", p + "a", "x", "--if-match", "1")
    assert code == 1 and b"precondition failed" in err
    assert cli("put", p + "a", "x", "--create-only")[0] == 1
    code, out, _ = cli("ls", p, "--json")
    body = orjson.loads(out)
    assert [kv["key"] for kv in body["kvs"]] == [p + "a", p + "bin"]
    assert body["kvs"][1]["encoding"] == "base64"
    assert cli("ls", p, "--keys-only")[1].decode().split() == [p + "a", p + "bin"]
    assert cli("ls", p, "--limit", "1")[1] == f"{p}a\thello\n".encode()
    assert cli("ls", p, "--start-after", p + "a")[1] == f"{p}bin\t\\x80\n".encode()
    txn = {"compare": [{"key": p + "a", "target": "value", "cmp": "==", "value": "nope"}],
           "success": [], "failure": [{"op": "get", "key": p + "a"}]}
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(orjson.dumps(txn))))
    code, out, _ = cli("txn", "-")
    assert code == 1 and orjson.loads(out)["succeeded"] is False
    code, out, _ = cli("status")
    assert code == 0 and len(out.decode().strip().splitlines()) == 2
    code, out, _ = cli("del", p, "--prefix")
    assert (code, out.split()[0]) == (0, b"deleted=2")
    code, _, err = cli("del", p + "a")
    assert code == 1 and b"not found" in err


def run_cli_in_process(*args: str) -> int:
    """The real `raftkv` argument parsing and dispatch, without a process start."""
    from raftkv.cli import main

    try:
        return main(list(args))
    except SystemExit as exc:  # argparse reports usage errors this way
        return int(exc.code or 0)


def test_cli_usage_errors(
    cluster: LocalCluster, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RAFTKV_ENDPOINTS", ",".join(cluster.endpoints))
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    not_object = tmp_path / "list.json"
    not_object.write_text("[]")
    cases = [
        (("txn", str(bad_json)), "not valid JSON"),
        (("txn", str(not_object)), "JSON object"),
        (("txn", str(tmp_path / "absent.json")), "cannot read"),
        (("put", "k", "v", "--if-match", "3", "--create-only"), "cannot be combined"),
        (("ls", "--limit", "0"), "--limit"),
        (("del", ""), "must not be empty"),
        (("get", "k", "--endpoints", "localhost:7001"), "http://host:port"),
        (("get", "k", "--timeout", "0"), "--timeout"),
        (("get",), "required"),
    ]
    for args, message in cases:
        assert run_cli_in_process(*args) == 2, args
        assert message in capsys.readouterr().err, args
    txn_file = tmp_path / "unknown_field.json"
    txn_file.write_text('{"success": [], "when": 1}')
    assert run_cli_in_process("txn", str(txn_file)) == 2
    assert "unknown field(s) when" in capsys.readouterr().err
    # Malformed for the server (no value for put): rejected there, nothing written.
    txn_file.write_text('{"success": [{"op": "put", "key": "usage-k"}]}')
    assert run_cli_in_process("txn", str(txn_file)) == 2
    assert "nothing was written" in capsys.readouterr().err
    with Client(cluster.endpoints) as c:
        assert c.get("usage-k") is None


def test_cli_unavailable_says_nothing_was_written(tmp_path: Any) -> None:
    env = {**os.environ, "RAFTKV_ENDPOINTS": dead_endpoint()}
    result = subprocess.run([sys.executable, "-m", "raftkv", "put", "k", "v", "--timeout", "0.5"],
                            capture_output=True, env=env, timeout=30)
    assert result.returncode == 3
    assert b"nothing was written" in result.stderr


def test_e2e_transfer_leadership(cluster: LocalCluster) -> None:
    # Last in the module: it moves the shared cluster's leader.
    with Client(cluster.endpoints) as c:
        before = c.status().leader_id
        cli = raftkv_cli(cluster, "transfer")
        assert cli.returncode == 0, cli.stderr
        new_leader = cli.stdout.decode().strip().removeprefix("leader=")
        assert new_leader != before
        # The client follows: its next write lands even though the leader moved.
        assert c.put("after-transfer", "x").revision > 0
        assert c.status().leader_id == new_leader


def test_e2e_client_rides_over_a_leader_crash(make_cluster: Callable[..., LocalCluster]) -> None:
    cluster = make_cluster()
    key = "counter"

    async def go() -> None:
        async with AsyncClient(cluster.endpoints, timeout=2.0, retries=8) as c:
            await c.put(key, "0")
            leader_endpoint = await c.discover_leader()
            assert leader_endpoint is not None
            killed = next(n.node_id for n in cluster.nodes if n.url == leader_endpoint)
            cluster.kill(killed)
            acked, unknown = 0, 0
            for _ in range(20):
                try:
                    await c.txn([], [Op.add(key, 1)])
                    acked += 1
                except OutcomeUnknown:
                    unknown += 1
            kv = await c.get(key)
            assert kv is not None and kv.value is not None
            # Retries reuse the idempotency key, so nothing is applied twice:
            # every acknowledged add is there, at most the unknown ones on top.
            assert acked <= int(kv.value) <= acked + unknown
            assert acked >= 18
            # The client follows the new leader (it may have forgotten it if
            # the last answer came from a follower between heartbeats).
            new_leader = c.leader_endpoint or await c.discover_leader()
            assert new_leader not in (None, leader_endpoint)

    asyncio.run(go())


# ------------------------------------------------- certainty: "not sent" only if so


def test_a_write_in_flight_on_a_reused_connection_to_a_killed_node_is_unknown(tmp_path: Path) -> None:
    """aiohttp re-sends a PUT on a new connection when the kept-alive one
    breaks; the node was killed after reading it, so that connect is
    refused. Neither the harness nor the client may call that "not sent":
    the node may have applied the write before it died."""
    cluster = LocalCluster(tmp_path / "c")
    cluster.start()
    try:
        leader = cluster.wait_ready()
        target = cluster.node(leader).url

        async def go() -> tuple[Any, BaseException | None]:
            recorder = HistoryRecorder(tmp_path / "history.jsonl")
            async with aiohttp.ClientSession() as session, AsyncClient([target], timeout=3.0, retries=2) as client:
                api = NodeApi(session, target)
                # Open the kept-alive connections the writes will reuse.
                assert (await api.get("warm-up")).status == 404
                assert await client.get("warm-up") is None
                for node in cluster.nodes:  # no quorum: the writes stay in flight
                    if node.node_id != leader:
                        cluster.pause(node.node_id)
                harness_write = asyncio.ensure_future(
                    perform(SetWorkload(), api, HistoryOp("add", SET_NAME, 7), 0, recorder)
                )
                client_write = asyncio.ensure_future(client.put("in-flight", b"v"))
                await asyncio.sleep(0.3)
                assert not harness_write.done() and not client_write.done()
                cluster.kill(leader)
                completion = await harness_write
                error = (await asyncio.gather(client_write, return_exceptions=True))[0]
                recorder.close()
                return (completion, recorder.events[-1]), error

        (completion, event), error = asyncio.run(go())
        assert completion.type == "info" and event.type == "info", completion
        assert isinstance(error, OutcomeUnknown), error
        assert "may or may not have been applied" in str(error)
    finally:
        cluster.stop()
