"""`raftkv lease grant|keepalive|revoke|list|show`: leases (/v1/leases, docs/leases.md).

Endpoints come from --endpoints or RAFTKV_ENDPOINTS, as for the other
client commands. Exit codes as those: 0 ok; 1 no such lease (it expired,
was revoked or never existed) or refused as inapplicable (409); 2 usage or
a request the server found malformed; 3 cluster unavailable or outcome
unknown. `keepalive` runs until Ctrl-C or SIGTERM (exit 0) or until the
lease is gone (exit 1).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType

import orjson

from raftkv.cli_client import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    _common_options,
    connection,
    format_table,
)
from raftkv.client import (
    Client,
    ClientError,
    InvalidResponse,
    NotFound,
    OutcomeUnknown,
    RequestRejected,
    TLSFailure,
    Unavailable,
)
from raftkv.client.leases import MAX_TTL, RETRY_AFTER_FAILURE, lease_id_text

Handler = Callable[[argparse.Namespace, Client], int]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "lease",
        help="grant, keep alive, revoke, list or show leases",
        description=(
            "Leases: a key written with `raftkv put KEY VALUE --lease ID` is deleted when its "
            "lease expires (no keepalive within its TTL) or is revoked. Lease ids are 16 hex "
            "digits. Exit: 0 ok, 1 no such lease, 2 bad request, 3 unavailable or outcome unknown."
        ),
        epilog=(
            "example: ID=$(raftkv lease grant 10 | cut -d' ' -f1); raftkv put service/n1 up --lease $ID; "
            "raftkv lease keepalive $ID"
        ),
    )
    common = _common_options()  # --endpoints, --timeout, --user, --cacert...: as the other client commands
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(name: str, help_text: str, description: str | None = None) -> argparse.ArgumentParser:
        sub = actions.add_parser(name, parents=[common], help=help_text, description=description or help_text)
        sub.set_defaults(parser=sub)
        return sub

    grant = action("grant", "make a lease of TTL seconds; prints 'ID ttl=TTL revision=REV'")
    grant.add_argument("ttl", type=int, metavar="TTL", help=f"seconds, 1 to {MAX_TTL}")
    grant.add_argument("--id", help="the lease id to use (hex; default: a random one)")
    keep = action(
        "keepalive",
        "renew a lease every TTL/3 until Ctrl-C or SIGTERM, printing its remaining TTL",
        "Renew the lease every TTL/3 and print a line per renewal. Stops on Ctrl-C or "
        "SIGTERM (exit 0; the lease then lives out its TTL) or when the lease is gone (exit 1).",
    )
    keep.add_argument("id", metavar="ID")
    revoke = action("revoke", "end a lease now and delete its keys")
    revoke.add_argument("id", metavar="ID")
    ls = action("list", "print each live lease: id, ttl, remaining seconds")
    ls.add_argument("--json", action="store_true", help="print the API's fields as JSON")
    show = action("show", "print a lease's ttl, remaining seconds and keys")
    show.add_argument("id", metavar="ID")
    show.add_argument("--json", action="store_true", help="print the API's fields as JSON")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = args.parser
    if not args.timeout > 0:
        parser.error("--timeout must be > 0")
    handler = _HANDLERS[args.action]
    err = sys.stderr
    target = connection(args)
    try:
        if getattr(args, "id", None) is not None:
            args.id = lease_id_text(args.id)
        with target.client(args.timeout) as client:
            return handler(args, client)
    except (ValueError, TypeError) as exc:
        parser.error(str(exc))
    except NotFound as exc:
        print(f"error: {exc.message or 'no such lease'}", file=err)
        return EXIT_FAILED
    except OutcomeUnknown as exc:
        print(
            f"error: the request was sent but no answer arrived: it MAY OR MAY NOT have been applied "
            f"(see `raftkv lease list`). ({exc})",
            file=err,
        )
        return EXIT_UNAVAILABLE
    except TLSFailure as exc:
        print(f"error: no TLS connection to the cluster, nothing was changed: {exc}", file=err)
        return EXIT_UNAVAILABLE
    except Unavailable as exc:
        print(f"error: cluster unavailable, nothing was changed: {exc}", file=err)
        return EXIT_UNAVAILABLE
    except RequestRejected as exc:
        print(f"error: rejected by the server ({exc.status} {exc.code}), nothing was changed: {exc.message}", file=err)
        if exc.status == 409:
            return EXIT_FAILED
        return EXIT_USAGE if 400 <= exc.status < 500 else EXIT_UNAVAILABLE
    except InvalidResponse as exc:
        print(f"error: the server sent a response this client does not understand: {exc}", file=err)
        return EXIT_UNAVAILABLE
    except ClientError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_UNAVAILABLE


def _grant(args: argparse.Namespace, client: Client) -> int:
    grant = client.lease_grant(args.ttl, args.id)
    print(f"{grant.id} ttl={grant.ttl} revision={grant.revision}")
    return EXIT_OK


def _revoke(args: argparse.Namespace, client: Client) -> int:
    result = client.lease_revoke(args.id)
    print(f"{result.id} revoked deleted={result.deleted} revision={result.revision}")
    return EXIT_OK


def _list(args: argparse.Namespace, client: Client) -> int:
    found = client.leases()
    if args.json:
        _print_json({"leases": [info.to_json() for info in found]})
        return EXIT_OK
    rows = [["ID", "TTL", "REMAINING"]] + [[i.id, str(i.ttl), f"{i.remaining:.1f}"] for i in found]
    print(format_table(rows))
    return EXIT_OK


def _show(args: argparse.Namespace, client: Client) -> int:
    info = client.lease_info(args.id)
    if args.json:
        _print_json(info.to_json())
        return EXIT_OK
    print(f"id={info.id} ttl={info.ttl} remaining={info.remaining:.1f}")
    for key in info.keys or []:
        print(f"key={key}")
    return EXIT_OK


def _keepalive(args: argparse.Namespace, client: Client) -> int:
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.is_set():
            try:
                renewed = client.lease_keepalive(args.id)
            except (Unavailable, OutcomeUnknown) as exc:
                # Keep trying: the lease may still be alive once a leader is back.
                print(f"warning: renewing {args.id} failed, retrying: {exc}", file=sys.stderr, flush=True)
                stop.wait(RETRY_AFTER_FAILURE)
                continue
            try:
                remaining = f"{client.lease_info(args.id).remaining:.1f}"
            except (Unavailable, OutcomeUnknown):
                remaining = "?"
            print(f"{renewed.id} renewed ttl={renewed.ttl} remaining={remaining}", flush=True)
            stop.wait(renewed.ttl / 3)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return EXIT_OK


def _print_json(obj: object) -> None:
    sys.stdout.write(orjson.dumps(obj, option=orjson.OPT_INDENT_2).decode() + "\n")
    sys.stdout.flush()


_HANDLERS: dict[str, Handler] = {
    "grant": _grant,
    "keepalive": _keepalive,
    "revoke": _revoke,
    "list": _list,
    "show": _show,
}
