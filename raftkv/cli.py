"""The ``raftkv`` command: run nodes (serve, dev) and talk to a cluster."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from raftkv import cli_auth, cli_client, cli_lease, cli_lock, cli_member, cli_snapshot, cli_tls, cli_watch
from raftkv.config import (
    DEFAULT_ENGINE,
    DEFAULT_QUOTA_BACKEND_BYTES,
    ENGINES,
    env_setting,
    InsecurePeersError,
    NodeConfig,
    parse_peers,
)
from raftkv.kv.limits import Limits

DEFAULT_LIMITS = Limits()


def _add_serve(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve",
        help="run one node",
        description=(
            "Run one raftkv node. Only the flags that name a RAFTKV_* variable in their "
            "help can also be set through it (a flag given wins): RAFTKV_ID, RAFTKV_DATA_DIR, "
            "RAFTKV_LISTEN, RAFTKV_PEER_LISTEN, RAFTKV_PEERS, RAFTKV_ENGINE, RAFTKV_LOG_LEVEL, "
            "and the cluster id and TLS ones named below."
        ),
        epilog=(
            "example: raftkv serve --id n1 --data-dir data/n1 --listen 127.0.0.1:7001 "
            "--peer-listen 127.0.0.1:7101 "
            "--peers n1=127.0.0.1:7101,n2=127.0.0.1:7102,n3=127.0.0.1:7103. "
            "Exit status 1: the data dir is corrupt or in use by another process (one line "
            "on stderr says which file; docs/operations.md says how to recover). "
            "Exit status 2: a bad flag, plaintext peers beyond loopback without --insecure-peers, "
            "or a certificate, key or CA file that cannot be used (one line says which)."
        ),
    )
    p.add_argument("--id", default=env_setting("ID"), help="this node's id, e.g. n1 (RAFTKV_ID)")
    p.add_argument("--data-dir", default=env_setting("DATA_DIR"), help="where the node keeps its log and snapshots (RAFTKV_DATA_DIR)")
    p.add_argument("--listen", default=env_setting("LISTEN"), help="HOST:PORT for the HTTP API (RAFTKV_LISTEN)")
    p.add_argument("--peer-listen", default=env_setting("PEER_LISTEN"), help="HOST:PORT for Raft traffic between nodes (RAFTKV_PEER_LISTEN)")
    p.add_argument(
        "--peers",
        default=env_setting("PEERS"),
        help="every member as ID=HOST:PORT, comma-separated, this node included: "
        "the address this node uses to reach each peer's --peer-listen (RAFTKV_PEERS)",
    )
    p.add_argument(
        "--join",
        metavar="URL[,URL...]",
        help="start a NEW node (empty --data-dir) that asks the running cluster at these client URLs "
        "to add it as a learner, then catches up; promote it with `raftkv member promote ID`. "
        "Replaces --peers. In the directory of a `raftkv dev` cluster no other flag is needed "
        "(id, data dir, ports and certificate are made up). A restart with the same flags rejoins nothing",
    )
    p.add_argument(
        "--engine",
        default=env_setting("ENGINE", DEFAULT_ENGINE),
        choices=ENGINES,
        help=f"consensus engine (default {DEFAULT_ENGINE}; RAFTKV_ENGINE)",
    )
    cli_tls.add_serve_flags(p)
    p.add_argument("--max-key-bytes", type=int, default=DEFAULT_LIMITS.max_key_bytes)
    p.add_argument("--max-value-bytes", type=int, default=DEFAULT_LIMITS.max_value_bytes)
    p.add_argument("--max-txn-ops", type=int, default=DEFAULT_LIMITS.max_txn_ops)
    p.add_argument("--max-request-bytes", type=int, default=DEFAULT_LIMITS.max_request_bytes)
    p.add_argument(
        "--max-list-bytes",
        type=int,
        default=DEFAULT_LIMITS.max_list_bytes,
        help="a list answer stops (more: true) once its keys and values reach this many bytes "
        "(default %(default)s)",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=DEFAULT_LIMITS.max_connections,
        help="open client connections; a new one beyond this is answered 503 "
        "too_many_connections and closed (default %(default)s)",
    )
    p.add_argument(
        "--head-timeout",
        type=float,
        default=DEFAULT_LIMITS.head_timeout,
        help="seconds a request's line and headers may take to arrive; then 408 and close "
        "(default %(default)s)",
    )
    p.add_argument(
        "--idle-timeout",
        type=float,
        default=DEFAULT_LIMITS.idle_timeout,
        help="seconds a client connection may stay open with no request; then it is closed "
        "(default %(default)s)",
    )
    p.add_argument(
        "--body-timeout",
        type=float,
        default=DEFAULT_LIMITS.body_timeout,
        help="seconds a request body may take to arrive; then 408 and close (default %(default)s)",
    )
    p.add_argument("--timeout", type=float, default=5.0, help="default request timeout in seconds")
    p.add_argument(
        "--auto-compaction-retention",
        type=int,
        default=0,
        metavar="N",
        help="while this node leads, compact the MVCC history every 5 s to keep only the last N "
        "revisions (reads below answer 410 compacted); give every node the same value "
        "(default 0: only POST /v1/compaction compacts)",
    )
    p.add_argument(
        "--quota-backend-bytes",
        type=int,
        default=env_setting("QUOTA_BACKEND_BYTES", str(DEFAULT_QUOTA_BACKEND_BYTES)),
        metavar="BYTES",
        help="while the store's pages in use exceed this, writes that add data get 507 no_space "
        "(reads, deletes and compaction still work, and free room); 0: no quota "
        "(default %(default)s = 16 GiB; RAFTKV_QUOTA_BACKEND_BYTES)",
    )
    p.add_argument("--log-level", default=env_setting("LOG_LEVEL", "INFO"), help="DEBUG, INFO, WARNING... (RAFTKV_LOG_LEVEL)")
    p.set_defaults(func=_run_serve, parser=p)


def config_from_args(args: argparse.Namespace) -> NodeConfig:
    """The node configuration `serve` flags describe; ValueError says what is wrong."""
    missing = [
        flag
        for flag, value in (
            ("--id", args.id),
            ("--data-dir", args.data_dir),
            ("--listen", args.listen),
            ("--peer-listen", args.peer_listen),
            ("--peers", args.peers),
        )
        if not value
    ]
    if missing:
        raise ValueError(f"serve needs {', '.join(missing)} (or the RAFTKV_* environment variables)")
    return NodeConfig(
        node_id=args.id,
        data_dir=Path(args.data_dir),
        client_addr=args.listen,
        peer_addr=args.peer_listen,
        peers=parse_peers(args.peers),
        engine=args.engine,
        **cli_tls.tls_config_from_args(args),
        limits=Limits(
            max_key_bytes=args.max_key_bytes,
            max_value_bytes=args.max_value_bytes,
            max_txn_ops=args.max_txn_ops,
            max_request_bytes=args.max_request_bytes,
            max_list_bytes=args.max_list_bytes,
            max_connections=args.max_connections,
            head_timeout=args.head_timeout,
            idle_timeout=args.idle_timeout,
            body_timeout=args.body_timeout,
        ),
        default_timeout=args.timeout,
        auto_compaction_retention=args.auto_compaction_retention,
        quota_backend_bytes=args.quota_backend_bytes,
    )


# `raftkv serve` could not use its data dir: corrupt, or locked by another process.
EXIT_STORAGE = 1
# A flag or a file it names cannot be used (argparse's own status for bad flags).
EXIT_USAGE = 2


def _run_serve(args: argparse.Namespace) -> int:
    if args.join:
        from raftkv.join import JoinError, join_from_args

        try:
            join_from_args(args)  # fills in --id, --peers, ... from the cluster
        except JoinError as exc:
            print(f"raftkv serve: cannot join: {exc}", file=sys.stderr)
            return EXIT_USAGE
    try:
        config = config_from_args(args)
    except InsecurePeersError as exc:
        # A refusal by policy, not a typo: one line, no usage text.
        print(f"raftkv serve: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as exc:
        args.parser.error(str(exc))
    logging.basicConfig(
        level=args.log_level.upper(),
        format=f"%(asctime)s {args.id} %(levelname)s %(name)s: %(message)s",
    )
    from raftkv.node import run
    from raftkv.storage import SnapshotCorruptError, StorageError, WALCorruptError, WALLockedError
    from raftkv.tls import TLSConfigError

    try:
        run(config)
    except TLSConfigError as exc:
        print(f"raftkv serve: node {config.node_id} cannot start: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (WALCorruptError, SnapshotCorruptError) as exc:
        # One line, no traceback: the operator needs the file, the offset and what to do.
        print(
            f"raftkv serve: node {config.node_id} refuses to start, its data is corrupt: {exc}. "
            'See docs/operations.md "Recovering a node whose data is corrupt".',
            file=sys.stderr,
        )
        return EXIT_STORAGE
    except WALLockedError as exc:
        print(f"raftkv serve: node {config.node_id} cannot start: {exc}", file=sys.stderr)
        return EXIT_STORAGE
    except StorageError as exc:  # the WAL and the snapshots do not fit together (RecoveryError)
        print(
            f"raftkv serve: node {config.node_id} refuses to start: {exc}. "
            'See docs/operations.md "Recovering a node whose data is corrupt".',
            file=sys.stderr,
        )
        return EXIT_STORAGE
    return 0


def _add_dev(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "dev",
        help="run a local cluster (3 supervised nodes on 127.0.0.1)",
        description=(
            "Run a local cluster: N `raftkv serve` processes on 127.0.0.1, restarted if "
            "they die, HTTP on ports 7001.., Raft on 7101... Data stays in --data-dir "
            "between runs (--clean wipes it). Ctrl-C stops all nodes; the nodes also die "
            "with this process if it is killed. Refuses to start (exit 3, nothing deleted) "
            "while its ports or data directories are in use."
        ),
    )
    p.add_argument("--nodes", type=int, default=3, help="how many nodes (default 3)")
    p.add_argument("--data-dir", default=".raftkv-dev", help="parent folder of the nodes' data (default .raftkv-dev)")
    p.add_argument("--http-port", type=int, default=7001, help="first node's HTTP port (default 7001)")
    p.add_argument("--peer-port", type=int, default=7101, help="first node's Raft port (default 7101)")
    p.add_argument("--engine", default=DEFAULT_ENGINE, choices=ENGINES)
    p.add_argument("--clean", action="store_true", help="delete the cluster's data before starting")
    p.add_argument(
        "--tls",
        action="store_true",
        help="serve the HTTP API over HTTPS too (peers always run mutual TLS, except with pysyncobj); "
        "the CA to trust is DATA_DIR/certs/ca.pem",
    )
    p.set_defaults(func=_run_dev, parser=p)


def _run_dev(args: argparse.Namespace) -> int:
    parser = args.parser
    from raftkv.dev import DevCluster

    if args.nodes < 1:
        parser.error("--nodes must be at least 1")
    cluster = DevCluster(
        nodes=args.nodes,
        data_dir=Path(args.data_dir),
        http_port=args.http_port,
        peer_port=args.peer_port,
        engine=args.engine,
        tls=args.tls,
    )
    return cluster.run_forever(clean=args.clean)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="raftkv",
        description="raftkv: a strongly consistent, Raft-replicated key-value store.",
        epilog="Start a local cluster with `raftkv dev`, then try `raftkv put greeting hello`.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_serve(subparsers)
    _add_dev(subparsers)
    cli_tls.register(subparsers)
    cli_client.register(subparsers)
    cli_member.register(subparsers)
    cli_lease.register(subparsers)
    cli_lock.register(subparsers)
    cli_snapshot.register(subparsers)
    cli_watch.register(subparsers)
    cli_auth.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
