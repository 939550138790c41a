"""Toxiproxy's HTTP API (the subset its clients use) on aiohttp.

Routes, JSON shapes and status codes follow Toxiproxy 2.x: 201 for a new
proxy, 204 for deletes and reset, ``{"error": ..., "status": ...}`` for
every failure.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

import orjson
from aiohttp import web

from .errors import ApiError, bad_request
from .proxy_config import parse_new_proxy, parse_populate
from .registry import ProxyRegistry

# The Toxiproxy API version whose behaviour this server follows.
VERSION = "2.12.0"

REGISTRY_KEY = web.AppKey("registry", ProxyRegistry)

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(body: object, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json"
    )


def error_response(error: ApiError) -> web.Response:
    return json_response(error.to_json(), status=error.status)


@web.middleware
async def api_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as error:
        return error_response(error)
    except web.HTTPException as error:
        # Unknown routes and methods get the same error shape as the rest.
        if error.status >= 400:
            return error_response(ApiError(error.reason, error.status))
        raise


async def read_json(request: web.Request) -> object:
    raw = await request.read()
    if not raw.strip():
        raise bad_request("empty body, expected JSON")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise bad_request(f"invalid JSON: {error}") from error


def registry_of(request: web.Request) -> ProxyRegistry:
    return request.app[REGISTRY_KEY]


async def list_proxies(request: web.Request) -> web.Response:
    proxies = registry_of(request).all()
    return json_response({proxy.name: proxy.to_json() for proxy in proxies})


async def create_proxy(request: web.Request) -> web.Response:
    config = parse_new_proxy(await read_json(request))
    proxy = await registry_of(request).create(config)
    return json_response(proxy.to_json(), status=201)


async def populate(request: web.Request) -> web.Response:
    configs = parse_populate(await read_json(request))
    proxies, error = await registry_of(request).populate(configs)
    body: dict[str, object] = {"proxies": [proxy.to_json() for proxy in proxies]}
    if error is not None:
        body.update(error.to_json())
        return json_response(body, status=error.status)
    return json_response(body, status=201)


async def show_proxy(request: web.Request) -> web.Response:
    proxy = registry_of(request).get(request.match_info["proxy"])
    return json_response(proxy.to_json())


async def update_proxy(request: web.Request) -> web.Response:
    name = request.match_info["proxy"]
    registry = registry_of(request)
    registry.get(name)  # 404 before complaining about the body
    proxy = await registry.update(name, await read_json(request))
    return json_response(proxy.to_json())


async def delete_proxy(request: web.Request) -> web.Response:
    await registry_of(request).delete(request.match_info["proxy"])
    return web.Response(status=204)


async def list_toxics(request: web.Request) -> web.Response:
    proxy = registry_of(request).get(request.match_info["proxy"])
    return json_response([spec.to_json() for spec in proxy.toxics.values()])


async def create_toxic(request: web.Request) -> web.Response:
    registry = registry_of(request)
    proxy_name = request.match_info["proxy"]
    registry.get(proxy_name)
    spec = registry.add_toxic(proxy_name, await read_json(request))
    return json_response(spec.to_json())


async def show_toxic(request: web.Request) -> web.Response:
    proxy = registry_of(request).get(request.match_info["proxy"])
    return json_response(proxy.get_toxic(request.match_info["toxic"]).to_json())


async def update_toxic(request: web.Request) -> web.Response:
    registry = registry_of(request)
    proxy_name, toxic_name = request.match_info["proxy"], request.match_info["toxic"]
    registry.get(proxy_name).get_toxic(toxic_name)
    spec = registry.update_toxic(proxy_name, toxic_name, await read_json(request))
    return json_response(spec.to_json())


async def delete_toxic(request: web.Request) -> web.Response:
    registry_of(request).remove_toxic(
        request.match_info["proxy"], request.match_info["toxic"]
    )
    return web.Response(status=204)


async def reset(request: web.Request) -> web.Response:
    await registry_of(request).reset()
    return web.Response(status=204)


async def version(request: web.Request) -> web.Response:
    return json_response({"version": VERSION})


def build_app(registry: ProxyRegistry) -> web.Application:
    app = web.Application(middlewares=[api_errors])
    app[REGISTRY_KEY] = registry
    app.router.add_post("/reset", reset)
    app.router.add_get("/proxies", list_proxies)
    app.router.add_post("/proxies", create_proxy)
    app.router.add_post("/populate", populate)
    app.router.add_get("/proxies/{proxy}", show_proxy)
    app.router.add_post("/proxies/{proxy}", update_proxy)
    app.router.add_patch("/proxies/{proxy}", update_proxy)
    app.router.add_delete("/proxies/{proxy}", delete_proxy)
    app.router.add_get("/proxies/{proxy}/toxics", list_toxics)
    app.router.add_post("/proxies/{proxy}/toxics", create_toxic)
    app.router.add_get("/proxies/{proxy}/toxics/{toxic}", show_toxic)
    app.router.add_post("/proxies/{proxy}/toxics/{toxic}", update_toxic)
    app.router.add_patch("/proxies/{proxy}/toxics/{toxic}", update_toxic)
    app.router.add_delete("/proxies/{proxy}/toxics/{toxic}", delete_toxic)
    app.router.add_get("/version", version)
    return app


async def serve(
    host: str,
    port: int,
    *,
    seed: int | None = None,
    initial_proxies: object = None,
    stop: asyncio.Event,
) -> None:
    """Run the API until ``stop`` is set, then close every proxy.

    ``initial_proxies`` is a populate body (a JSON array) applied before the
    API starts answering, like ``toxiproxy-server -config``.
    """
    registry = ProxyRegistry(seed)
    if initial_proxies is not None:
        _, error = await registry.populate(parse_populate(initial_proxies))
        if error is not None:
            await registry.close()
            raise error
    runner = web.AppRunner(build_app(registry), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        log.info("toxiproxy API listening on http://%s:%d", host, port)
        await stop.wait()
    finally:
        await registry.close()
        await runner.cleanup()
