"""Every client path on one cluster with HTTPS, client certificates and auth:
the sync and async clients, the Watch iterator, and the `raftkv` commands
(get, put, watch, member list, snapshot save, lease grant, lock) with
--cacert, --cert/--key and --user; and their failures without them."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from raftkv import cli
from raftkv.certs import make_node, node_files
from raftkv.client import AsyncClient, Client, RequestRejected, TLSFailure, Watch, WatchEvent
from raftkv.client.auth_admin import AuthAdmin
from raftkv.local_cluster import LocalCluster

ALICE = "alice:alicepw"  # readwrite on app/ and on the lock job's reserved range
ROOT = "root:rootpw"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Three nodes serving HTTPS with the cluster CA's certificates, asking every
    client for a certificate (--client-ca-file), with auth enabled."""
    base = tmp_path_factory.mktemp("tls-auth")
    ca = base / "certs" / "ca.pem"
    c = LocalCluster(base, engine="native", client_tls=True, extra_args=["--client-ca-file", str(ca)])
    c.make_certs()
    make_node(c.certs_dir, "client")  # a client certificate the cluster CA signed
    client = node_files(c.certs_dir, "client")
    assert c.ssl_context is not None
    c.ssl_context.load_cert_chain(client.cert, client.key)  # so wait_ready's probes get in
    with c:
        c.wait_ready()
        with Client(c.endpoints, **tls_files(c)) as kv:
            admin = AuthAdmin(kv)
            admin.user_add("root", "rootpw")
            admin.user_add("alice", "alicepw")
            admin.role_add("app")
            admin.role_grant("app", "app/", "readwrite")
            admin.role_grant("app", "__locks/job/", "readwrite")
            admin.user_grant("alice", "app")
            admin.enable()
        yield c


def tls_files(cluster: LocalCluster) -> dict[str, Path]:
    client = node_files(cluster.certs_dir, "client")
    return {"ca_file": cluster.certs_dir / "ca.pem", "cert_file": client.cert, "key_file": client.key}


@pytest.fixture
def cli_env(cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The cluster's endpoints and client certificate in the environment
    (RAFTKV_CERT/RAFTKV_KEY, as a script would set them); the CA and the
    user are left for each command line to give."""
    files = tls_files(cluster)
    env = {
        "RAFTKV_ENDPOINTS": ",".join(cluster.endpoints),
        "RAFTKV_CERT": str(files["cert_file"]),
        "RAFTKV_KEY": str(files["key_file"]),
    }
    for name in ("RAFTKV_USER", "RAFTKV_PASSWORD", "RAFTKV_CACERT", "SSL_CERT_FILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def cacert(cluster: LocalCluster) -> list[str]:
    return ["--cacert", str(cluster.certs_dir / "ca.pem")]


def test_sync_and_async_clients_over_https_with_credentials(cluster: LocalCluster) -> None:
    with Client(cluster.endpoints, user="alice", password="alicepw", **tls_files(cluster)) as kv:
        kv.put("app/sync", "1")
        assert kv.get("app/sync").value == b"1"  # type: ignore[union-attr]
        with pytest.raises(RequestRejected) as denied:
            kv.get("other/x")
        assert (denied.value.status, denied.value.code) == (403, "permission_denied")

    async def run() -> bytes | None:
        async with AsyncClient(cluster.endpoints, user="alice", password="alicepw", **tls_files(cluster)) as kv:
            await kv.put("app/async", "2")
            got = await kv.get("app/async")
            return None if got is None else got.value

    assert asyncio.run(run()) == b"2"

    # Without the CA the server's certificate does not verify: one clear
    # error at once, not the retry budget spent on a configuration mistake.
    started = time.monotonic()
    with Client(cluster.endpoints, user="alice", password="alicepw") as kv, pytest.raises(TLSFailure) as failed:
        kv.get("app/sync")
    assert "certificate verify failed" in str(failed.value) and "ca_file" in str(failed.value)
    assert time.monotonic() - started < 3
    with pytest.raises(ValueError, match="no such file"):
        Client(cluster.endpoints, ca_file=cluster.certs_dir / "missing.pem")


def test_watch_over_https_sees_a_put_and_logs_in_again_after_a_401(cluster: LocalCluster) -> None:
    files = tls_files(cluster)
    watch = Watch(cluster.endpoints, prefix="app/w/", user="alice", password="alicepw", **files)
    seen: list[WatchEvent] = []
    got = threading.Semaphore(0)

    def consume() -> None:
        for event in watch:
            seen.append(event)
            got.release()

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 10
        while watch.revision is None:  # the stream is open once it knows its start
            assert time.monotonic() < deadline and reader.is_alive(), "the watch did not start"
            time.sleep(0.02)
        with Client(cluster.endpoints, user="alice", password="alicepw", **files) as kv:
            kv.put("app/w/1", "one")
            assert got.acquire(timeout=10)
            assert (seen[0].type, seen[0].key, seen[0].value) == ("put", "app/w/1", b"one")
            # A change to alice's roles ends her token; the open stream goes on,
            # and the reconnect after its connection breaks gets 401 invalid_token,
            # logs in again and resumes without a gap.
            with Client(cluster.endpoints, user="root", password="rootpw", **files) as root:
                AuthAdmin(root).role_add("extra")
                AuthAdmin(root).user_grant("alice", "extra")
            assert watch._conn is not None and watch._conn.sock is not None
            watch._conn.sock.shutdown(socket.SHUT_RDWR)
            kv.put("app/w/2", "two")
            assert got.acquire(timeout=15), "the watch did not resume after its token was revoked"
        assert [e.key for e in seen] == ["app/w/1", "app/w/2"]
        assert watch.reconnects == 1
    finally:
        watch.close()
        reader.join(timeout=15)

    # Without credentials the watch is refused (401), and without the CA it
    # stops with a TLS error instead of retrying forever.
    with pytest.raises(RequestRejected) as refused:
        next(iter(Watch(cluster.endpoints, prefix="app/", **files)))
    assert (refused.value.status, refused.value.code) == (401, "unauthenticated")
    with pytest.raises(TLSFailure):
        next(iter(Watch(cluster.endpoints, prefix="app/", user="alice", password="alicepw",
                        cert_file=files["cert_file"], key_file=files["key_file"])))


def test_cli_commands_with_cacert_and_user(
    cluster: LocalCluster, cli_env: dict[str, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    ca = cacert(cluster)
    assert cli.main(["put", "app/cli", "hello", *ca, "--user", ALICE]) == 0
    assert "OK revision=" in capsys.readouterr().out
    assert cli.main(["get", "app/cli", *ca, "--user", ALICE]) == 0
    assert capsys.readouterr().out == "hello"
    os.environ["RAFTKV_CACERT"] = ca[1]  # the environment default (the fixture restores it)
    assert cli.main(["get", "app/cli", "--user", ALICE]) == 0
    assert capsys.readouterr().out == "hello"
    del os.environ["RAFTKV_CACERT"]

    revision = Client(cluster.endpoints, user="alice", password="alicepw", **tls_files(cluster))
    with revision as kv:
        first = kv.get_with_revision("app/cli")
    assert first is not None
    assert cli.main(["watch", "app/cli", "--rev", str(first.kv.mod_revision), "--count", "1", *ca, "--user", ALICE]) == 0
    assert capsys.readouterr().out == f"{first.kv.mod_revision} put app/cli hello\n"

    assert cli.main(["member", "list", *ca, "--user", ROOT]) == 0
    listing = capsys.readouterr().out
    assert all(f"n{i}\t" in listing for i in (1, 2, 3)) and "(leader)" in listing

    backup = tmp_path / "tls.backup"
    assert cli.main(["snapshot", "save", str(backup), *ca, "--user", ROOT]) == 0
    assert "saved" in capsys.readouterr().out
    assert cli.main(["snapshot", "status", str(backup)]) == 0

    assert cli.main(["lease", "grant", "30", *ca, "--user", ALICE]) == 0
    assert " ttl=30 revision=" in capsys.readouterr().out


def test_cli_lock_with_cacert_and_user(cluster: LocalCluster, cli_env: dict[str, str]) -> None:
    # A process of its own: `raftkv lock` installs signal handlers to pass on to COMMAND.
    done = subprocess.run(
        [sys.executable, "-m", "raftkv", "lock", "job", *cacert(cluster), "--user", ALICE, "--ttl", "5", "--",
         sys.executable, "-c", "import os; print('token', os.environ['RAFTKV_FENCING_TOKEN'])"],
        capture_output=True, text=True, timeout=30, env={**os.environ, **cli_env},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("token ")
    refused = subprocess.run(
        [sys.executable, "-m", "raftkv", "lock", "job", *cacert(cluster), "--", "true"],
        capture_output=True, text=True, timeout=30, env={**os.environ, **cli_env},
    )
    assert refused.returncode == 2 and "401 unauthenticated" in refused.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["get", "app/cli"],
        ["put", "app/cli", "x"],
        ["watch", "app/", "--count", "1"],
        ["member", "list"],
        ["snapshot", "save", "{tmp}/no.backup"],
        ["lease", "grant", "30"],
    ],
    ids=lambda argv: " ".join(argv[:2]),
)
def test_cli_without_cacert_or_user_fails_clearly(
    cluster: LocalCluster, cli_env: dict[str, str], capsys: pytest.CaptureFixture[str], tmp_path: Path,
    argv: list[str],
) -> None:
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    user = ROOT if argv[0] in ("member", "snapshot") else ALICE
    # No CA: the server's certificate does not verify; exit 3 and say what to give.
    assert cli.main([*argv, "--user", user]) == 3
    err = capsys.readouterr().err
    assert "certificate verify failed" in err and "--cacert" in err, err
    # The CA but no user: the server's 401, exit 2.
    assert cli.main([*argv, *cacert(cluster)]) == 2
    err = capsys.readouterr().err
    assert "401" in err and "unauthenticated" in err, err
    assert not (tmp_path / "no.backup").exists()
