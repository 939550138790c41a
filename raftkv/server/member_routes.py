"""/v1/members: list, add (as a learner), promote and remove cluster members.

Changes are made by the leader, one at a time (docs/raft-core.md): a
follower answers 409 not_leader naming the leader, as
/v1/leadership/transfer does, and clients retry there. Each change is
answered once its log entry is committed.
"""

from __future__ import annotations

import re
from typing import Any, Protocol

from aiohttp import web

from raftkv.errors import EngineStoppedError, NoLeaderError, NotLeaderError, OutcomeUnknownError
from raftkv.server.http_api import HttpApi, _json_body, _method_not_allowed, _query
from raftkv.server.responses import ApiError, json_response, no_leader

# A learner may be promoted once it is at most this many entries behind the
# leader's commit index. A voter that lags counts towards the quorum
# without being able to acknowledge new entries until it catches up, so a
# promotion of a far-behind learner would leave a 3-voter cluster (now 4)
# one failure from stalling; 1,000 entries is under a second of
# replication for a learner that is streaming.
PROMOTE_MAX_LAG = 1000
# Node ids name certificates (URI SAN raftkv://node/<id>) and data dirs.
_NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}\Z")
_ADD_FIELDS = {"id", "peer_addr", "learner"}
# HOST:PORT with a DNS name, IPv4 or [IPv6] host (api/openapi.yaml has the same pattern).
_PEER_ADDR = re.compile(r"(?:[A-Za-z0-9][A-Za-z0-9.-]{0,252}|\[[0-9A-Fa-f:.]{2,45}\]):(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})\Z")


class MembershipEngine(Protocol):
    """What the routes need from an engine that supports membership changes."""

    def member_progress(self) -> dict[str, dict[str, Any]]: ...

    async def add_learner(self, node_id: str, peer_addr: str, timeout: float) -> None: ...

    async def promote(self, node_id: str, timeout: float, max_lag: int) -> None: ...

    async def remove_member(self, node_id: str, timeout: float) -> None: ...


def install(api: HttpApi) -> None:
    routes = MemberRoutes(api)
    api.add_route("/v1/members", "GET", routes.list_members)
    api.add_route("/v1/members", "POST", routes.add_member)
    api.add_subtree("/v1/members/", routes.member)


class MemberRoutes:
    def __init__(self, api: HttpApi) -> None:
        self.api = api

    def _members_json(self) -> dict[str, Any]:
        status = self.api.engine.status()
        progress = self._progress()
        members = []
        for m in status.members:
            item: dict[str, Any] = {"id": m.id, "peer_addr": m.peer_addr, "role": "voter" if m.voter else "learner"}
            if m.id in progress:
                item.update(progress[m.id])
            members.append(item)
        return {"node_id": status.node_id, "leader_id": status.leader_id, "members": members}

    def _progress(self) -> dict[str, dict[str, Any]]:
        engine = self.api.engine
        if not hasattr(engine, "member_progress"):
            return {}
        return engine.member_progress()  # type: ignore[no-any-return]

    def _membership_engine(self) -> MembershipEngine:
        engine = self.api.engine
        if not hasattr(engine, "add_learner"):
            raise ApiError(
                501,
                "not_supported",
                f"the {engine.name} engine cannot change its members; run the native engine",
            )
        return engine  # type: ignore[return-value]

    async def list_members(self, request: web.BaseRequest) -> web.Response:
        self.api._timeout(_query(request, {"timeout"}))
        return json_response(self._members_json())

    async def add_member(self, request: web.BaseRequest) -> web.Response:
        query = _query(request, {"timeout"})
        timeout = self.api._timeout(query)
        payload = await _json_body(request, self.api.limits)
        node_id, peer_addr = _parse_add(payload)
        engine = self._membership_engine()
        await _run(engine.add_learner(node_id, peer_addr, timeout))
        return json_response(self._members_json(), status=201)

    async def member(self, request: web.BaseRequest, rest: str) -> web.Response:
        node_id, _, action = rest.partition("/")
        if action == "promote":
            if request.method != "POST":
                raise _method_not_allowed(request, ("POST",))
        elif action == "" and "/" not in rest:
            if request.method != "DELETE":
                raise _method_not_allowed(request, ("DELETE",))
        else:
            raise ApiError(404, "not_found", f"no such path: /v1/members/{rest}")
        query = _query(request, {"timeout"})
        timeout = self.api._timeout(query)
        await _json_body(request, self.api.limits, empty=None)  # read (and bound) any body
        _check_node_id(node_id)
        engine = self._membership_engine()
        if action == "promote":
            await _run(engine.promote(node_id, timeout, PROMOTE_MAX_LAG))
        else:
            await _run(engine.remove_member(node_id, timeout))
        return json_response(self._members_json())


async def _run(change: Any) -> None:
    """Await a membership change, answering its failures as HTTP errors."""
    from raftkv.engines.native.engine import MembershipRefused, UnknownMember

    try:
        await change
    except UnknownMember as exc:
        raise ApiError(404, "not_found", str(exc)) from None
    except MembershipRefused as exc:
        headers = {"Retry-After": "1"} if exc.code == "change_pending" else None
        raise ApiError(409, exc.code, str(exc), headers=headers, **exc.extra) from None
    except NotLeaderError as exc:
        raise ApiError(409, "not_leader", str(exc), leader_id=exc.leader_id) from None
    except (NoLeaderError, EngineStoppedError) as exc:
        raise no_leader(str(exc)) from None
    except OutcomeUnknownError as exc:
        raise ApiError(
            504, "outcome_unknown", f"{exc}; it may or may not have been applied: GET /v1/members to see"
        ) from None


def _check_node_id(node_id: str) -> None:
    if not _NODE_ID.match(node_id):
        raise ApiError(
            400,
            "invalid_argument",
            "a node id is 1-63 characters: letters, digits, '.', '_' or '-', starting with a letter or digit; "
            f"got {node_id[:70]!r}",
        )


def _parse_add(payload: Any) -> tuple[str, str]:
    if not isinstance(payload, dict):
        raise ApiError(400, "wrong_type", 'request body must be a JSON object like {"id": "n4", "peer_addr": "HOST:PORT", "learner": true}')
    unknown = set(payload) - _ADD_FIELDS
    if unknown:
        raise ApiError(400, "unknown_field", f"unknown field(s): {', '.join(sorted(unknown))}")
    for name in ("id", "peer_addr"):
        if name not in payload:
            raise ApiError(400, "missing_field", f"'{name}' is required")
        if not isinstance(payload[name], str):
            raise ApiError(400, "wrong_type", f"'{name}' must be a string")
    learner = payload.get("learner", True)
    if not isinstance(learner, bool):
        raise ApiError(400, "wrong_type", "'learner' must be true or false")
    if not learner:
        raise ApiError(
            400,
            "invalid_argument",
            "a new member joins as a learner ('learner': true) and is promoted with "
            "POST /v1/members/{id}/promote once it has caught up",
        )
    node_id, peer_addr = payload["id"], payload["peer_addr"]
    _check_node_id(node_id)
    if not _PEER_ADDR.match(peer_addr):
        raise ApiError(
            400, "invalid_argument",
            f"'peer_addr' must be HOST:PORT (a DNS name, IPv4 or [IPv6] address, port 1-65535), got {peer_addr[:80]!r}",
        )
    return node_id, peer_addr
