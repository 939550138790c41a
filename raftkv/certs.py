"""Minting a cluster CA and node certificates (`raftkv certs`).

A node's identity is a URI SAN ``raftkv://node/<id>``; its cluster is a URI
SAN ``raftkv://cluster/<cluster id>`` on the node certificate and on the CA.
Identity lives in URIs, not in host names, because a node may be reached
through any address (a proxy, a NAT, a new IP) and the peer check must not
depend on the address dialled. The DNS and IP SANs (the node id,
``localhost``, ``127.0.0.1`` and every ``--host``) are for HTTPS clients,
which do check host names.

Keys are ECDSA P-256: small, and cheap to sign with in every handshake.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from raftkv.tls import CLUSTER_URI_PREFIX, NODE_URI_PREFIX

DEFAULT_CLUSTER_ID = "raftkv"
CA_CERT_FILE = "ca.pem"
CA_KEY_FILE = "ca-key.pem"
CA_DAYS = 3650
NODE_DAYS = 825
# Ids go into URIs and file names: keep them to characters safe in both.
_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


class CertError(ValueError):
    """A CA or node certificate could not be made or read; the message says why."""


@dataclass(frozen=True)
class NodeFiles:
    cert: Path
    key: Path


def check_id(kind: str, value: str) -> str:
    if not _ID_PATTERN.fullmatch(value):
        raise CertError(
            f"{kind} {value!r} is not usable in a certificate: use 1-63 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return value


def node_files(directory: Path, node_id: str) -> NodeFiles:
    return NodeFiles(directory / f"{node_id}.pem", directory / f"{node_id}-key.pem")


def make_ca(directory: Path, cluster_id: str = DEFAULT_CLUSTER_ID, days: int = CA_DAYS) -> Path:
    """Write ca.pem and ca-key.pem (0600) into ``directory``; refuses to overwrite a CA."""
    check_id("cluster id", cluster_id)
    cert_path, key_path = directory / CA_CERT_FILE, directory / CA_KEY_FILE
    for path in (cert_path, key_path):
        if path.exists():
            raise CertError(f"{path} already exists; a new CA would orphan every node certificate it signed")
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "raftkv"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, f"cluster {cluster_id}"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"raftkv cluster CA {cluster_id}"),
        ]
    )
    now = _now()
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(CLUSTER_URI_PREFIX + cluster_id)]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    _write_private(key_path, _key_pem(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path


def ca_cluster_id(ca_cert: x509.Certificate) -> str:
    """The cluster id a CA made by make_ca names in its SAN."""
    try:
        san = ca_cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier) if san is not None else []
    for uri in uris:
        if uri.startswith(CLUSTER_URI_PREFIX):
            return uri[len(CLUSTER_URI_PREFIX) :]
    raise CertError(
        f"the CA certificate names no cluster (a {CLUSTER_URI_PREFIX}<id> URI SAN); was it made by `raftkv certs ca`?"
    )


def make_node(
    directory: Path, node_id: str, hosts: list[str] | tuple[str, ...] = (), days: int = NODE_DAYS
) -> NodeFiles:
    """Write <id>.pem and <id>-key.pem (0600), signed by the CA in ``directory``.

    The certificate serves both ends of a peer link (server and client auth)
    and the HTTPS client API; its cluster is the CA's.
    """
    check_id("node id", node_id)
    ca_cert, ca_key = _load_ca(directory)
    cluster_id = ca_cluster_id(ca_cert)
    files = node_files(directory, node_id)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "raftkv"),
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, f"cluster {cluster_id}"),
                    x509.NameAttribute(NameOID.COMMON_NAME, node_id),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(min(now + datetime.timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(_node_sans(node_id, cluster_id, hosts)), critical=False)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    _write_private(files.key, _key_pem(key))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return files


def _node_sans(node_id: str, cluster_id: str, hosts: list[str] | tuple[str, ...]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(NODE_URI_PREFIX + node_id),
        x509.UniformResourceIdentifier(CLUSTER_URI_PREFIX + cluster_id),
    ]
    seen: set[str] = set()
    for host in (node_id, "localhost", "127.0.0.1", *hosts):
        host = host.strip().strip("[]")
        if not host or host in seen:
            continue
        seen.add(host)
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = directory / CA_CERT_FILE, directory / CA_KEY_FILE
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise CertError(f"no CA in {directory}: {exc.filename} is missing (make one with `raftkv certs ca`)") from None
    except ValueError as exc:
        raise CertError(f"cannot read the CA in {directory}: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertError(f"{key_path} is not an ECDSA key made by `raftkv certs ca`")
    return cert, key


def _key_usage(cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write_private(path: Path, data: bytes) -> None:
    # Created 0600 from the start: never readable by others, not even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)
