"""TLS for raftkv: SSL contexts for the peer port and the HTTP API, and who a certificate names.

Peers authenticate each other with certificates signed by the cluster CA
(mutual TLS). Who a peer is comes from its certificate's URI SANs --
``raftkv://node/<id>`` and ``raftkv://cluster/<cluster id>`` -- never from
the address we dialled or the host name in it: a peer may sit behind a
proxy (jepsen_style puts one on every link) or change address. So the
client side does not check host names; the transport checks the URIs
instead (docs/transport.md, "TLS and peer identity").
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from raftkv.config import NodeConfig

NODE_URI_PREFIX = "raftkv://node/"
CLUSTER_URI_PREFIX = "raftkv://cluster/"


class TLSConfigError(ValueError):
    """A certificate, key or CA file cannot be used; the message names the file and why."""


@dataclass(frozen=True)
class CertIdentity:
    """The node ids and cluster ids a certificate names in its URI SANs."""

    node_ids: tuple[str, ...]
    cluster_ids: tuple[str, ...]

    def describe(self) -> str:
        nodes = ", ".join(self.node_ids) or "no node"
        clusters = ", ".join(self.cluster_ids) or "no cluster"
        return f"node {nodes} of cluster {clusters}"


def identity_from_uris(uris: list[str] | tuple[str, ...]) -> CertIdentity:
    nodes = tuple(u[len(NODE_URI_PREFIX) :] for u in uris if u.startswith(NODE_URI_PREFIX))
    clusters = tuple(u[len(CLUSTER_URI_PREFIX) :] for u in uris if u.startswith(CLUSTER_URI_PREFIX))
    return CertIdentity(nodes, clusters)


def identity_of_peer(peercert: dict[str, Any] | None) -> CertIdentity:
    """The identity in a verified peer certificate, as ``SSLObject.getpeercert()`` returns it."""
    sans = (peercert or {}).get("subjectAltName", ())
    return identity_from_uris(tuple(value for kind, value in sans if kind == "URI"))


def identity_of_file(cert_file: Path) -> CertIdentity:
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    except OSError as exc:
        raise TLSConfigError(f"cannot read certificate {cert_file}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise TLSConfigError(f"{cert_file} is not a PEM certificate: {exc}") from None
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return CertIdentity((), ())
    return identity_from_uris(san.get_values_for_type(x509.UniformResourceIdentifier))


def refusal(identity: CertIdentity, node_id: str, cluster_id: str) -> str | None:
    """Why a certificate may not act as ``node_id`` of ``cluster_id``, or None if it may.

    Exactly one node id: a certificate naming two nodes could speak as either.
    """
    if identity.node_ids != (node_id,):
        return f"its certificate is for {identity.describe()}, not node {node_id}"
    if identity.cluster_ids != (cluster_id,):
        return f"its certificate is for {identity.describe()}, not cluster {cluster_id}"
    return None


@dataclass(frozen=True)
class PeerTLS:
    """Both ends of mutual TLS on the peer port: every connection shows a CA-signed certificate."""

    server: ssl.SSLContext
    client: ssl.SSLContext


def peer_tls(cert_file: Path, key_file: Path, ca_file: Path, node_id: str, cluster_id: str) -> PeerTLS:
    """Contexts for this node's peer links; refuses a certificate that is not this node's.

    Checking our own certificate at start-up turns a mixed-up file into one
    clear error instead of every peer refusing us.
    """
    why = refusal(identity_of_file(cert_file), node_id, cluster_id)
    if why is not None:
        raise TLSConfigError(f"--peer-cert-file {cert_file}: {why}")
    server = _context(ssl.PROTOCOL_TLS_SERVER, cert_file, key_file)
    client = _context(ssl.PROTOCOL_TLS_CLIENT, cert_file, key_file)
    for context in (server, client):
        # Both ends are raftkv, so the newest protocol only.
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        _load_ca(context, ca_file, "--peer-ca-file")
        context.verify_mode = ssl.CERT_REQUIRED
    # The identity check is on the URI SANs, whatever address was dialled.
    client.check_hostname = False
    return PeerTLS(server, client)


def peer_tls_for(config: NodeConfig) -> PeerTLS | None:
    """The peer contexts ``config`` asks for, or None for plaintext peers."""
    files = config.peer_tls
    if files is None:
        return None
    return peer_tls(files.cert_file, files.key_file, files.ca_file, config.node_id, config.cluster_id)


def http_context_for(config: NodeConfig) -> ssl.SSLContext | None:
    """The HTTPS context ``config`` asks for, or None for plain HTTP."""
    files = config.http_tls
    if files is None:
        return None
    return http_server_context(files.cert_file, files.key_file, files.client_ca_file)


def http_server_context(cert_file: Path, key_file: Path, client_ca_file: Path | None) -> ssl.SSLContext:
    """HTTPS for the client API; with ``client_ca_file`` every client must show a certificate it signed."""
    context = _context(ssl.PROTOCOL_TLS_SERVER, cert_file, key_file, cert_flag="--cert-file", key_flag="--key-file")
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if client_ca_file is not None:
        _load_ca(context, client_ca_file, "--client-ca-file")
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _context(
    protocol: ssl._SSLMethod,
    cert_file: Path,
    key_file: Path,
    cert_flag: str = "--peer-cert-file",
    key_flag: str = "--peer-key-file",
) -> ssl.SSLContext:
    context = ssl.SSLContext(protocol)
    for flag, path in ((cert_flag, cert_file), (key_flag, key_file)):
        if not path.is_file():
            raise TLSConfigError(f"{flag} {path}: no such file")
    try:
        context.load_cert_chain(cert_file, key_file)
    except ssl.SSLError as exc:
        raise TLSConfigError(f"{cert_flag} {cert_file} with {key_flag} {key_file}: {exc.reason or exc}") from None
    return context


def _load_ca(context: ssl.SSLContext, ca_file: Path, flag: str) -> None:
    try:
        context.load_verify_locations(cafile=ca_file)
    except FileNotFoundError:
        raise TLSConfigError(f"{flag} {ca_file}: no such file") from None
    except ssl.SSLError as exc:
        raise TLSConfigError(f"{flag} {ca_file}: not a PEM CA certificate ({exc.reason or exc})") from None
