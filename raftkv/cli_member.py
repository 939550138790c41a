"""`raftkv member list|add|promote|remove`: the cluster's members (/v1/members).

Endpoints come from --endpoints or RAFTKV_ENDPOINTS, as for the other
client commands. Changes go to the leader (found by asking the endpoints;
a node that says not_leader sends us looking again). Exit codes as the
other client commands: 0 ok; 1 refused as inapplicable (409: not caught up,
would lose quorum, already a member); 2 usage or a request the server
found malformed (other 4xx, 404 unknown member); 3 cluster unavailable or
outcome unknown.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import orjson

from raftkv.cli_client import DEFAULT_ENDPOINTS, EXIT_FAILED, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE
from raftkv.client.retry import parse_endpoints

# How long a change keeps looking for a leader (elections take about a second).
LEADER_SEARCH_SECONDS = 10.0


class Unreachable(Exception):
    """No endpoint answered usefully."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "member",
        help="list, add, promote or remove cluster members",
        description=(
            "Cluster membership (native engine). A new node joins as a learner (it receives the "
            "log but does not vote), is promoted to voter once it has caught up, and a voter is "
            "removed only if the rest can still form a quorum. `raftkv serve --join URL` does "
            "the add for a node it starts. Exit: 0 ok, 1 refused (409), 2 bad request, 3 unavailable."
        ),
        epilog="example: raftkv member add n4 10.0.0.4:7101 && raftkv member promote n4 && raftkv member remove n1",
    )
    p.add_argument("--endpoints", default=None, help="comma-separated node URLs (default: $RAFTKV_ENDPOINTS or " + DEFAULT_ENDPOINTS + ")")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for a change to commit (default 10)")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = actions.add_parser("list", help="print each member: id, role, peer address (and replication, from the leader)")
    ls.add_argument("--json", action="store_true", help="print the API's JSON")
    add = actions.add_parser("add", help="add a learner: ID and its peer address HOST:PORT")
    add.add_argument("id")
    add.add_argument("peer_addr", metavar="HOST:PORT")
    promote = actions.add_parser("promote", help="make a caught-up learner a voter")
    promote.add_argument("id")
    remove = actions.add_parser("remove", help="remove a member (refused if the rest could not form a quorum)")
    remove.add_argument("id")
    p.set_defaults(func=_run, parser=p)


def _run(args: argparse.Namespace) -> int:
    try:
        endpoints = parse_endpoints(args.endpoints or os.environ.get("RAFTKV_ENDPOINTS") or DEFAULT_ENDPOINTS)
    except ValueError as exc:
        args.parser.error(f"--endpoints: {exc}")
    if not args.timeout > 0:
        args.parser.error("--timeout must be > 0")
    try:
        if args.action == "list":
            return _list(endpoints, args.json)
        quoted = urllib.parse.quote(args.id, safe="")
        if args.action == "add":
            body = orjson.dumps({"id": args.id, "peer_addr": args.peer_addr, "learner": True})
            status, answer = _on_leader(endpoints, "POST", "/v1/members", body, args.timeout)
        elif args.action == "promote":
            status, answer = _on_leader(endpoints, "POST", f"/v1/members/{quoted}/promote", None, args.timeout)
        else:
            status, answer = _on_leader(endpoints, "DELETE", f"/v1/members/{quoted}", None, args.timeout)
    except Unreachable as exc:
        print(f"error: cluster unavailable, nothing was changed: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    if status in (200, 201):
        _print_members(answer)
        return EXIT_OK
    error = answer.get("error", {}) if isinstance(answer, dict) else {}
    code, message = error.get("code", "?"), error.get("message", answer)
    if status == 504:
        print(f"error: the change was sent but did not commit in time: it MAY OR MAY NOT have been applied "
              f"(see `raftkv member list`). ({code}: {message})", file=sys.stderr)
        return EXIT_UNAVAILABLE
    print(f"error: refused by the server ({status} {code}), nothing was changed: {message}", file=sys.stderr)
    if status == 409:
        return EXIT_FAILED
    return EXIT_USAGE if 400 <= status < 500 else EXIT_UNAVAILABLE


def _list(endpoints: list[str], as_json: bool) -> int:
    leader_view, any_view = _views(endpoints)
    view = leader_view or any_view
    if view is None:
        raise Unreachable(f"no endpoint answered GET /v1/members ({', '.join(endpoints)})")
    if as_json:
        sys.stdout.write(orjson.dumps(view).decode() + "\n")
    else:
        _print_members(view)
    return EXIT_OK


def _print_members(view: Any) -> None:
    members = view.get("members", []) if isinstance(view, dict) else []
    leader = view.get("leader_id") if isinstance(view, dict) else None
    print("ID\tROLE\tPEER_ADDR\tMATCH_INDEX\tACTIVE")
    for m in members:
        role = m["role"] + (" (leader)" if m["id"] == leader else "")
        match = m.get("match_index", "-")
        active = {True: "yes", False: "no"}.get(m.get("recently_active"), "-")
        print(f"{m['id']}\t{role}\t{m['peer_addr']}\t{match}\t{active}")


def _views(endpoints: list[str]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(the leader's /v1/members with ``_url``, any node's), as far as they answer."""
    any_view = None
    for url in endpoints:
        status, answer = _request("GET", f"{url}/v1/members", None, 5.0)
        if status != 200 or not isinstance(answer, dict):
            continue
        any_view = any_view or answer
        if answer.get("leader_id") is not None and answer.get("leader_id") == answer.get("node_id"):
            return {**answer, "_url": url}, any_view
    return None, any_view


def _on_leader(endpoints: list[str], method: str, path: str, body: bytes | None, timeout: float) -> tuple[int, Any]:
    deadline = time.monotonic() + LEADER_SEARCH_SECONDS
    while True:
        leader_view, _ = _views(endpoints)
        if leader_view is not None:
            url = leader_view.pop("_url")
            status, answer = _request(method, f"{url}{path}?timeout={timeout:g}", body, timeout + 5)
            code = answer.get("error", {}).get("code") if isinstance(answer, dict) else None
            retry = status == 0 or status == 503 or code in ("not_leader", "change_pending")
            if not retry or time.monotonic() > deadline:
                if status == 0:
                    raise Unreachable(f"{url}: {answer}")
                return status, answer
        elif time.monotonic() > deadline:
            raise Unreachable(f"no leader among {', '.join(endpoints)}")
        time.sleep(0.3)


def _request(method: str, url: str, body: bytes | None, timeout: float) -> tuple[int, Any]:
    """(status, JSON answer); status 0 when the node could not be reached."""
    request = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status, orjson.loads(r.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, orjson.loads(exc.read() or b"null")
        except orjson.JSONDecodeError:
            return exc.code, None
    except (OSError, orjson.JSONDecodeError) as exc:
        return 0, repr(exc)
