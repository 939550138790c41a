"""`raftkv lock NAME -- COMMAND...` and `raftkv elect NAME [VALUE] [--listen]`
(/v1/locks and /v1/elections, docs/locks.md).

`lock` grants a lease (--ttl), keeps it alive, takes the lock, runs COMMAND
with RAFTKV_LOCK_KEY and RAFTKV_FENCING_TOKEN set, and releases when it
exits. If the lease is lost (gone, or not renewed within its TTL) another
client may take the lock: COMMAND gets SIGTERM and `lock` exits 4.
Exit codes: COMMAND's own; 2 usage or bad request (401/403 included); 3
cluster unavailable; 4 lock lost while COMMAND ran. Endpoints, --user and
the TLS files as for the other client commands.
"""

from __future__ import annotations

import argparse
import http.client
import os
import signal
import subprocess
import sys
import threading
from types import FrameType
from urllib.parse import quote

import orjson

from raftkv.cli_client import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    Connection,
    add_connection_options,
    connection,
)
from raftkv.client import Client, OutcomeUnknown, RequestRejected, Unavailable
from raftkv.client.blocking import BearerAuth, connect, error_of
from raftkv.client.leases import MAX_TTL
from raftkv.client.lock import Lock, campaign, resign
from raftkv.client.tls import is_tls_failure, tls_error_text, tls_failure_hint

EXIT_LOCK_LOST = 4
# How often a running COMMAND's lease is checked.
_CHECK_INTERVAL = 0.2
# Grace between SIGTERM and SIGKILL for a COMMAND whose lock was lost.
_KILL_GRACE = 5.0


def register(subparsers: argparse._SubParsersAction) -> None:
    common = argparse.ArgumentParser(add_help=False)
    add_connection_options(common)
    common.add_argument("--timeout", type=float, default=5.0,
                        help="seconds per request; a lock wait is re-sent after each (default 5)")
    common.add_argument("--ttl", type=int, default=10,
                        help=f"seconds the lock outlives this process if it dies (lease TTL, 1 to {MAX_TTL}; default 10)")
    lock = subparsers.add_parser(
        "lock",
        parents=[common],
        help="run a command while holding a cluster-wide lock",
        description=(
            "Take lock NAME (waiting for it), run COMMAND with RAFTKV_LOCK_KEY and "
            "RAFTKV_FENCING_TOKEN in its environment, and release the lock when it exits. The "
            "lock rides a lease kept alive by this process: if this process dies the lock is "
            "free again after --ttl seconds. If the lease is lost while COMMAND runs, COMMAND "
            "gets SIGTERM (SIGKILL 5 s later) and the exit is 4. Otherwise the exit is COMMAND's; "
            "2 usage or bad request, 3 cluster unavailable. Pass the fencing token to whatever "
            "the lock protects: a holder that stalls past its TTL is otherwise not stopped (docs/locks.md)."
        ),
        epilog='example: raftkv lock backup -- sh -c \'echo "token $RAFTKV_FENCING_TOKEN"; ./backup.sh\'',
    )
    lock.add_argument("name", metavar="NAME")
    lock.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND...")
    lock.set_defaults(func=_run_lock, parser=lock, options_parser=common)
    elect = subparsers.add_parser(
        "elect",
        parents=[common],
        help="campaign in a leader election, or --listen to its leaders",
        description=(
            "With VALUE: campaign in election NAME, print 'KEY VALUE' once elected and lead "
            "until Ctrl-C or SIGTERM (then resign; exit 0). If the lease is lost, exit 4. "
            "With --listen: print the leader's value (or '-' when there is none) each time "
            "it changes, until Ctrl-C."
        ),
        epilog="example: raftkv elect scheduler node-1 & raftkv elect scheduler --listen",
    )
    elect.add_argument("name", metavar="NAME")
    elect.add_argument("value", nargs="?", metavar="VALUE")
    elect.add_argument("--listen", action="store_true", help="print each new leader instead of campaigning")
    elect.set_defaults(func=_run_elect, parser=elect)


def _connection(args: argparse.Namespace) -> Connection:
    parser: argparse.ArgumentParser = args.parser
    if not args.timeout > 0:
        parser.error("--timeout must be > 0")
    if not 1 <= args.ttl <= MAX_TTL:
        parser.error(f"--ttl must be from 1 to {MAX_TTL}")
    if not args.name or "/" in args.name:
        parser.error("NAME must be non-empty and without '/'")
    return connection(args)


def _failed(exc: Exception) -> int:
    if isinstance(exc, RequestRejected):
        print(f"error: {exc.status} {exc.code}: {exc.message}", file=sys.stderr)
        return EXIT_USAGE if 400 <= exc.status < 500 and exc.status != 409 else EXIT_FAILED
    print(f"error: cluster unavailable: {exc}", file=sys.stderr)
    return EXIT_UNAVAILABLE


class _Stop:
    """SIGINT/SIGTERM to this process: remembered, and passed to the child."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.child: subprocess.Popen[bytes] | None = None
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.event.set()
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signum)


def _run_lock(args: argparse.Namespace) -> int:
    command = args.command
    if "--" in command:
        # Options given after NAME (REMAINDER took them): parse them now.
        cut = command.index("--")
        options, command = command[:cut], command[cut + 1:]
        _, extra = args.options_parser.parse_known_args(options, namespace=args)
        if extra:
            args.parser.error(f"unrecognized arguments before --: {' '.join(extra)}")
    if not command:
        args.parser.error("give the COMMAND to run after --")
    stop = _Stop()
    with _connection(args).client(args.timeout) as client:
        lock = Lock(client, args.name, ttl=args.ttl)
        try:
            lock.acquire()
        except (RequestRejected, Unavailable, OutcomeUnknown) as exc:
            return _failed(exc)
        try:
            env = {**os.environ, "RAFTKV_LOCK_KEY": str(lock.key), "RAFTKV_FENCING_TOKEN": str(lock.fencing_token)}
            try:
                child = subprocess.Popen(command, env=env)
            except OSError as exc:
                print(f"error: cannot run {command[0]!r}: {exc}", file=sys.stderr)
                return 127
            stop.child = child
            while child.poll() is None:
                if lock.lost():
                    print(f"error: lock {args.name!r} lost (lease {lock.lease_id} not renewed); stopping the command",
                          file=sys.stderr)
                    child.terminate()
                    try:
                        child.wait(_KILL_GRACE)
                    except subprocess.TimeoutExpired:
                        child.kill()
                        child.wait()
                    return EXIT_LOCK_LOST
                try:
                    child.wait(_CHECK_INTERVAL)
                except subprocess.TimeoutExpired:
                    pass
            return child.returncode if child.returncode >= 0 else 128 - child.returncode
        finally:
            try:
                lock.release()
            except (RequestRejected, Unavailable, OutcomeUnknown) as exc:
                print(f"warning: release failed; the lock frees when its lease ends: {exc}", file=sys.stderr)


def _run_elect(args: argparse.Namespace) -> int:
    if args.listen == (args.value is not None):
        args.parser.error("give VALUE to campaign, or --listen (one of them)")
    target = _connection(args)
    with target.client(args.timeout) as client:
        try:
            if args.listen:
                return _listen(target, args.name)
            return _campaign(client, args)
        except (RequestRejected, Unavailable, OutcomeUnknown) as exc:
            return _failed(exc)


def _campaign(client: Client, args: argparse.Namespace) -> int:
    stop = _Stop()
    grant = client.lease_grant(args.ttl)
    keeper = client.keep_alive(grant.id).start()
    try:
        won = client._run(campaign(client._async, args.name, grant.id, args.value))
        print(f"{won['key']} {args.value}", flush=True)
        while not stop.event.wait(_CHECK_INTERVAL):
            if keeper.lost:
                print(f"error: lease {grant.id} lost: no longer the leader", file=sys.stderr)
                return EXIT_LOCK_LOST
        client._run(resign(client._async, args.name, won["key"]))
        return EXIT_OK
    finally:
        keeper.stop()
        try:
            client.lease_revoke(grant.id)
        except (RequestRejected, Unavailable, OutcomeUnknown):
            pass


def _listen(target: Connection, name: str) -> int:
    """Follow the observe stream, moving to the next endpoint when one fails."""
    stop = _Stop()
    last: str | None = None
    endpoints = target.endpoints
    auth = BearerAuth(target.user, target.password, target.ssl_context)
    failures = 0
    while not stop.event.is_set():
        endpoint = endpoints[failures % len(endpoints)]
        conn = connect(endpoint, 60, target.ssl_context)
        try:
            conn.request("GET", f"/v1/elections/{quote(name, safe='')}/observe", headers=auth.headers(endpoint))
            resp = conn.getresponse()
            if resp.status != 200:
                error = error_of(resp.read())
                if auth.renew(resp.status, error.get("code")):
                    # Log in again (next round), as often as a node may fail at most.
                    raise ConnectionError(f"{endpoint}: {resp.status} {error.get('code')}")
                print(f"error: {resp.status} {error.get('message')}", file=sys.stderr)
                return EXIT_USAGE if resp.status < 500 else EXIT_UNAVAILABLE
            for line in resp:
                if not line.strip():
                    continue
                kv = orjson.loads(line)["kv"]
                shown = "-" if kv is None else str(kv["value"])
                if shown != last:
                    print(shown, flush=True)
                    last = shown
                failures = 0
        except (OSError, http.client.HTTPException, ValueError) as exc:
            failures += 1
            if failures > 3 * len(endpoints):
                why = f"TLS handshake failed ({tls_failure_hint(exc)})" if is_tls_failure(exc) else "last error"
                print(f"error: no endpoint serves the observe stream; {why}: {tls_error_text(exc)}", file=sys.stderr)
                return EXIT_UNAVAILABLE
            stop.event.wait(0.5)
        finally:
            conn.close()
    return EXIT_OK
