"""Client subcommands of the ``raftkv`` CLI: get, put, del, ls, txn, status, transfer.

Exit codes: 0 ok; 1 key not found, precondition failed, txn compare failed or
a request the server refused as inapplicable (409); 2 usage or input the
server rejected as malformed (4xx); 3 cluster unavailable, outcome unknown,
or a server-side error.
"""

from __future__ import annotations

import argparse
import os
import ssl
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO, TextIO

import orjson

from raftkv.client import (
    Client,
    ClientError,
    InvalidResponse,
    NodeStatus,
    NotFound,
    OutcomeUnknown,
    PreconditionFailed,
    RequestRejected,
    TLSFailure,
    Unavailable,
)
from raftkv.client.retry import parse_endpoints
from raftkv.client.tls import client_ssl_context

DEFAULT_ENDPOINTS = "http://127.0.0.1:7001,http://127.0.0.1:7002,http://127.0.0.1:7003"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3

Handler = Callable[[argparse.Namespace, Client], int]


def add_connection_options(parser: argparse.ArgumentParser, key_flag: bool = True, defaults: bool = True) -> None:
    """--endpoints, --user and the TLS files: what every command that talks
    to a cluster takes (read back with :func:`connection`). The client key
    is --key (etcdctl's spelling) or --cert-key; ``key_flag=False`` leaves
    --key to a command that already uses it (`raftkv watch --key KEY`).
    ``defaults=False`` is for a subcommand's copy of options its parent
    command takes too: without a default of its own it cannot overwrite
    what was given before the subcommand's name."""
    default = None if defaults else argparse.SUPPRESS
    parser.add_argument(
        "--endpoints",
        default=default,
        help="comma-separated node URLs, http:// or https:// (default: $RAFTKV_ENDPOINTS or " + DEFAULT_ENDPOINTS + ")",
    )
    parser.add_argument(
        "--user",
        metavar="NAME[:PASSWORD]",
        default=default,
        help="authenticate as this user when auth is enabled (default: $RAFTKV_USER, "
        "password from $RAFTKV_PASSWORD or a prompt)",
    )
    parser.add_argument(
        "--cacert",
        metavar="PEM",
        default=default,
        help="CA certificate to verify https:// endpoints with, e.g. certs/ca.pem "
        "(default: $RAFTKV_CACERT, else the system's trust store)",
    )
    parser.add_argument(
        "--cert",
        metavar="PEM",
        default=default,
        help="client certificate, for nodes started with --client-ca-file (default: $RAFTKV_CERT)",
    )
    parser.add_argument(
        *(("--key", "--cert-key") if key_flag else ("--cert-key",)),
        dest="tls_key",
        metavar="PEM",
        default=default,
        help="the client certificate's private key, unless --cert holds it (default: $RAFTKV_KEY)",
    )


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    add_connection_options(common)
    common.add_argument("--timeout", type=float, default=5.0, help="seconds per attempt (default 5)")
    return common


@dataclass(frozen=True)
class Connection:
    """Where the cluster is and how to talk to it, from the command line and
    the environment: endpoints, credentials and TLS."""

    endpoints: list[str]
    user: str | None
    password: str | None
    ca_file: str | None
    cert_file: str | None
    key_file: str | None
    ssl_context: ssl.SSLContext | None  # the files loaded (None: the system's trust)

    def tls_files(self) -> dict[str, str | None]:
        return {"ca_file": self.ca_file, "cert_file": self.cert_file, "key_file": self.key_file}

    def client(self, timeout: float) -> Client:
        return Client(self.endpoints, timeout=timeout, user=self.user, password=self.password, **self.tls_files())


def connection(args: argparse.Namespace) -> Connection:
    """The options of :func:`add_connection_options`, with their environment
    defaults; a bad value is a usage error (exit 2) before anything is sent."""
    parser: argparse.ArgumentParser = args.parser
    try:
        endpoints = parse_endpoints(args.endpoints or os.environ.get("RAFTKV_ENDPOINTS") or DEFAULT_ENDPOINTS)
    except ValueError as exc:
        parser.error(f"--endpoints: {exc}")
    ca_file = args.cacert or os.environ.get("RAFTKV_CACERT") or None
    cert_file = args.cert or os.environ.get("RAFTKV_CERT") or None
    key_file = args.tls_key or os.environ.get("RAFTKV_KEY") or None
    if key_file is not None and cert_file is None:
        parser.error("the client key (--key, --cert-key or $RAFTKV_KEY) needs its certificate: --cert or $RAFTKV_CERT")
    try:
        context = client_ssl_context(ca_file, cert_file, key_file)
    except ValueError as exc:
        parser.error(str(exc))
    user, password = credentials(args)
    return Connection(endpoints, user, password, ca_file, cert_file, key_file, context)


def credentials(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """User and password from --user NAME[:PASS], else RAFTKV_USER and
    RAFTKV_PASSWORD; a missing password is asked for on a terminal."""
    spec = getattr(args, "user", None) or os.environ.get("RAFTKV_USER")
    if not spec:
        return None, None
    name, sep, password = spec.partition(":")
    if not name:
        args.parser.error("--user: the user name is empty")
    if not sep:
        password = os.environ.get("RAFTKV_PASSWORD") or ""
        if not password:
            if not sys.stdin.isatty():
                args.parser.error(f"--user {name}: give NAME:PASSWORD or set RAFTKV_PASSWORD (no terminal to ask on)")
            import getpass

            password = getpass.getpass(f"password for {name}: ")
    return name, password


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the client subcommands to the ``raftkv`` parser."""
    common = _common_options()

    def add(name: str, handler: Handler, help_text: str, description: str | None = None) -> argparse.ArgumentParser:
        p = subparsers.add_parser(name, parents=[common], help=help_text, description=description or help_text)
        p.set_defaults(func=lambda args: _run(args, handler), parser=p)
        return p

    p = add("get", _cmd_get, "print a key's raw value to stdout")
    p.add_argument("key")
    p.add_argument("--serializable", action="store_true", help="read the local replica (fast, may be stale)")

    p = add("put", _cmd_put, "write a key")
    p.add_argument("key")
    p.add_argument("value", help="the value; '-' reads it from stdin (bytes as they are)")
    p.add_argument("--if-match", type=int, metavar="REV", help="write only if the key's mod_revision is REV")
    p.add_argument("--create-only", action="store_true", help="write only if the key does not exist")
    p.add_argument("--lease", metavar="ID", help="attach the key to this lease (see `raftkv lease`): it is deleted with it")

    p = add("del", _cmd_del, "delete a key, or every key under a prefix")
    p.add_argument("key", help="the key, or the prefix with --prefix ('' means every key)")
    p.add_argument("--prefix", action="store_true", help="delete every key starting with KEY")
    p.add_argument("--if-match", type=int, metavar="REV", help="delete only if the key's mod_revision is REV")

    p = add("ls", _cmd_ls, "list keys (and values) under a prefix, in key order")
    p.add_argument("prefix", nargs="?", default="")
    p.add_argument("--limit", type=int, help="at most N keys (default: all, fetched page by page)")
    p.add_argument("--start-after", metavar="KEY", help="list keys after KEY")
    p.add_argument("--keys-only", action="store_true", help="print keys without values")
    p.add_argument("--json", action="store_true", help="print the API's JSON instead of KEY<TAB>VALUE lines")
    p.add_argument("--serializable", action="store_true", help="read the local replica (fast, may be stale)")

    p = add(
        "txn",
        _cmd_txn,
        "run a transaction from a JSON file",
        "Run a transaction. FILE holds the JSON body of POST /v1/txn "
        '({"compare": [...], "success": [...], "failure": [...]}); "-" reads stdin. '
        "Prints the JSON result; exits 1 when the compares did not hold.",
    )
    p.add_argument("file", metavar="FILE", help="JSON file, or '-' for stdin")

    p = add("status", _cmd_status, "show cluster status")
    p.add_argument("--all", action="store_true", help="one row per endpoint (unreachable ones included)")

    p = add("transfer", _cmd_transfer, "move leadership to another node")
    p.add_argument("--to", metavar="ID", help="the node id to lead (default: any caught-up voter)")


def _run(args: argparse.Namespace, handler: Handler) -> int:
    """Build a client, run one command and turn errors into exit codes and
    messages that say whether a write may have happened."""
    parser: argparse.ArgumentParser = args.parser
    if not args.timeout > 0:
        parser.error("--timeout must be > 0")
    err = sys.stderr
    target = connection(args)
    try:
        with target.client(args.timeout) as client:
            return handler(args, client)
    except UsageError as exc:
        parser.error(str(exc))
    except ValueError as exc:
        # The client checks keys and arguments before sending (e.g. an empty key).
        parser.error(str(exc))
    except NotFound as exc:
        if exc.code != "key_not_found":  # a lease, user, role...
            print(f"error: {exc.message}; nothing was written", file=err)
            return EXIT_FAILED
        print(f"error: key not found: {getattr(args, 'key', '')!r}", file=err)
        return EXIT_FAILED
    except PreconditionFailed as exc:
        current = "the key does not exist" if exc.mod_revision == 0 else f"its mod_revision is {exc.mod_revision}"
        print(f"error: precondition failed, nothing was written: {current}", file=err)
        return EXIT_FAILED
    except OutcomeUnknown as exc:
        print(
            "error: the write was sent but no answer arrived: it MAY OR MAY NOT have been applied. "
            f"Read the key to find out. ({exc})",
            file=err,
        )
        return EXIT_UNAVAILABLE
    except TLSFailure as exc:
        print(f"error: no TLS connection to the cluster, nothing was written: {exc}", file=err)
        return EXIT_UNAVAILABLE
    except Unavailable as exc:
        print(f"error: cluster unavailable, nothing was written: {exc}", file=err)
        return EXIT_UNAVAILABLE
    except RequestRejected as exc:
        print(f"error: rejected by the server ({exc.status} {exc.code}), nothing was written: {exc.message}", file=err)
        if exc.status == 409:
            return EXIT_FAILED
        return EXIT_USAGE if 400 <= exc.status < 500 else EXIT_UNAVAILABLE
    except InvalidResponse as exc:
        print(f"error: the server sent a response this client does not understand: {exc}", file=err)
        return EXIT_UNAVAILABLE
    except ClientError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_UNAVAILABLE
    except BrokenPipeError:
        # `raftkv ls | head` closing the pipe early is not an error.
        return EXIT_OK


class UsageError(Exception):
    """Bad command-line input found after parsing (e.g. an invalid txn file)."""


def _stdout_bytes() -> BinaryIO:
    return sys.stdout.buffer


def _cmd_get(args: argparse.Namespace, client: Client) -> int:
    kv = client.get(args.key, consistency="serializable" if args.serializable else "linearizable")
    if kv is None:
        print(f"error: key not found: {args.key!r}", file=sys.stderr)
        return EXIT_FAILED
    out = _stdout_bytes()
    value = kv.value or b""
    out.write(value)
    if sys.stdout.isatty() and not value.endswith(b"\n"):
        out.write(b"\n")  # so the shell prompt starts on its own line; a pipe gets the bytes as stored
    out.flush()
    return EXIT_OK


def _cmd_put(args: argparse.Namespace, client: Client) -> int:
    if args.if_match is not None and args.create_only:
        raise UsageError("--if-match and --create-only cannot be combined")
    if args.if_match is not None and args.if_match < 0:
        raise UsageError("--if-match must be >= 0")
    value: bytes | str = sys.stdin.buffer.read() if args.value == "-" else args.value
    result = client.put(args.key, value, if_mod_revision=args.if_match, if_absent=args.create_only, lease=args.lease)
    print(f"OK revision={result.revision} mod_revision={result.kv.mod_revision} version={result.kv.version}")
    return EXIT_OK


def _cmd_del(args: argparse.Namespace, client: Client) -> int:
    if args.prefix:
        if args.if_match is not None:
            raise UsageError("--if-match cannot be used with --prefix")
        result = client.delete_prefix(args.key)
    else:
        if args.key == "":
            raise UsageError("KEY must not be empty (use --prefix '' to delete every key)")
        result = client.delete(args.key, if_mod_revision=args.if_match)
    print(f"deleted={result.deleted} revision={result.revision}")
    return EXIT_OK


def _cmd_ls(args: argparse.Namespace, client: Client) -> int:
    if args.limit is not None and args.limit <= 0:
        raise UsageError("--limit must be a positive integer")
    consistency = "serializable" if args.serializable else "linearizable"
    kvs, more, revision = [], False, 0
    start_after = args.start_after
    while True:
        # Without --limit, follow `more` so the server's page cap is invisible.
        want = None if args.limit is None else args.limit - len(kvs)
        page = client.list(args.prefix, limit=want, start_after=start_after,
                           keys_only=args.keys_only, consistency=consistency)
        kvs.extend(page.kvs)
        revision = revision or page.revision
        more = page.more
        if not page.more or not page.kvs or (args.limit is not None and len(kvs) >= args.limit):
            break
        start_after = page.kvs[-1].key
    if args.json:
        body = {"revision": revision, "kvs": [kv.to_json() for kv in kvs], "more": more}
        _print_json(body)
        return EXIT_OK
    out: TextIO = sys.stdout
    for kv in kvs:
        if args.keys_only or kv.value is None:
            out.write(f"{escape_for_line(kv.key)}\n")
        else:
            value = kv.value.decode("utf-8", "surrogateescape")
            out.write(f"{escape_for_line(kv.key)}\t{escape_for_line(value)}\n")
    out.flush()
    return EXIT_OK


_NAMED_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def escape_for_line(text: str) -> str:
    """`text` with no control characters: one line a terminal shows as it is.

    A backslash doubles, tab/newline/CR become \\t \\n \\r, other unprintable
    characters \\xNN or \\uNNNN, and bytes that are not UTF-8 (decoded with
    surrogateescape) \\xNN, so KEY<TAB>VALUE lines stay unambiguous.
    """
    out = []
    for ch in text:
        if ch in _NAMED_ESCAPES:
            out.append(_NAMED_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        elif 0xDC80 <= ord(ch) <= 0xDCFF:
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        elif ord(ch) <= 0xFF:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}")
    return "".join(out)


def _read_txn(source: str) -> dict[str, Any]:
    try:
        raw = sys.stdin.buffer.read() if source == "-" else open(source, "rb").read()
    except OSError as exc:
        raise UsageError(f"cannot read {source}: {exc.strerror}") from None
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise UsageError(f"{source} is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise UsageError(f"{source} must hold a JSON object with compare/success/failure lists")
    unknown = set(body) - {"compare", "success", "failure"}
    if unknown:
        raise UsageError(f"{source}: unknown field(s) {', '.join(sorted(unknown))}; expected compare, success, failure")
    for name in ("compare", "success", "failure"):
        items = body.get(name, [])
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise UsageError(f"{source}: '{name}' must be a list of JSON objects")
    return body


def _cmd_txn(args: argparse.Namespace, client: Client) -> int:
    body = _read_txn(args.file)
    result = client.txn(body.get("compare", []), body.get("success", []), body.get("failure", []))
    _print_json(result.to_json())
    return EXIT_OK if result.succeeded else EXIT_FAILED


STATUS_COLUMNS = ("endpoint", "node_id", "role", "term", "leader_id", "commit", "applied", "revision", "engine", "space")


def _status_row(endpoint: str, status: NodeStatus | Exception) -> list[str]:
    if isinstance(status, Exception):
        reason = getattr(status, "code", None) or _short_reason(status)
        return [endpoint, "-", f"unreachable ({reason})", "-", "-", "-", "-", "-", "-", "-"]
    return [
        endpoint,
        status.node_id,
        status.role,
        str(status.term),
        status.leader_id or "-",
        str(status.commit_index),
        str(status.applied_index),
        str(status.revision),
        status.engine,
        _space(status.quota),
    ]


def _space(quota: dict[str, Any] | None) -> str:
    """The store's pages in use against its quota, e.g. '12.0MiB/16.0GiB', and NOSPACE past it."""
    if not quota or quota.get("used_bytes") is None:
        return "-"
    text = _mib(quota["used_bytes"]) + ("/" + _mib(quota["quota_bytes"]) if quota.get("quota_bytes") else "")
    return text + (" NOSPACE" if quota.get("no_space") else "")


def _mib(n: int) -> str:
    return f"{n / (1 << 30):.1f}GiB" if n >= 1 << 30 else f"{n / (1 << 20):.1f}MiB"


def _short_reason(exc: Exception) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError):
        return "cannot connect"
    return type(exc).__name__


def format_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _cmd_status(args: argparse.Namespace, client: Client) -> int:
    if args.all:
        statuses = client.status_all()
        rows = [list(STATUS_COLUMNS)] + [_status_row(e, s) for e, s in statuses.items()]
        print(format_table(rows))
        _print_failures([s for s in statuses.values() if isinstance(s, NodeStatus)], args.timeout, client.ssl_context)
        return EXIT_OK if any(isinstance(s, NodeStatus) for s in statuses.values()) else EXIT_UNAVAILABLE
    status = client.status()
    print(format_table([list(STATUS_COLUMNS), _status_row(status.endpoint, status)]))
    _print_failures([status], args.timeout, client.ssl_context)
    return EXIT_OK


def _print_failures(statuses: list[NodeStatus], timeout: float, context: ssl.SSLContext | None) -> None:
    """Below the table, why each node whose engine failed (role "failed") stopped.

    The client's NodeStatus does not carry the reason, so it is read from
    the node's /v1/status ("failure") directly.
    """
    for status in statuses:
        if status.role != "failed":
            continue
        try:
            url = f"{status.endpoint.rstrip('/')}/v1/status"
            with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
                failure = orjson.loads(response.read()).get("failure")
        except (OSError, ValueError):
            failure = None
        print(f"{status.node_id}: the engine failed: {failure or 'see the node log'}; restart the node once the cause is fixed")


def _cmd_transfer(args: argparse.Namespace, client: Client) -> int:
    leader = client.transfer_leadership(args.to)
    print(f"leader={leader}")
    return EXIT_OK


def _print_json(obj: Any) -> None:
    sys.stdout.write(orjson.dumps(obj, option=orjson.OPT_INDENT_2).decode() + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    """Run only the client subcommands (``python -m raftkv.cli_client``)."""
    parser = argparse.ArgumentParser(prog="raftkv")
    register(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
