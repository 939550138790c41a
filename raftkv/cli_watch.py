"""`raftkv watch PREFIX | --key K`: print each committed change as it happens.

Built on the client's Watch iterator (raftkv/client/watch.py), so a node
that dies, loses its leader or stops is left for the next endpoint, from
the last revision fully printed: no line is lost or printed twice. Exit
codes as the other client commands: 0 after --count events (or Ctrl-C);
1 the start revision is compacted; 2 usage or a request the server refused
(malformed, 401 no or wrong credentials, 403 no read permission); 3 no
endpoint answered within --max-reconnects attempts, or no TLS handshake
succeeded. Endpoints, --user and the TLS files as for the other client
commands.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import sys
from typing import TextIO

import orjson

from raftkv.cli_client import EXIT_FAILED, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE, add_connection_options, connection
from raftkv.client.errors import ClientError, RequestRejected
from raftkv.client.watch import Watch, WatchCompacted, WatchEvent


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "watch",
        help="print every change to keys under PREFIX (or to one --key) as it is committed",
        description=(
            "Stream the committed changes to the keys under PREFIX, or to one key with --key, "
            "one line per event: REVISION put KEY VALUE, or REVISION delete KEY. Values that "
            "are not UTF-8 text, or hold a newline, are printed as base64:<data>. Starts now "
            "(as of a linearizable read) or at --rev. When the node it streams from fails, it "
            "carries on from another endpoint without losing or repeating an event. "
            "Exit: 0 after --count events or Ctrl-C, 1 compacted, 2 bad request or refused "
            "(401/403), 3 unavailable."
        ),
        epilog="example: raftkv watch config/ --rev 1 --prev-kv",
    )
    p.add_argument("prefix", nargs="?", metavar="PREFIX", help="watch keys starting with this ('' = every key)")
    p.add_argument("--key", help="watch this one key instead of a prefix")
    p.add_argument("--rev", type=int, default=None, metavar="R",
                   help="first revision to print (inclusive; default: from now)")
    p.add_argument("--prev-kv", action="store_true", help="also print each key's previous value")
    p.add_argument("--json", action="store_true", help="print each event as the API's JSON object")
    p.add_argument("--count", type=int, default=None, metavar="N", help="exit after N events")
    p.add_argument("--max-reconnects", type=int, default=None, metavar="N",
                   help="give up (exit 3) after N failed connection attempts in a row (default: never)")
    add_connection_options(p, key_flag=False)  # --key is the key to watch here
    p.set_defaults(func=_run, parser=p)


def _run(args: argparse.Namespace) -> int:
    if (args.prefix is None) == (args.key is None):
        args.parser.error("give PREFIX or --key KEY (one of them)")
    if args.key == "":
        args.parser.error("--key must not be empty")
    if args.rev is not None and args.rev < 1:
        args.parser.error("--rev must be >= 1")
    if args.count is not None and args.count < 1:
        args.parser.error("--count must be >= 1")
    target = connection(args)
    watch = Watch(
        target.endpoints,
        key=args.key,
        prefix=None if args.key is not None else args.prefix,
        start_revision=args.rev,
        prev_kv=args.prev_kv,
        max_reconnects=args.max_reconnects,
        user=target.user,
        password=target.password,
        **target.tls_files(),
    )
    printed = 0
    try:
        with watch:
            for event in watch:
                print(orjson.dumps(event.to_json()).decode() if args.json else format_event(event), flush=True)
                printed += 1
                if args.count is not None and printed >= args.count:
                    return EXIT_OK
    except KeyboardInterrupt:
        return EXIT_OK
    except WatchCompacted as exc:
        return _fail(f"compacted: {exc} (compact revision {exc.compact_revision})", EXIT_FAILED)
    except RequestRejected as exc:
        return _fail(f"{exc.status} {exc.code}: {exc.message}", EXIT_USAGE)
    except (OSError, http.client.HTTPException, ClientError) as exc:
        return _fail(f"unavailable: {exc}", EXIT_UNAVAILABLE)
    return EXIT_OK


def format_event(event: WatchEvent) -> str:
    """``REV put KEY VALUE`` or ``REV delete KEY`` (+ `` prev=VALUE``)."""
    line = f"{event.revision} {event.type} {event.key}"
    if event.value is not None:
        line += " " + printable(event.value)
    if event.prev_kv is not None and event.prev_kv.value is not None:
        line += " prev=" + printable(event.prev_kv.value)
    return line


def printable(value: bytes) -> str:
    """The value as text when it is one-line UTF-8, else ``base64:...``."""
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or "\n" in text or "\r" in text or text.startswith("base64:"):
        return "base64:" + base64.b64encode(value).decode("ascii")
    return text


def _fail(message: str, code: int, out: TextIO | None = None) -> int:
    # sys.stderr looked up now, not when this was defined, so a replaced stderr gets it.
    print(f"raftkv watch: {message}", file=out or sys.stderr)
    return code
