"""``raftkv snapshot save|status|restore``: backups (docs/operations.md).

* ``save FILE`` streams ``GET /v1/snapshot`` from the first endpoint that
  answers into ``FILE.part``, verifies its SHA-256 and renames it to FILE:
  a FILE that exists is complete and undamaged. Endpoints, --user (root's
  once auth is on) and the TLS files as for the other client commands.
* ``status FILE`` verifies a backup and prints what it holds.
* ``restore FILE --data-dir D --id ID --peers ...`` makes D the data dir of
  one member of a NEW cluster holding the backup's keys, which then starts
  with ``raftkv serve`` as usual: run it once per member with the same
  ``--peers`` (and the same ``--cluster-id``), then start them all.
"""

from __future__ import annotations

import argparse
import os
import secrets
import ssl
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from raftkv.cli_client import add_connection_options, connection
from raftkv.client.blocking import BearerAuth, error_of
from raftkv.client.errors import ClientError
from raftkv.client.tls import is_tls_failure, tls_error_text, tls_failure_hint
from raftkv.config import DEFAULT_QUOTA_BACKEND_BYTES, parse_peers
from raftkv.engines.native.membership import MEMBERS_TABLE
from raftkv.engines.native.recovery import snapshot_meta_to_json
from raftkv.kv.store import LmdbStore, map_size_for_quota
from raftkv.raft.types import ConfState, SnapshotMeta
from raftkv.storage import WAL, SnapshotStore
from raftkv.storage.snapshot_stream_backup import Backup, BackupCorruptError, read_backup
from raftkv.storage.snapshot_stream_install import install_lmdb_snapshot, write_lmdb_snapshot

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3
# The restored cluster's first term: its log starts at the backup's index.
RESTORED_TERM = 1


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "snapshot",
        help="save, check and restore backups",
        description="Backups: save a consistent snapshot of a running cluster, check a saved file, "
        "or restore one into the data dirs of a new cluster.",
    )
    sub = p.add_subparsers(dest="snapshot_command", metavar="SUBCOMMAND", required=True)

    save = sub.add_parser(
        "save",
        help="stream a snapshot of the cluster into FILE",
        description="Stream GET /v1/snapshot (a linearizable, consistent snapshot) from the first "
        "endpoint that answers into FILE.part, verify its SHA-256, then rename it to FILE. Once auth "
        "is on, only root may (--user root). Exit: 0 saved, 2 refused (401/403) or bad usage, "
        "3 no endpoint gave a snapshot.",
    )
    save.add_argument("file", metavar="FILE")
    add_connection_options(save)
    save.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the snapshot (default 300)")
    save.set_defaults(func=_cmd_save, parser=save)

    status = sub.add_parser(
        "status",
        help="verify a backup file and show what it holds",
        description="Verify FILE's checksum and print its revision, keys, size and SHA-256. "
        "Exits 1 with the reason if the file is damaged or not a backup.",
    )
    status.add_argument("file", metavar="FILE")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.set_defaults(func=_cmd_status, parser=status)

    restore = sub.add_parser(
        "restore",
        help="make the data dir of a new cluster's member from FILE",
        description="Verify FILE, then create --data-dir D for member --id of a NEW cluster whose "
        "members are --peers, holding the backup's keys, history, leases and users. Run it once per "
        "member (same FILE, --peers and --cluster-id), then start every member with `raftkv serve` "
        "(same --id, --data-dir, --peers and --cluster-id). D must not exist or be empty.",
    )
    restore.add_argument("file", metavar="FILE")
    restore.add_argument("--data-dir", required=True, help="the new member's data dir (must be absent or empty)")
    restore.add_argument("--id", required=True, help="this member's node id")
    restore.add_argument("--peers", required=True, help="every member of the new cluster: ID=HOST:PORT,... (peer addresses)")
    restore.add_argument(
        "--cluster-id",
        help="the new cluster's id (default: a fresh random one, printed); give every member the same, "
        "and pass it to `raftkv serve --cluster-id`",
    )
    restore.add_argument(
        "--quota-backend-bytes", type=int, default=DEFAULT_QUOTA_BACKEND_BYTES,
        help="the quota the members will serve with (sizes the LMDB map; default %(default)s)",
    )
    restore.set_defaults(func=_cmd_restore, parser=restore)


# ---------------------------------------------------------------- save


def _cmd_save(args: argparse.Namespace) -> int:
    target_cluster = connection(args)
    auth = BearerAuth(target_cluster.user, target_cluster.password, target_cluster.ssl_context)
    target = Path(args.file)
    part = target.with_name(target.name + ".part")
    failures: list[str] = []
    tls_failures: list[str] = []
    for endpoint in target_cluster.endpoints:
        try:
            stated = _download(endpoint, part, auth, target_cluster.ssl_context, args.timeout)
        except _Refused as exc:
            # Every node checks the same users and roles: the others would refuse too.
            print(f"error: {endpoint} refused the snapshot: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except urllib.error.HTTPError as exc:
            failures.append(f"{endpoint}: {exc.code} {_error_text(exc)}")
            continue
        except (OSError, urllib.error.URLError, ClientError) as exc:
            if is_tls_failure(exc):
                tls_failures.append(tls_error_text(exc))
            failures.append(f"{endpoint}: {_reason(exc)}")
            part.unlink(missing_ok=True)
            continue
        try:
            backup = read_backup(part)
        except BackupCorruptError as exc:
            part.unlink(missing_ok=True)
            failures.append(f"{endpoint}: the download did not verify: {exc}")
            continue
        if stated and stated != backup.sha256:
            part.unlink(missing_ok=True)
            failures.append(f"{endpoint}: the header said sha256 {stated}, the file hashes to {backup.sha256}")
            continue
        os.replace(part, target)
        header = backup.header
        print(
            f"saved {target}: revision {header['revision']}, {header['keys']} keys, "
            f"{backup.size} bytes, sha256 {backup.sha256} (from {endpoint}, node {header.get('node_id')})"
        )
        return EXIT_OK
    if len(tls_failures) == len(target_cluster.endpoints):
        failures.append(tls_failure_hint(tls_failures[-1]))
    print("error: no endpoint gave a snapshot:\n  " + "\n  ".join(failures), file=sys.stderr)
    return EXIT_UNAVAILABLE


class _Refused(Exception):
    """401 or 403: no or wrong credentials, or not root."""


def _download(
    endpoint: str, part: Path, auth: BearerAuth, context: ssl.SSLContext | None, timeout: float
) -> str | None:
    """Stream the endpoint's snapshot into ``part`` (fsynced); returns the
    SHA-256 its header states. A 401 for a stale token is asked again once."""
    for attempt in range(2):
        try:
            headers = auth.headers(endpoint)
        except ClientError as exc:  # RequestRejected: a wrong password
            raise _Refused(str(exc)) from None
        request = urllib.request.Request(f"{endpoint}/v1/snapshot", headers=headers)
        try:
            answer = urllib.request.urlopen(request, timeout=timeout, context=context)
        except urllib.error.HTTPError as exc:
            if exc.code not in (401, 403):
                raise
            error = error_of(exc.read())
            if attempt == 0 and auth.renew(exc.code, error.get("code")):
                continue
            raise _Refused(f"{exc.code} {error.get('code')}: {error.get('message')}") from None
        with answer:
            stated = answer.headers.get("X-Raftkv-Snapshot-Sha256")
            with open(part, "wb") as out:
                while chunk := answer.read(1 << 20):
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
        return stated
    raise AssertionError("the second attempt returns or raises")


def _reason(exc: BaseException) -> str:
    if is_tls_failure(exc):
        return f"TLS handshake failed: {tls_error_text(exc)}"
    return str(getattr(exc, "reason", exc))


def _error_text(exc: urllib.error.HTTPError) -> str:
    try:
        return str(orjson.loads(exc.read())["error"]["message"])
    except Exception:
        return exc.reason


# -------------------------------------------------------------- status


def _cmd_status(args: argparse.Namespace) -> int:
    try:
        backup = read_backup(Path(args.file))
    except BackupCorruptError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    info = status_of(backup)
    if args.json:
        sys.stdout.write(orjson.dumps(info, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        rows = [["sha256", "revision", "compact_revision", "keys", "size", "applied_index", "from"]]
        rows.append([
            info["sha256"][:16] + "...", str(info["revision"]), str(info["compact_revision"]), str(info["keys"]),
            str(info["size"]), str(info["applied_index"]), f"{info['node_id']} ({', '.join(info['members'])})",
        ])
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        print("\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows))
    return EXIT_OK


def status_of(backup: Backup) -> dict[str, Any]:
    header = backup.header
    return {
        "sha256": backup.sha256,
        "revision": header.get("revision"),
        "compact_revision": header.get("compact_revision"),
        "keys": header.get("keys"),
        "size": backup.size,
        "applied_index": header.get("applied_index"),
        "node_id": header.get("node_id"),
        "members": header.get("members", []),
        "created_unix": header.get("created_unix"),
    }


# ------------------------------------------------------------- restore


def _cmd_restore(args: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = args.parser
    try:
        peers = parse_peers(args.peers)
    except ValueError as exc:
        parser.error(f"--peers: {exc}")
    if args.id not in peers:
        parser.error(f"--peers must include this member's own id {args.id!r}")
    data_dir = Path(args.data_dir)
    if data_dir.exists() and (not data_dir.is_dir() or any(data_dir.iterdir())):
        parser.error(f"--data-dir {data_dir} exists and is not empty: restore only creates new data dirs")
    try:
        backup = read_backup(Path(args.file))
    except BackupCorruptError as exc:
        print(f"error: {exc}; nothing was written", file=sys.stderr)
        return EXIT_FAILED
    cluster_id = args.cluster_id or f"raftkv-restored-{secrets.token_hex(4)}"
    index = restore_data_dir(backup, data_dir, peers, map_size_for_quota(args.quota_backend_bytes))
    print(
        f"restored {backup.header.get('keys')} keys (revision {backup.header.get('revision')}) into {data_dir} "
        f"for member {args.id} of cluster {cluster_id}, log index {index}.\n"
        f"start it with: raftkv serve --id {args.id} --data-dir {data_dir} --peers {args.peers} "
        f"--cluster-id {cluster_id} --listen HOST:PORT --peer-listen {peers[args.id]}"
    )
    return EXIT_OK


def restore_data_dir(backup: Backup, data_dir: Path, peers: dict[str, str], map_size: int) -> int:
    """Write ``data_dir`` for a member of a new cluster of ``peers`` holding
    ``backup``; returns the log index the cluster starts after.

    The data dir is what a member looks like right after installing a
    snapshot: the store holds the backup at the backup's applied index,
    the snapshot store holds a snapshot of it at that index with the new
    membership (so the member starts bootstrapped, as an existing member
    of its cluster, and can send it to a member that lags), and the WAL is
    compacted to that index with term 1. The old cluster's member addresses
    are replaced by ``peers``.
    """
    index = max(1, int(backup.header.get("applied_index") or 0))
    data_dir.mkdir(parents=True, exist_ok=True)
    store = install_lmdb_snapshot(backup.data, data_dir / "kv", index, map_size)
    try:
        txn = store.write()
        txn.clear(MEMBERS_TABLE)
        for node_id, addr in sorted(peers.items()):
            txn.put(MEMBERS_TABLE, node_id.encode(), addr.encode())
        txn.commit()
        meta = SnapshotMeta(index, RESTORED_TERM, ConfState(tuple(sorted(peers)), ()))
        view = store.frozen()
        try:
            SnapshotStore(data_dir / "snapshots").save_stream(
                snapshot_meta_to_json(meta), lambda out: write_lmdb_snapshot(store, view, out)
            )
        finally:
            view.close()
    finally:
        store.close()
    wal = WAL.open(data_dir / "wal")
    try:
        wal.set_hard_state(RESTORED_TERM, None, index)
        wal.sync()
        wal.compact(index)
    finally:
        wal.close()
    return index
