"""`raftkv user|role|auth` and credentials in the CLI and the Python client, on a real cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from raftkv import cli
from raftkv.client import Client, RequestRejected
from raftkv.client.auth_admin import AuthAdmin
from raftkv.local_cluster import LocalCluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path_factory.mktemp("auth-cli"), engine="native") as c:
        c.wait_ready()
        yield c


def test_cli_sets_up_auth_and_the_client_follows(
    cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("RAFTKV_ENDPOINTS", ",".join(cluster.endpoints))
    monkeypatch.delenv("RAFTKV_USER", raising=False)
    monkeypatch.delenv("RAFTKV_PASSWORD", raising=False)
    # A client with credentials made while auth is off works before and after it goes on.
    early = Client(cluster.endpoints, user="alice", password="alicepw")
    try:
        early.put("app/early", "1")
        assert cli.main(["auth", "enable"]) == 1  # no root user yet: 409
        for argv in (
            ["user", "add", "root", "--password", "rootpw"],
            ["user", "add", "alice", "--password", "alicepw"],
            ["role", "add", "app"],
            ["role", "grant", "app", "--prefix", "app/", "--readwrite"],
            ["user", "grant", "alice", "app"],
            ["auth", "enable"],
        ):
            assert cli.main(argv) == 0, argv
        capsys.readouterr()
        assert cli.main(["put", "app/x", "1"]) == 2  # anonymous: 401
        assert "401 unauthenticated" in capsys.readouterr().err
        assert cli.main(["put", "app/x", "1", "--user", "alice:alicepw"]) == 0
        assert cli.main(["put", "other/x", "1", "--user", "alice:alicepw"]) == 2
        assert "403 permission_denied" in capsys.readouterr().err
        assert cli.main(["put", "app/x", "1", "--user", "alice:wrong"]) == 2
        monkeypatch.setenv("RAFTKV_USER", "root")
        monkeypatch.setenv("RAFTKV_PASSWORD", "rootpw")
        capsys.readouterr()
        assert cli.main(["user", "list"]) == 0
        assert capsys.readouterr().out.splitlines() == ["alice\tapp", "root\troot"]
        assert cli.main(["role", "list"]) == 0
        assert capsys.readouterr().out.splitlines() == ["app\treadwrite:'app/'"]
        assert cli.main(["user", "delete", "nobody"]) == 1
        assert cli.main(["role", "revoke", "app", "--prefix", "zzz/"]) == 1

        # The early client was told auth was off: a 401 makes it authenticate.
        early.put("app/early", "2")
        assert early.get("app/early").value == b"2"  # type: ignore[union-attr]
        with pytest.raises(RequestRejected) as exc:
            early.get("other/x")
        assert (exc.value.status, exc.value.code) == (403, "permission_denied")
        with Client(cluster.endpoints, user="root", password="rootpw") as root:
            assert AuthAdmin(root).status()["enabled"] is True
            AuthAdmin(root).user_passwd("alice", "newpw")
        with pytest.raises(RequestRejected) as exc:
            early.get("app/early")  # its token was revoked and its password is stale
        assert (exc.value.status, exc.value.code) == (401, "authentication_failed")

        assert cli.main(["auth", "disable"]) == 0
        monkeypatch.delenv("RAFTKV_USER")
        assert cli.main(["get", "other/x"]) == 1  # anonymous again: just not found
    finally:
        early.close()
