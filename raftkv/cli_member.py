"""`raftkv member list|add|promote|remove`: the cluster's members (/v1/members).

Endpoints, --user and the TLS files as for the other client commands
(--endpoints or RAFTKV_ENDPOINTS, ...; membership is root's once auth is
on). Changes go to the leader (found by asking the endpoints; a node that
says not_leader sends us looking again). Exit codes as the other client
commands: 0 ok; 1 refused as inapplicable (409: not caught up, would lose
quorum, already a member); 2 usage or a request the server refused (401
credentials, 403 not root, other 4xx, 404 unknown member); 3 cluster
unavailable, outcome unknown, or no TLS handshake succeeded.
"""

from __future__ import annotations

import argparse
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import orjson

from raftkv.cli_client import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    add_connection_options,
    connection,
)
from raftkv.client.blocking import BearerAuth
from raftkv.client.errors import RequestRejected
from raftkv.client.tls import is_tls_failure, tls_error_text, tls_failure_hint

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
            "the add for a node it starts. Once auth is on, only root may do this (--user root). "
            "Exit: 0 ok, 1 refused (409), 2 bad request or refused (401/403), 3 unavailable."
        ),
        epilog="example: raftkv member add n4 10.0.0.4:7101 && raftkv member promote n4 && raftkv member remove n1",
    )
    _add_options(p, defaults=True)
    # The same options after the action's name too (`raftkv member list --user root`).
    options = argparse.ArgumentParser(add_help=False)
    _add_options(options, defaults=False)
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        return actions.add_parser(name, parents=[options], help=help_text, description=help_text)

    ls = action("list", "print each member: id, role, peer address (and replication, from the leader)")
    ls.add_argument("--json", action="store_true", help="print the API's JSON")
    add = action("add", "add a learner: ID and its peer address HOST:PORT")
    add.add_argument("id")
    add.add_argument("peer_addr", metavar="HOST:PORT")
    promote = action("promote", "make a caught-up learner a voter")
    promote.add_argument("id")
    remove = action("remove", "remove a member (refused if the rest could not form a quorum)")
    remove.add_argument("id")
    p.set_defaults(func=_run, parser=p)


def _add_options(parser: argparse.ArgumentParser, defaults: bool) -> None:
    add_connection_options(parser, defaults=defaults)
    parser.add_argument(
        "--timeout",
        type=float,
        default=10.0 if defaults else argparse.SUPPRESS,
        help="seconds to wait for a change to commit (default 10)",
    )


class _Api:
    """Calls to the endpoints with the command's TLS context and token."""

    def __init__(self, endpoints: list[str], context: ssl.SSLContext | None, auth: BearerAuth) -> None:
        self.endpoints = endpoints
        self.context = context
        self.auth = auth
        # Endpoints whose last handshake failed: a certificate that does not
        # verify will not start to while we wait for a leader.
        self.tls_failed: set[str] = set()

    def request(self, method: str, endpoint: str, path: str, body: bytes | None, timeout: float) -> tuple[int, Any]:
        """(status, JSON answer); status 0 and a reason when the node could not be
        reached. A 401 for a stale token is asked again once with a new one."""
        status, answer = self._once(method, endpoint, path, body, timeout)
        if self.auth.renew(status, _code(answer)):
            status, answer = self._once(method, endpoint, path, body, timeout)
        return status, answer

    def _once(self, method: str, endpoint: str, path: str, body: bytes | None, timeout: float) -> tuple[int, Any]:
        self.tls_failed.discard(endpoint)
        try:
            headers = {"Content-Type": "application/json", **self.auth.headers(endpoint)}
            request = urllib.request.Request(f"{endpoint}{path}", data=body, method=method, headers=headers)
            with urllib.request.urlopen(request, timeout=timeout, context=self.context) as r:
                return r.status, orjson.loads(r.read() or b"null")
        except urllib.error.HTTPError as exc:
            try:
                return exc.code, orjson.loads(exc.read() or b"null")
            except orjson.JSONDecodeError:
                return exc.code, None
        except (OSError, orjson.JSONDecodeError) as exc:
            if is_tls_failure(exc):
                self.tls_failed.add(endpoint)
                return 0, f"{endpoint}: TLS handshake failed: {tls_error_text(exc)}"
            return 0, f"{endpoint}: {exc!r}"


def _code(answer: Any) -> str | None:
    error = answer.get("error") if isinstance(answer, dict) else None
    return error.get("code") if isinstance(error, dict) else None


def _run(args: argparse.Namespace) -> int:
    if not args.timeout > 0:
        args.parser.error("--timeout must be > 0")
    target = connection(args)
    api = _Api(target.endpoints, target.ssl_context, BearerAuth(target.user, target.password, target.ssl_context))
    try:
        if args.action == "list":
            return _list(api, args.json)
        quoted = urllib.parse.quote(args.id, safe="")
        if args.action == "add":
            body = orjson.dumps({"id": args.id, "peer_addr": args.peer_addr, "learner": True})
            status, answer = _on_leader(api, "POST", "/v1/members", body, args.timeout)
        elif args.action == "promote":
            status, answer = _on_leader(api, "POST", f"/v1/members/{quoted}/promote", None, args.timeout)
        else:
            status, answer = _on_leader(api, "DELETE", f"/v1/members/{quoted}", None, args.timeout)
    except Unreachable as exc:
        if api.tls_failed.issuperset(api.endpoints):
            print(f"error: no TLS connection to the cluster, nothing was changed: {tls_failure_hint(exc)}; {exc}",
                  file=sys.stderr)
        else:
            print(f"error: cluster unavailable, nothing was changed: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except RequestRejected as exc:  # logging in failed: a wrong password
        return _refused(exc.status, {"error": {"code": exc.code, "message": exc.message}})
    if status in (200, 201):
        _print_members(answer)
        return EXIT_OK
    if status == 504:
        error = answer.get("error", {}) if isinstance(answer, dict) else {}
        print(f"error: the change was sent but did not commit in time: it MAY OR MAY NOT have been applied "
              f"(see `raftkv member list`). ({error.get('code', '?')}: {error.get('message', answer)})", file=sys.stderr)
        return EXIT_UNAVAILABLE
    return _refused(status, answer)


def _refused(status: int, answer: Any) -> int:
    error = answer.get("error", {}) if isinstance(answer, dict) else {}
    code, message = error.get("code", "?"), error.get("message", answer)
    print(f"error: refused by the server ({status} {code}), nothing was changed: {message}", file=sys.stderr)
    if status == 409:
        return EXIT_FAILED
    return EXIT_USAGE if 400 <= status < 500 else EXIT_UNAVAILABLE


def _list(api: _Api, as_json: bool) -> int:
    views = _views(api)
    view = views.leader or views.any
    if view is None:
        if views.refusal is not None:
            return _refused(*views.refusal)
        raise Unreachable(f"no endpoint answered GET /v1/members: {'; '.join(views.errors)}")
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


@dataclass
class _Views:
    """What the endpoints said to GET /v1/members."""

    leader: dict[str, Any] | None = None  # the leader's view, with "_url"
    any: dict[str, Any] | None = None
    refusal: tuple[int, Any] | None = None  # a 4xx: credentials or permission, the same on every node
    errors: list[str] = field(default_factory=list)  # endpoints that could not be reached, and why


def _views(api: _Api) -> _Views:
    views = _Views()
    for url in api.endpoints:
        status, answer = api.request("GET", url, "/v1/members", None, 5.0)
        if status == 0:
            views.errors.append(str(answer))
            continue
        if 400 <= status < 500:
            views.refusal = views.refusal or (status, answer)
            continue
        if status != 200 or not isinstance(answer, dict):
            views.errors.append(f"{url}: {status} {_code(answer)}")
            continue
        views.any = views.any or answer
        if answer.get("leader_id") is not None and answer.get("leader_id") == answer.get("node_id"):
            views.leader = {**answer, "_url": url}
            return views
    return views


def _on_leader(api: _Api, method: str, path: str, body: bytes | None, timeout: float) -> tuple[int, Any]:
    deadline = time.monotonic() + LEADER_SEARCH_SECONDS
    while True:
        views = _views(api)
        if views.leader is not None:
            url = views.leader.pop("_url")
            status, answer = api.request(method, url, f"{path}?timeout={timeout:g}", body, timeout + 5)
            code = _code(answer)
            retry = status == 0 or status == 503 or code in ("not_leader", "change_pending")
            if not retry or time.monotonic() > deadline:
                if status == 0:
                    raise Unreachable(str(answer))
                return status, answer
        elif views.refusal is not None and views.any is None:
            return views.refusal  # no use looking for a leader that would refuse us too
        elif time.monotonic() > deadline or api.tls_failed.issuperset(api.endpoints):
            raise Unreachable(f"no leader among {', '.join(api.endpoints)}: {'; '.join(views.errors) or 'none leads'}")
        time.sleep(0.3)

