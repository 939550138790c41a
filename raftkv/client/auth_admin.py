"""Users, roles and the auth switch (/v1/auth, docs/auth.md) from Python.

``AuthAdmin(client)`` wraps a :class:`~raftkv.client.Client` (its
credentials must be root's once auth is on); ``AsyncAuthAdmin`` an
:class:`~raftkv.client.AsyncClient`. Refusals raise RequestRejected or
NotFound with the server's code (``user_exists``, ``root_user_required``...).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import orjson

from raftkv.client.async_client import AsyncClient
from raftkv.client.retry import RequestKind
from raftkv.client.sync_client import Client

PERMISSIONS = ("read", "write", "readwrite")


def _segment(name: str) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"a user or role name must be a non-empty string, got {name!r}")
    return quote(name, safe="")


class AsyncAuthAdmin:
    def __init__(self, client: AsyncClient) -> None:
        self.client = client

    async def _call(self, method: str, path: str, payload: Any = None, params: dict[str, str] | None = None) -> Any:
        body = None if payload is None else orjson.dumps(payload)
        headers = None if payload is None else {"Content-Type": "application/json"}
        # Changes carry no idempotency key: resent only when surely not applied.
        kind = RequestKind.READ if method == "GET" else RequestKind.CONTROL
        resp = await self.client._request(method, path, kind, params=params, body=body, headers=headers)
        self.client._raise_for_status(resp)
        return resp.json()

    async def status(self) -> dict[str, Any]:
        return await self._call("GET", "/v1/auth/status")

    async def enable(self) -> dict[str, Any]:
        return await self._call("POST", "/v1/auth/enable")

    async def disable(self) -> dict[str, Any]:
        return await self._call("POST", "/v1/auth/disable")

    async def users(self) -> list[dict[str, Any]]:
        return (await self._call("GET", "/v1/auth/users"))["users"]

    async def user_add(self, name: str, password: str) -> dict[str, Any]:
        return await self._call("POST", "/v1/auth/users", {"name": name, "password": password})

    async def user_delete(self, name: str) -> dict[str, Any]:
        return await self._call("DELETE", f"/v1/auth/users/{_segment(name)}")

    async def user_passwd(self, name: str, password: str) -> dict[str, Any]:
        return await self._call("PUT", f"/v1/auth/users/{_segment(name)}/password", {"password": password})

    async def user_grant(self, name: str, role: str) -> dict[str, Any]:
        return await self._call("PUT", f"/v1/auth/users/{_segment(name)}/roles/{_segment(role)}")

    async def user_revoke(self, name: str, role: str) -> dict[str, Any]:
        return await self._call("DELETE", f"/v1/auth/users/{_segment(name)}/roles/{_segment(role)}")

    async def roles(self) -> list[dict[str, Any]]:
        return (await self._call("GET", "/v1/auth/roles"))["roles"]

    async def role_add(self, name: str) -> dict[str, Any]:
        return await self._call("POST", "/v1/auth/roles", {"name": name})

    async def role_delete(self, name: str) -> dict[str, Any]:
        return await self._call("DELETE", f"/v1/auth/roles/{_segment(name)}")

    async def role_grant(self, name: str, prefix: str, permission: str) -> dict[str, Any]:
        if permission not in PERMISSIONS:
            raise ValueError(f"permission must be one of {', '.join(PERMISSIONS)}, got {permission!r}")
        return await self._call(
            "POST", f"/v1/auth/roles/{_segment(name)}/permissions", {"prefix": prefix, "permission": permission}
        )

    async def role_revoke(self, name: str, prefix: str) -> dict[str, Any]:
        return await self._call("DELETE", f"/v1/auth/roles/{_segment(name)}/permissions", params={"prefix": prefix})


class AuthAdmin:
    """The blocking twin of :class:`AsyncAuthAdmin`."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._admin = AsyncAuthAdmin(client._async)

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._admin, name)
        if not callable(method) or name.startswith("_"):
            raise AttributeError(name)
        return lambda *args, **kwargs: self._client._run(method(*args, **kwargs))
