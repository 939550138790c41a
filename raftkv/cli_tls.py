"""The TLS side of the ``raftkv`` command: `serve`'s certificate flags and `raftkv certs`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from raftkv.config import DEFAULT_CLUSTER_ID, env_setting, HttpTLSFiles, PeerTLSFiles

# `raftkv certs` could not write or read what it was asked to.
EXIT_CERTS = 1
_TRUE = ("1", "true", "yes", "on")


def add_serve_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--cluster-id",
        default=env_setting("CLUSTER_ID") or DEFAULT_CLUSTER_ID,
        help="the cluster this node belongs to; peers of another cluster are refused, and the peer "
        f"certificates must name it (RAFTKV_CLUSTER_ID, default {DEFAULT_CLUSTER_ID})",
    )
    peers = p.add_argument_group(
        "peer TLS",
        "Mutual TLS between nodes (native engine): every node shows a certificate signed by the cluster "
        "CA that names its id; make them with `raftkv certs`. Without these files the peer port is "
        "plaintext, which a node refuses on an address beyond loopback unless --insecure-peers is given.",
    )
    peers.add_argument("--peer-cert-file", default=env_setting("PEER_CERT_FILE"),
                       help="this node's certificate, e.g. certs/n1.pem (RAFTKV_PEER_CERT_FILE)")
    peers.add_argument("--peer-key-file", default=env_setting("PEER_KEY_FILE"),
                       help="its private key, e.g. certs/n1-key.pem (RAFTKV_PEER_KEY_FILE)")
    peers.add_argument("--peer-ca-file", default=env_setting("PEER_CA_FILE"),
                       help="the cluster CA, e.g. certs/ca.pem (RAFTKV_PEER_CA_FILE)")
    peers.add_argument(
        "--insecure-peers",
        action="store_true",
        default=(env_setting("INSECURE_PEERS") or "").lower() in _TRUE,
        help="plaintext peers on a non-loopback --peer-listen: anyone who reaches the port can act as a "
        "member; only on a network you trust (RAFTKV_INSECURE_PEERS=1)",
    )
    http = p.add_argument_group(
        "client HTTPS",
        "HTTPS for the client API. Without --cert-file the API is plain HTTP with no authentication: "
        "a --listen beyond loopback logs a warning.",
    )
    http.add_argument("--cert-file", default=env_setting("CERT_FILE"),
                      help="certificate for the HTTP API, e.g. certs/n1.pem (RAFTKV_CERT_FILE)")
    http.add_argument("--key-file", default=env_setting("KEY_FILE"), help="its private key (RAFTKV_KEY_FILE)")
    http.add_argument(
        "--client-ca-file",
        default=env_setting("CLIENT_CA_FILE"),
        help="require every client to show a certificate this CA signed (RAFTKV_CLIENT_CA_FILE)",
    )


def tls_config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """NodeConfig keyword arguments for the TLS flags; ValueError for an incomplete set."""
    peer_files = (args.peer_cert_file, args.peer_key_file, args.peer_ca_file)
    peer_tls = None
    if any(peer_files):
        names = ("--peer-cert-file", "--peer-key-file", "--peer-ca-file")
        missing = [name for name, value in zip(names, peer_files) if not value]
        if missing:
            raise ValueError(f"peer TLS needs all of {', '.join(names)} (missing {', '.join(missing)})")
        peer_tls = PeerTLSFiles(*(Path(f) for f in peer_files))
    http_tls = None
    if args.cert_file or args.key_file:
        if not (args.cert_file and args.key_file):
            raise ValueError("HTTPS needs both --cert-file and --key-file")
        client_ca = Path(args.client_ca_file) if args.client_ca_file else None
        http_tls = HttpTLSFiles(Path(args.cert_file), Path(args.key_file), client_ca)
    elif args.client_ca_file:
        raise ValueError("--client-ca-file needs --cert-file and --key-file (client certificates need HTTPS)")
    return {
        "cluster_id": args.cluster_id,
        "peer_tls": peer_tls,
        "insecure_peers": args.insecure_peers,
        "http_tls": http_tls,
    }


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "certs",
        help="make a cluster CA and node certificates for TLS",
        description=(
            "Make the certificates for mutual TLS between nodes and for HTTPS: first a CA for "
            "the cluster, then one certificate per node, signed by it. Keys are written 0600."
        ),
        epilog=(
            "example: raftkv certs ca --dir certs --cluster-id prod && "
            "raftkv certs node --dir certs --id n1 --host 10.0.0.5 --host n1.example.com; then "
            "raftkv serve --id n1 --cluster-id prod --peer-cert-file certs/n1.pem "
            "--peer-key-file certs/n1-key.pem --peer-ca-file certs/ca.pem ... "
            "Copy ca.pem and the node's two files to each node; keep ca-key.pem off the nodes."
        ),
    )
    sub = p.add_subparsers(dest="certs_command", metavar="WHAT", required=True)
    ca = sub.add_parser(
        "ca",
        help="make ca.pem and ca-key.pem",
        description="Make the cluster CA: DIR/ca.pem and DIR/ca-key.pem (0600). Refuses to overwrite a CA.",
    )
    ca.add_argument("--dir", required=True, type=Path, help="where to write the files (created if missing)")
    ca.add_argument(
        "--cluster-id",
        default=DEFAULT_CLUSTER_ID,
        help=f"the cluster id every node certificate it signs will name (default {DEFAULT_CLUSTER_ID}); "
        "nodes must run with the same --cluster-id",
    )
    ca.add_argument("--days", type=int, default=3650, help="validity in days (default 3650)")
    ca.set_defaults(func=_run_ca, parser=ca)
    node = sub.add_parser(
        "node",
        help="make ID.pem and ID-key.pem, signed by the CA in DIR",
        description=(
            "Make a node's certificate, signed by the CA in DIR: DIR/ID.pem and DIR/ID-key.pem (0600). "
            "It names the node (URI raftkv://node/ID) and the CA's cluster (URI raftkv://cluster/CLUSTER), "
            "and serves for peer TLS in both directions and for the HTTPS client API. Its host names are "
            "the id, localhost, 127.0.0.1 and every --host (what HTTPS clients check)."
        ),
    )
    node.add_argument("--dir", required=True, type=Path, help="the folder holding ca.pem and ca-key.pem")
    node.add_argument("--id", required=True, help="the node id, as in --id and --peers")
    node.add_argument(
        "--host",
        action="append",
        default=[],
        help="a DNS name or IP address HTTPS clients use to reach this node (repeatable)",
    )
    node.add_argument("--days", type=int, default=825, help="validity in days (default 825, at most the CA's)")
    node.set_defaults(func=_run_node, parser=node)


def _run_ca(args: argparse.Namespace) -> int:
    from raftkv.certs import CertError, make_ca

    if args.days < 1:
        args.parser.error("--days must be at least 1")
    try:
        path = make_ca(args.dir, args.cluster_id, args.days)
    except (CertError, OSError) as exc:
        print(f"raftkv certs ca: {exc}", file=sys.stderr)
        return EXIT_CERTS
    print(f"wrote {path} and {args.dir / 'ca-key.pem'} (cluster {args.cluster_id})")
    return 0


def _run_node(args: argparse.Namespace) -> int:
    from raftkv.certs import CertError, make_node

    if args.days < 1:
        args.parser.error("--days must be at least 1")
    try:
        files = make_node(args.dir, args.id, args.host, args.days)
    except (CertError, OSError) as exc:
        print(f"raftkv certs node: {exc}", file=sys.stderr)
        return EXIT_CERTS
    print(f"wrote {files.cert} and {files.key}")
    return 0
