"""Peers authenticate each other (mutual TLS) and clients can use HTTPS.

Real certificates made by `raftkv certs`, real TcpTransport pairs over TLS
sockets on 127.0.0.1, real `raftkv serve` processes.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import socket
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from raftkv import cli
from raftkv.certs import make_ca, make_node, node_files
from raftkv.config import InsecurePeersError
from raftkv.local_cluster import LocalCluster, free_ports
from raftkv.tls import PeerTLS, TLSConfigError, identity_of_file, peer_tls
from raftkv.transport import FrameDecoder, TcpTransport
from raftkv.transport.framing import decode_reject, encode_frame, encode_hello
from tests.http import call
from tests.test_transport import Inbox, other_tasks, run_async, wait_until

LOCAL = ("127.0.0.1", 0)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two CAs of cluster 'blue' (the real one and an impostor) and one of 'green', with node certs."""
    dirs = {name: tmp_path_factory.mktemp(name) for name in ("blue", "impostor", "green")}
    make_ca(dirs["blue"], "blue")
    make_ca(dirs["impostor"], "blue")
    make_ca(dirs["green"], "green")
    for node in ("a", "b", "c"):
        make_node(dirs["blue"], node)
    make_node(dirs["impostor"], "b")
    make_node(dirs["green"], "b")
    return dirs


def tls_of(directory: Path, node_id: str, cluster_id: str = "blue", ca_dir: Path | None = None) -> PeerTLS:
    files = node_files(directory, node_id)
    return peer_tls(files.cert, files.key, (ca_dir or directory) / "ca.pem", node_id, cluster_id)


async def started(node_id: str, inbox: Inbox, tls: PeerTLS | None, **kwargs: Any) -> TcpTransport:
    transport = TcpTransport(node_id, LOCAL, {}, inbox, cluster_id="blue", tls=tls, **kwargs)
    await transport.start()
    return transport


def client_context(pki_dir: Path, node_id: str | None, trust: Path) -> ssl.SSLContext:
    """A raw TLS client (not our transport): trusts ``trust``, shows ``node_id``'s certificate if any."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(trust)
    if node_id is not None:
        files = node_files(pki_dir, node_id)
        context.load_cert_chain(files.cert, files.key)
    return context


async def read_until_closed(reader: asyncio.StreamReader) -> bytes:
    """What the server sent before it closed (TLS errors after the handshake count as closed)."""
    data = b""
    try:
        async with asyncio.timeout(3):
            while chunk := await reader.read(4096):
                data += chunk
    except (ConnectionError, ssl.SSLError):
        pass
    return data


# ------------------------------------------------------------- certificates


def test_certs_cli_writes_a_ca_and_node_files_that_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "certs"
    assert cli.main(["certs", "ca", "--dir", str(d), "--cluster-id", "prod"]) == 0
    assert cli.main(["certs", "node", "--dir", str(d), "--id", "n1", "--host", "10.0.0.5", "--host", "n1.example.com"]) == 0
    assert sorted(p.name for p in d.iterdir()) == ["ca-key.pem", "ca.pem", "n1-key.pem", "n1.pem"]
    for key in ("ca-key.pem", "n1-key.pem"):
        assert (d / key).stat().st_mode & 0o777 == 0o600
    ca = x509.load_pem_x509_certificate((d / "ca.pem").read_bytes())
    cert = x509.load_pem_x509_certificate((d / "n1.pem").read_bytes())
    cert.verify_directly_issued_by(ca)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"n1", "localhost", "n1.example.com"}
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "10.0.0.5"}
    identity = identity_of_file(d / "n1.pem")
    assert (identity.node_ids, identity.cluster_ids) == (("n1",), ("prod",))
    # Usable as this node's peer certificate, and only as this node's, in this cluster.
    peer_tls(d / "n1.pem", d / "n1-key.pem", d / "ca.pem", "n1", "prod")
    with pytest.raises(TLSConfigError, match="not node n2"):
        peer_tls(d / "n1.pem", d / "n1-key.pem", d / "ca.pem", "n2", "prod")
    with pytest.raises(TLSConfigError, match="not cluster raftkv"):
        peer_tls(d / "n1.pem", d / "n1-key.pem", d / "ca.pem", "n1", "raftkv")
    # A second CA in the same place would orphan n1.pem: refused, files untouched.
    before = (d / "ca.pem").read_bytes()
    capsys.readouterr()
    assert cli.main(["certs", "ca", "--dir", str(d)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert (d / "ca.pem").read_bytes() == before
    assert cli.main(["certs", "node", "--dir", str(tmp_path / "none"), "--id", "n1"]) == 1
    assert "no CA in" in capsys.readouterr().err


# --------------------------------------------------------------- transport


@run_async
async def test_tls_peers_exchange_messages_with_nodelay_and_the_direct_write(pki: dict[str, Path]) -> None:
    inbox_a, inbox_b = Inbox(), Inbox()
    a = await started("a", inbox_a, tls_of(pki["blue"], "a"))
    b = await started("b", inbox_b, tls_of(pki["blue"], "b"))
    a.set_peer_addr("b", b.listen_addr)
    b.set_peer_addr("a", a.listen_addr)
    for i in range(2000):
        a.send("b", b"a->b %d" % i)
        b.send("a", b"b->a %d" % i)
        if i % 500 == 0:
            await asyncio.sleep(0)
    await wait_until(lambda: inbox_b.count("a") == 2000 and inbox_a.count("b") == 2000)
    assert inbox_b.by_sender["a"] == [b"a->b %d" % i for i in range(2000)]
    assert inbox_a.by_sender["b"] == [b"b->a %d" % i for i in range(2000)]
    writer = a._links["b"].writer
    assert writer is not None and writer.get_extra_info("ssl_object") is not None
    assert writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    # An idle connected link writes the first frame of a loop iteration at once, TLS or not.
    await asyncio.sleep(0.05)
    sent = a.stats()["b"]["sent"]
    a.send("b", b"direct")
    assert a.stats()["b"]["sent"] == sent + 1 and a.stats()["b"]["queued"] == 0
    await wait_until(lambda: inbox_b.by_sender["a"][-1] == b"direct")
    await a.stop()
    await b.stop()
    assert other_tasks() == set()


@run_async
async def test_plaintext_connections_to_a_tls_peer_port_are_refused(pki: dict[str, Path]) -> None:
    inbox = Inbox()
    b = await started("b", inbox, tls_of(pki["blue"], "b"))
    reader, writer = await asyncio.open_connection(*b.listen_addr)
    writer.write(encode_frame(encode_hello("a", "blue")) + encode_frame(b"forged"))
    assert await read_until_closed(reader) == b""
    writer.close()
    # Our own transport without TLS gets no further.
    plain = await started("a", Inbox(), None, backoff_max=0.05)
    plain.set_peer_addr("b", b.listen_addr)
    plain.send("b", b"forged")
    await asyncio.sleep(0.3)
    assert inbox.by_sender == {}
    await plain.stop()
    await b.stop()


@run_async
async def test_a_certificate_from_another_ca_is_refused(pki: dict[str, Path]) -> None:
    inbox = Inbox()
    a = await started("a", inbox, tls_of(pki["blue"], "a"))
    # A client that trusts our CA (so it would talk) but shows the impostor CA's "b".
    context = client_context(pki["impostor"], "b", trust=pki["blue"] / "ca.pem")
    reader, writer = await asyncio.open_connection(*a.listen_addr, ssl=context)
    writer.write(encode_frame(encode_hello("b", "blue")) + encode_frame(b"forged"))
    assert await read_until_closed(reader) == b""
    writer.close()
    # No client certificate at all: refused the same way.
    reader, writer = await asyncio.open_connection(
        *a.listen_addr, ssl=client_context(pki["blue"], None, trust=pki["blue"] / "ca.pem")
    )
    writer.write(encode_frame(encode_hello("b", "blue")) + encode_frame(b"forged"))
    assert await read_until_closed(reader) == b""
    writer.close()
    # The impostor as a transport: it refuses our certificate, we refuse its.
    impostor = await started("b", Inbox(), tls_of(pki["impostor"], "b"), backoff_max=0.05)
    impostor.set_peer_addr("a", a.listen_addr)
    impostor.send("a", b"forged")
    await wait_until(lambda: "CERTIFICATE_VERIFY_FAILED" in (impostor.stats()["a"]["last_error"] or ""))
    await asyncio.sleep(0.1)
    assert inbox.by_sender == {}
    await impostor.stop()
    await a.stop()


@run_async
async def test_a_valid_certificate_of_c_saying_hello_as_b_is_refused(pki: dict[str, Path]) -> None:
    inbox = Inbox()
    a = await started("a", inbox, tls_of(pki["blue"], "a"))
    context = client_context(pki["blue"], "c", trust=pki["blue"] / "ca.pem")
    reader, writer = await asyncio.open_connection(*a.listen_addr, ssl=context)
    writer.write(encode_frame(encode_hello("b", "blue")) + encode_frame(b"forged"))
    frames = FrameDecoder().feed(await read_until_closed(reader))
    reason = decode_reject(frames[0])
    assert "hello says 'b'" in reason and "certificate is for node c of cluster blue, not node b" in reason
    writer.close()
    await asyncio.sleep(0.05)
    assert inbox.by_sender == {} and a.rejected_inbound == 1
    await a.stop()


@run_async
async def test_a_refused_peer_retrying_is_logged_once(pki: dict[str, Path], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="raftkv.transport.tcp")
    a = await started("a", Inbox(), tls_of(pki["blue"], "a"))
    context = client_context(pki["blue"], "c", trust=pki["blue"] / "ca.pem")
    for _ in range(3):
        reader, writer = await asyncio.open_connection(*a.listen_addr, ssl=context)
        writer.write(encode_frame(encode_hello("b", "blue")))
        assert decode_reject(FrameDecoder().feed(await read_until_closed(reader))[0])
        writer.close()
    refusals = [r for r in caplog.records if "hello says 'b'" in r.getMessage()]
    assert a.rejected_inbound == 3
    assert [r.levelno for r in refusals] == [logging.ERROR, logging.DEBUG, logging.DEBUG]
    await a.stop()


@run_async
async def test_a_certificate_of_another_cluster_is_refused(pki: dict[str, Path], tmp_path: Path) -> None:
    inbox = Inbox()
    a = await started("a", inbox, tls_of(pki["blue"], "a"))
    # The blue CA signs a "b" of cluster green (one CA for two clusters): a valid
    # chain, a hello that says blue, and still not a member of blue.
    cert, key = _sign_node_cert(pki["blue"], "b", cluster_id="green", out=tmp_path)
    context = client_context(pki["blue"], None, trust=pki["blue"] / "ca.pem")
    context.load_cert_chain(cert, key)
    reader, writer = await asyncio.open_connection(*a.listen_addr, ssl=context)
    writer.write(encode_frame(encode_hello("b", "blue")) + encode_frame(b"forged"))
    frames = FrameDecoder().feed(await read_until_closed(reader))
    assert "not cluster blue" in decode_reject(frames[0])
    writer.close()
    # A node of cluster green (its own CA) fails the handshake before any hello.
    green = TcpTransport("b", LOCAL, {"a": a.listen_addr}, Inbox(), cluster_id="green",
                         tls=tls_of(pki["green"], "b", "green"), backoff_max=0.05)
    await green.start()
    green.send("a", b"forged")
    await wait_until(lambda: "CERTIFICATE_VERIFY_FAILED" in (green.stats()["a"]["last_error"] or ""))
    assert inbox.by_sender == {}
    await green.stop()
    await a.stop()


@run_async
async def test_the_dialler_checks_the_certificate_names_the_peer_it_meant(pki: dict[str, Path]) -> None:
    inbox_b, inbox_c = Inbox(), Inbox()
    a = await started("a", Inbox(), tls_of(pki["blue"], "a"), backoff_max=0.05)
    b = await started("b", inbox_b, tls_of(pki["blue"], "b"))
    c = await started("c", inbox_c, tls_of(pki["blue"], "c"))
    # a's address for b is really c's port: c's valid certificate does not make it b.
    a.set_peer_addr("b", c.listen_addr)
    a.send("b", b"for b only")
    await wait_until(lambda: "certificate is for node c of cluster blue, not node b" in (a.stats()["b"]["last_error"] or ""))
    assert a.stats()["b"]["connects"] == 0 and inbox_c.by_sender == {}
    # Through a TCP proxy (another address) to the real b: identity does not depend on the address.
    async with _tcp_proxy(b.listen_addr) as proxy_addr:
        a.set_peer_addr("b", proxy_addr)
        await wait_until(lambda: inbox_b.by_sender["a"] == [b"for b only"])
    await a.stop()
    await b.stop()
    await c.stop()


def _sign_node_cert(ca_dir: Path, node_id: str, cluster_id: str, out: Path) -> tuple[Path, Path]:
    ca_cert = x509.load_pem_x509_certificate((ca_dir / "ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((ca_dir / "ca-key.pem").read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, node_id)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.UniformResourceIdentifier(f"raftkv://node/{node_id}"),
                    x509.UniformResourceIdentifier(f"raftkv://cluster/{cluster_id}"),
                ]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    cert_path, key_path = out / f"{node_id}-{cluster_id}.pem", out / f"{node_id}-{cluster_id}-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


class _tcp_proxy:
    """A byte-for-byte TCP forwarder on 127.0.0.1 (what toxiproxy does on a jepsen link)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> tuple[str, int]:
        self.server = await asyncio.start_server(self._handle, *LOCAL)
        return self.server.sockets[0].getsockname()[:2]

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            finally:
                dst.transport.abort()

        for task in (asyncio.create_task(pipe(reader, up_writer)), asyncio.create_task(pipe(up_reader, writer))):
            self.tasks.add(task)


# ----------------------------------------------------------------- processes


def test_three_nodes_over_mutual_tls_elect_and_serve_writes(tmp_path: Path) -> None:
    with LocalCluster(tmp_path / "c") as cluster:
        assert cluster.peer_tls
        leader = cluster.wait_ready()
        follower = next(n for n in cluster.nodes if n.node_id != leader)
        for i in range(20):  # through a follower: forwarded to the leader over TLS, then replicated back
            assert call("PUT", f"{follower.url}/v1/kv/k{i}", b"v%d" % i).status == 200
        assert call("GET", f"{cluster.node(leader).url}/v1/kv/k19").body == b"v19"
        assert call("GET", f"{follower.url}/v1/kv/k19?consistency=serializable").body == b"v19"
        # A plaintext hello to a peer port gets nothing: the port speaks TLS only.
        host, port = follower.peer_addr.split(":")
        with socket.create_connection((host, int(port)), timeout=2) as sock:
            sock.sendall(encode_frame(encode_hello(leader, "raftkv")))
            sock.settimeout(2)
            assert sock.recv(100) == b""
    assert "(mutual TLS)" in (tmp_path / "c" / "n1.log").read_text()


def test_https_client_api_requires_a_client_certificate_when_given_a_client_ca(tmp_path: Path) -> None:
    base = tmp_path / "c"
    ca = base / "certs" / "ca.pem"
    cluster = LocalCluster(base, nodes=1, client_tls=True, extra_args=["--client-ca-file", str(ca)])
    cluster.make_certs()
    make_node(cluster.certs_dir, "client")  # a client certificate the same CA signed
    with cluster:
        client_files = node_files(cluster.certs_dir, "client")
        url = cluster.nodes[0].url
        assert url.startswith("https://")
        # wait_ready is no help here: it has no client certificate, so every probe is refused.

        async def calls() -> None:
            with_cert = ssl.create_default_context(cafile=ca)
            with_cert.load_cert_chain(client_files.cert, client_files.key)
            without_cert = ssl.create_default_context(cafile=ca)
            async with aiohttp.ClientSession() as session:
                for _ in range(200):  # the node is starting
                    try:
                        async with session.get(f"{url}/readyz", ssl=with_cert) as response:
                            if response.status == 200:
                                break
                    except aiohttp.ClientConnectorError:
                        pass
                    await asyncio.sleep(0.05)
                async with session.put(f"{url}/v1/kv/greeting", data=b"hello", ssl=with_cert) as response:
                    assert response.status == 200, await response.text()
                with pytest.raises(aiohttp.ClientError):
                    async with session.get(f"{url}/v1/kv/greeting", ssl=without_cert) as response:
                        await response.read()
                with pytest.raises(aiohttp.ClientError):
                    async with session.get(url.replace("https://", "http://") + "/healthz") as response:
                        await response.read()

        asyncio.run(calls())
    assert "serving HTTPS" in (base / "n1.log").read_text()


def _serve(args: list[str], tmp_path: Path, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    http, peer = free_ports(2)
    argv = [
        sys.executable, "-m", "raftkv", "serve", "--id", "n1", "--data-dir", str(tmp_path / "data"),
        "--listen", f"127.0.0.1:{http}", "--peers", f"n1=127.0.0.1:{peer}", *args,
    ]
    if "--peer-listen" not in args:
        argv += ["--peer-listen", f"127.0.0.1:{peer}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAFTKV_")}
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)


def test_serve_refuses_plaintext_peers_beyond_loopback(tmp_path: Path) -> None:
    done = _serve(["--peer-listen", "0.0.0.0:7101"], tmp_path)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "refusing plaintext peers on 0.0.0.0:7101" in done.stderr
    assert "--insecure-peers" in done.stderr
    assert not (tmp_path / "data").exists()
    # --insecure-peers (or its variable) accepts it; parsed only, nothing binds beyond 127.0.0.1 in tests.
    base = ["serve", "--id", "n1", "--data-dir", "d", "--listen", "127.0.0.1:1", "--peers", "n1=h:2"]
    args = cli.build_parser().parse_args([*base, "--peer-listen", "0.0.0.0:2", "--insecure-peers"])
    assert cli.config_from_args(args).insecure_peers
    with pytest.raises(InsecurePeersError):
        cli.config_from_args(cli.build_parser().parse_args([*base, "--peer-listen", "10.0.0.5:2"]))


def test_serve_refuses_certificates_it_cannot_use(tmp_path: Path, pki: dict[str, Path]) -> None:
    blue = pki["blue"]
    tls = ["--peer-ca-file", str(blue / "ca.pem"), "--cluster-id", "blue"]
    done = _serve(["--peer-cert-file", str(blue / "b.pem"), "--peer-key-file", str(blue / "b-key.pem"), *tls], tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"raftkv serve: node n1 cannot start: --peer-cert-file {blue / 'b.pem'}: "
        "its certificate is for node b of cluster blue, not node n1"
    )
    assert not (tmp_path / "data").exists()
    base = ["serve", "--id", "n1", "--data-dir", "d", "--listen", "127.0.0.1:1", "--peer-listen", "127.0.0.1:2"]
    args = cli.build_parser().parse_args([*base, "--peers", "n1=127.0.0.1:2", "--peer-cert-file", "x", *tls])
    with pytest.raises(ValueError, match=r"\(missing --peer-key-file\)$"):
        cli.config_from_args(args)
    args = cli.build_parser().parse_args(
        [*base, "--peers", "n1=127.0.0.1:2", "--engine", "pysyncobj", *tls[:2],
         "--peer-cert-file", "x", "--peer-key-file", "y"]
    )
    with pytest.raises(ValueError, match="pysyncobj engine cannot use TLS between peers"):
        cli.config_from_args(args)
