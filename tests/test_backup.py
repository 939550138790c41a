"""Backup and restore on real clusters: `raftkv snapshot save` streams GET
/v1/snapshot from a running 3-node cluster, `status` verifies the file,
`restore` makes the data dirs of a NEW 3-node cluster that starts with
`raftkv serve` and holds every key exactly as it was (value, revisions,
version); a damaged or truncated file is refused with a clear message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from raftkv.local_cluster import LocalCluster
from raftkv.storage.snapshot_stream_backup import BackupCorruptError, read_backup
from tests.http import call, call_json
from tests.snapshot_helpers import all_keys, load_keys


def raftkv(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "raftkv", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict]:
    """A backup of a cluster with history (overwrites, deletes, a compaction),
    and the keys and status it had."""
    base = tmp_path_factory.mktemp("backup")
    with LocalCluster(base / "old", peer_tls=False) as cluster:
        leader = cluster.node(cluster.wait_ready())
        load_keys(leader.url, "k/", 1_500)
        for i in range(0, 1_500, 7):
            assert call("PUT", f"{leader.url}/v1/kv/k/{i:08d}", b"second").status == 200
        assert call("DELETE", f"{leader.url}/v1/kv?prefix=k/0000009").status == 200
        revision = call("GET", f"{leader.url}/v1/status").json()["revision"]
        assert call_json("POST", f"{leader.url}/v1/compaction", {"revision": revision - 5}).status == 200
        follower = next(n for n in cluster.nodes if n is not leader)
        target = base / "cluster.backup"
        saved = raftkv("snapshot", "save", str(target), "--endpoints", follower.url)
        assert saved.returncode == 0, saved.stderr
        assert "sha256" in saved.stdout and not target.with_name("cluster.backup.part").exists()
        keys = all_keys(leader.url, consistency="linearizable")
        status = call("GET", f"{leader.url}/v1/status").json()
    return target, keys, status


def test_status_verifies_and_describes_a_backup(saved: tuple[Path, dict, dict]) -> None:
    target, keys, status = saved
    shown = raftkv("snapshot", "status", str(target), "--json")
    assert shown.returncode == 0, shown.stderr
    info = orjson.loads(shown.stdout)
    assert info["keys"] == len(keys) and info["revision"] == status["revision"]
    assert info["compact_revision"] == status["compact_revision"] and info["size"] == target.stat().st_size
    assert info["sha256"] == read_backup(target).sha256
    table = raftkv("snapshot", "status", str(target))
    assert table.returncode == 0 and "revision" in table.stdout and str(len(keys)) in table.stdout


def test_restore_into_a_fresh_three_node_cluster_keeps_every_key(
    saved: tuple[Path, dict, dict], tmp_path: Path
) -> None:
    target, keys, status = saved
    cluster = LocalCluster(tmp_path, peer_tls=False, extra_args=["--cluster-id", "restored-test"])
    for node in cluster.nodes:
        done = raftkv(
            "snapshot", "restore", str(target), "--data-dir", str(node.data_dir), "--id", node.node_id,
            "--peers", cluster.peers_arg(node), "--cluster-id", "restored-test",
        )
        assert done.returncode == 0, done.stderr
        assert "raftkv serve" in done.stdout and "restored-test" in done.stdout
    with cluster:
        leader = cluster.node(cluster.wait_ready())
        for node in cluster.nodes:
            assert all_keys(node.url) == keys, node.node_id
        now = call("GET", f"{leader.url}/v1/status").json()
        assert now["revision"] == status["revision"] and now["compact_revision"] == status["compact_revision"]
        assert sorted(m["id"] for m in now["members"]) == ["n1", "n2", "n3"]
        # The history came along: a read of the past, and 410 below the compaction.
        assert call("GET", f"{leader.url}/v1/kv/k/00000007?revision={status['compact_revision']}").status in (200, 404)
        assert call("GET", f"{leader.url}/v1/kv/k/00000007?revision=1").status == 410
        # A working cluster: writes go on from the backup's revision.
        put = call("PUT", f"{leader.url}/v1/kv/after-restore", b"yes")
        assert put.status == 200 and put.json()["revision"] == status["revision"] + 1
        # A member restarts on its restored data dir like any other.
        follower = next(n for n in cluster.nodes if n is not leader)
        cluster.terminate(follower.node_id)
        cluster.start_node(follower.node_id)
        cluster.wait_ready()


def test_a_damaged_or_truncated_backup_is_refused(saved: tuple[Path, dict, dict], tmp_path: Path) -> None:
    target, _, _ = saved
    raw = target.read_bytes()
    damaged = tmp_path / "damaged.backup"
    middle = len(raw) // 2
    damaged.write_bytes(raw[:middle] + bytes([raw[middle] ^ 0xFF]) + raw[middle + 1 :])
    truncated = tmp_path / "truncated.backup"
    truncated.write_bytes(raw[: len(raw) - 1000])
    other = tmp_path / "not-a-backup"
    other.write_bytes(b"hello")
    for path, reason in ((damaged, "checksum mismatch"), (truncated, "truncated"), (other, "not a raftkv backup")):
        with pytest.raises(BackupCorruptError, match=reason):
            read_backup(path)
        shown = raftkv("snapshot", "status", str(path))
        assert shown.returncode == 1 and reason in shown.stderr, shown.stderr
        data_dir = tmp_path / f"restore-{path.name}"
        restored = raftkv(
            "snapshot", "restore", str(path), "--data-dir", str(data_dir), "--id", "n1",
            "--peers", "n1=127.0.0.1:1",
        )
        assert restored.returncode == 1 and reason in restored.stderr and "nothing was written" in restored.stderr
        assert not data_dir.exists()


def test_restore_refuses_a_data_dir_in_use(saved: tuple[Path, dict, dict], tmp_path: Path) -> None:
    target, _, _ = saved
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "wal").mkdir()
    refused = raftkv("snapshot", "restore", str(target), "--data-dir", str(tmp_path / "d"), "--id", "n1",
                     "--peers", "n1=127.0.0.1:1")
    assert refused.returncode == 2 and "not empty" in refused.stderr


def test_a_snapshot_over_http_carries_its_checksum(saved: tuple[Path, dict, dict], tmp_path: Path) -> None:
    with LocalCluster(tmp_path, nodes=1, peer_tls=False) as cluster:
        url = cluster.node(cluster.wait_ready()).url
        assert call("PUT", f"{url}/v1/kv/a", b"1").status == 200
        answer = call("GET", f"{url}/v1/snapshot", timeout=60)
        assert answer.status == 200 and answer.headers["content-type"] == "application/octet-stream"
        path = tmp_path / "one.backup"
        path.write_bytes(answer.body)
        backup = read_backup(path)
        assert backup.sha256 == answer.headers["x-raftkv-snapshot-sha256"] and backup.header["keys"] == 1
        bad = call("GET", f"{url}/v1/snapshot?consistency=eventual")
        assert bad.status == 400 and bad.json()["error"]["code"] == "invalid_argument"
