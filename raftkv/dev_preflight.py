"""Checks `raftkv dev` makes before it touches anything: is this cluster already running?

A second `raftkv dev` (or a `raftkv serve` left over) on the same ports or data
directories must be refused before `--clean` deletes data a live node is using.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from raftkv.local_cluster import LocalCluster, port_is_free
from raftkv.storage.wal import LOCK_FILE


def wal_lock_held(wal_dir: Path) -> bool:
    """True if a live process holds the WAL lock of `wal_dir` (the lock `raftkv serve` takes).

    The probe takes the flock for an instant and lets it go; a missing lock file
    means no native node ever ran there.
    """
    try:
        fd = os.open(wal_dir / LOCK_FILE, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing the descriptor also releases a lock the probe took
    return False


def lock_holder_pid(path: Path) -> int | None:
    """The pid holding a flock on `path`, from /proc/locks (Linux); None if unknown."""
    try:
        st = os.stat(path)
        locks = Path("/proc/locks").read_text()
    except OSError:
        return None
    wanted = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in locks.splitlines():
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"; blocked waiters are marked "->"
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == wanted:
            return int(fields[4])
    return None


def node_wal_dir(data_dir: Path) -> Path:
    """Where a native node keeps its WAL under its --data-dir."""
    return data_dir / "wal"


def reasons_cluster_in_use(cluster: LocalCluster) -> list[str]:
    """Why `cluster` cannot start here now: ports in use, data directories locked (empty: free)."""
    reasons = []
    for node in cluster.nodes:
        for kind, addr in (("HTTP", node.http_addr), ("Raft", node.peer_addr)):
            host, port = addr.rsplit(":", 1)
            if not port_is_free(int(port), host):
                reasons.append(f"{node.node_id}'s {kind} port {addr} is in use")
        wal_dir = node_wal_dir(node.data_dir)
        if wal_lock_held(wal_dir):
            pid = lock_holder_pid(wal_dir / LOCK_FILE)
            holder = f" (pid {pid})" if pid is not None else ""
            reasons.append(f"{node.node_id}'s data directory {node.data_dir} is locked by a running node{holder}")
    return reasons
