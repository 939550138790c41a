"""The server's own dispatch, in-process: a handler bug still answers JSON."""

from __future__ import annotations

import asyncio

import orjson
from aiohttp.test_utils import make_mocked_request

from raftkv.engines.pysyncobj_engine import PySyncObjEngine
from raftkv.kv.limits import Limits
from raftkv.kv.state_machine import KVStateMachine
from raftkv.server.http_api import HttpApi


def test_an_unexpected_handler_error_is_a_json_500(tmp_path) -> None:  # type: ignore[no-untyped-def]
    machine = KVStateMachine()
    # Never started: the route below does not reach the engine.
    engine = PySyncObjEngine("n1", {"n1": "127.0.0.1:1"}, tmp_path, machine)
    api = HttpApi(engine, machine, Limits())

    async def broken(request: object) -> None:
        raise RuntimeError("boom")

    api._route_table["/healthz"]["GET"] = broken  # type: ignore[assignment]

    async def go() -> tuple[int, dict]:
        response = await api.dispatch(make_mocked_request("GET", "/healthz"))
        return response.status, orjson.loads(response.body)  # type: ignore[attr-defined]

    status, body = asyncio.run(go())
    assert status == 500
    assert body["error"]["code"] == "internal_error"
    assert "may or may not have been applied" in body["error"]["message"]
