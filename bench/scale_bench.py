"""Scale scenario: a 3-node raftkv cluster and a 3-node etcd cluster, one run.

Issue #10's scale measurements, each phase driven on every system back to
back (etcd first, as in the issue) so that load drift on a shared machine
hits both alike:

1. **new keys**: `wrk` writes a key never written before on every request
   (64-byte values) at --connections (64) for --duration seconds at the
   leader: writes/s, p50/p90/p99, non-2xx answers and socket errors, and
   leader changes (every node's status polled every 0.25 s).
2. **fill** (only if --keys is more than the new-key phase wrote): txns of
   100 new keys at 16 connections until the store holds --keys keys.
3. **at size**: resident memory (RSS) per node and disk use per data dir.
4. **restart**: every node stopped (SIGTERM) and started again; seconds
   until all three are ready with a leader.
5. **follower rebuild**: one follower stopped, its data dir deleted, started
   again; seconds until it holds the leader's revision. raftkv takes a
   wiped node back under its old id (see docs/raft-core.md, "Wiped
   nodes"); an etcd member cannot come back empty under its old id (the
   leader's heartbeats carry a commit index past its log, and it panics),
   so it is removed and added again as etcd's runbook says, and the clock
   starts when its process starts in both cases.
6. **big values**: --big-value-bytes (1 MiB) values under new keys at
   --big-connections (8) for --big-duration seconds: writes/s, latency, and
   RSS growth per node against the bytes written.

During phases 1, 2 and 6 each raftkv node's event-loop pauses over 10 ms
are counted, with the longest (from /v1/status `loop_lag`): the figure
behind "no event-loop pause over 10 ms". etcd reports none (n/a).

    python bench/scale_bench.py --duration 60 --big-duration 20 --json scale.json

`--systems raftkv` leaves etcd out; `--quick` is a ~10-second raftkv-only
run (1 s phases, a fill to 20,000 keys) for the smoke test
(tests/test_scale_bench.py). Prints a markdown table;
`--json FILE` writes every figure. Needs `wrk` (and `etcd` for the etcd
side): `apt-get install wrk etcd-server`.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.cluster_bench import _latency_ms, _stop_process  # noqa: E402
from raftkv.local_cluster import LocalCluster, free_ports  # noqa: E402

SMALL_VALUE_BYTES = 64
FILL_TXN_KEYS = 100
FILL_CONNECTIONS = 16
POLL_INTERVAL = 0.25

# Lua helpers shared by every script: a base64 encoder (etcd's JSON gateway
# wants keys and values in base64) and the request counter that makes every
# key new. wrk runs with one thread, so the counter is unique per run.
_LUA_BASE64 = r"""
local b64chars = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
local function b64(data)
  return ((data:gsub('.', function(x)
    local r, b = '', x:byte()
    for i = 8, 1, -1 do r = r .. (b % 2 ^ i - b % 2 ^ (i - 1) > 0 and '1' or '0') end
    return r
  end) .. '0000'):gsub('%d%d%d?%d?%d?%d?', function(x)
    if #x < 6 then return '' end
    local c = 0
    for i = 1, 6 do c = c + (x:sub(i, i) == '1' and 2 ^ (6 - i) or 0) end
    return b64chars:sub(c + 1, c + 1)
  end) .. ({'', '==', '='})[#data % 3 + 1])
end
local counter = 0
local function next_key(prefix)
  counter = counter + 1
  return string.format("%s%010d", prefix, counter)
end
"""


def _read_file_lua(path: Path) -> str:
    return f'local f = assert(io.open("{path}", "rb")); local value = f:read("*a"); f:close()\n'


# -- measurements --------------------------------------------------------------


@dataclass
class WrkResult:
    requests: int
    seconds: float
    requests_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int


def run_wrk(
    url: str, script: str, connections: int, duration: float, stop_when: Callable[[], bool] | None = None
) -> WrkResult:
    """One `wrk -t1` run. With `stop_when`, it is polled every 0.25 s and the
    run is ended early (SIGINT: wrk then prints its figures as usual)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
        script_path = f.name
    try:
        process = subprocess.Popen(
            ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--timeout", "10s",
             "--latency", "-s", script_path, url],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        if stop_when is not None:
            while process.poll() is None:
                if stop_when():
                    process.send_signal(signal.SIGINT)
                    break
                time.sleep(POLL_INTERVAL)
        out, err = process.communicate()
    finally:
        os.unlink(script_path)
    if process.returncode not in (0, -signal.SIGINT):
        raise RuntimeError(f"wrk failed ({process.returncode}): {err}{out}")
    return parse_wrk(out)


# wrk's run length: "2.00s", or "1.00m" from 60 s on (its latencies never use minutes).
WRK_DURATION_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_wrk(out: str) -> WrkResult:
    def latency(pct: str) -> float:
        match = re.search(rf"^\s+{pct}%\s+([\d.]+\w+)", out, re.M)
        return _latency_ms(match.group(1)) if match else float("nan")

    done = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    if done is None:
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    seconds = float(done.group(2)) * WRK_DURATION_UNITS[done.group(3)]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    requests = int(done.group(1))
    return WrkResult(
        requests=requests,
        seconds=seconds,
        requests_per_s=requests / seconds if seconds else 0.0,
        p50_ms=latency(50),
        p90_ms=latency(90),
        p99_ms=latency(99),
        non_2xx=int(non2xx.group(1)) if non2xx else 0,
        socket_errors=sum(map(int, sock.groups())) if sock else 0,
    )


def memory_of(pid: int) -> dict[str, int]:
    """RSS and its anonymous and file-backed parts, in bytes (/proc/PID/status).

    File-backed resident pages (RssFile) are the page cache mapped into the
    process (LMDB's map, bbolt's map): the kernel drops them under pressure.
    """
    fields = {"VmRSS": "rss", "RssAnon": "rss_anon", "RssFile": "rss_file"}
    out = {name: 0 for name in fields.values()}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in fields:
                out[fields[key]] = int(rest.split()[0]) * 1024
    return out


def disk_bytes(path: Path) -> int:
    """Bytes allocated on disk under path (sparse files count what they use)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.stat(os.path.join(root, name)).st_blocks * 512
    return total


def get_json(url: str, data: bytes | None = None, timeout: float = 2.0) -> Any:
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as r:
        return json.loads(r.read())


class LeaderWatch:
    """Polls every node's (term, leader) while a load phase runs.

    A leader change is a change of the newest (term, leader) any node
    reports; a node that does not answer counts as an unanswered poll.
    """

    def __init__(self, poll: Callable[[], list[tuple[int, str] | None]]) -> None:
        self.poll = poll
        self.changes = 0
        self.unanswered = 0
        self.first: tuple[int, str] | None = None
        self._seen: tuple[int, str] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            answers = self.poll()
            self.unanswered += sum(1 for a in answers if a is None)
            known = [a for a in answers if a is not None and a[1]]
            if known:
                newest = max(known)
                if self._seen is None:
                    self.first = self._seen = newest
                elif newest != self._seen and newest > self._seen:
                    self.changes += 1
                    self._seen = newest
            self._stop.wait(POLL_INTERVAL)

    def __enter__(self) -> "LeaderWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# -- the systems ----------------------------------------------------------------


class System(Protocol):
    name: str

    def leader_url(self) -> str: ...
    def node_ids(self) -> list[str]: ...
    def pid(self, node_id: str) -> int: ...
    def data_dir(self, node_id: str) -> Path: ...
    def term_and_leader(self) -> list[tuple[int, str] | None]: ...
    def revision(self, node_id: str) -> int | None: ...
    def leader_id(self) -> str: ...
    def new_key_script(self, prefix: str) -> str: ...
    def fill_script(self, prefix: str, value_file: Path) -> str: ...
    def big_value_script(self, prefix: str, value_file: Path) -> str: ...
    def restart_all(self, timeout: float) -> float: ...
    def rebuild_follower(self, node_id: str, timeout: float) -> float: ...
    def loop_lag(self) -> dict[str, dict[str, Any]] | None: ...


class RaftkvSystem:
    name = "raftkv"

    def __init__(self, base: Path, stack: contextlib.ExitStack, engine: str) -> None:
        self.cluster = stack.enter_context(LocalCluster(base / "raftkv", engine=engine))
        self.cluster.wait_ready(60)

    def leader_id(self) -> str:
        leader = self.cluster.leader()
        if leader is None:
            return self.cluster.wait_ready(30)
        return leader

    def leader_url(self) -> str:
        return self.cluster.node(self.leader_id()).url

    def node_ids(self) -> list[str]:
        return [n.node_id for n in self.cluster.nodes]

    def pid(self, node_id: str) -> int:
        process = self.cluster.node(node_id).process
        assert process is not None
        return process.pid

    def data_dir(self, node_id: str) -> Path:
        return self.cluster.node(node_id).data_dir

    def term_and_leader(self) -> list[tuple[int, str] | None]:
        out: list[tuple[int, str] | None] = []
        for node_id in self.node_ids():
            status = self.cluster.status(node_id, timeout=2)
            out.append(None if status is None else (status["term"], status.get("leader_id") or ""))
        return out

    def revision(self, node_id: str) -> int | None:
        status = self.cluster.status(node_id, timeout=2)
        return None if status is None else status.get("revision")

    def loop_lag(self) -> dict[str, dict[str, Any]] | None:
        """Each node's event-loop pause counters (/v1/status ``loop_lag``)."""
        out = {}
        for node_id in self.node_ids():
            status = self.cluster.status(node_id, timeout=5)
            if status is None or "loop_lag" not in status:
                return None
            out[node_id] = status["loop_lag"]
        return out

    def new_key_script(self, prefix: str) -> str:
        return _LUA_BASE64 + f"""
local value = string.rep("v", {SMALL_VALUE_BYTES})
request = function()
  return wrk.format("PUT", "/v1/kv/" .. next_key("{prefix}"), nil, value)
end
"""

    def fill_script(self, prefix: str, value_file: Path) -> str:
        return _LUA_BASE64 + _read_file_lua(value_file) + f"""
wrk.headers["Content-Type"] = "application/json"
request = function()
  local ops = {{}}
  for i = 1, {FILL_TXN_KEYS} do
    ops[i] = '{{"op":"put","key":"' .. next_key("{prefix}") .. '","value":"' .. value .. '"}}'
  end
  return wrk.format("POST", "/v1/txn", nil, '{{"success":[' .. table.concat(ops, ",") .. ']}}')
end
"""

    def big_value_script(self, prefix: str, value_file: Path) -> str:
        return _LUA_BASE64 + _read_file_lua(value_file) + f"""
request = function()
  return wrk.format("PUT", "/v1/kv/" .. next_key("{prefix}"), nil, value)
end
"""

    def restart_all(self, timeout: float) -> float:
        self.cluster.stop()
        started = time.monotonic()
        self.cluster.start()
        self.cluster.wait_ready(timeout)
        return time.monotonic() - started

    def rebuild_follower(self, node_id: str, timeout: float) -> float:
        self.cluster.terminate(node_id)
        shutil.rmtree(self.data_dir(node_id))
        started = time.monotonic()
        self.cluster.start_node(node_id)
        # Not cluster.wait_ready(nodes=[node_id]): that also wants the leader
        # among the nodes named, and a follower is never it.
        deadline = started + timeout
        while not self.cluster.is_ready(node_id, 0.5):
            node = self.cluster.node(node_id)
            if node.process is not None and node.process.poll() is not None:
                raise RuntimeError(f"raftkv {node_id} exited; see {node.log_path}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"raftkv {node_id} not ready within {timeout:g}s")
            time.sleep(0.05)
        return time.monotonic() - started


@dataclass
class EtcdMember:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"


class EtcdSystem:
    """etcd 3.4 (Debian's etcd-server) with its defaults: fsync on,
    --snapshot-count 100000, driven through the JSON gateway."""

    name = "etcd"

    def __init__(self, base: Path, stack: contextlib.ExitStack) -> None:
        client_ports, peer_ports = free_ports(3), free_ports(3)
        self.base = base / "etcd"
        self.base.mkdir()
        self.members = [
            EtcdMember(f"e{i + 1}", c, p, self.base / f"e{i + 1}")
            for i, (c, p) in enumerate(zip(client_ports, peer_ports))
        ]
        stack.callback(self.stop)
        for member in self.members:
            self._start(member, "new")
        self.wait_ready(60)

    def _initial_cluster(self) -> str:
        return ",".join(f"{m.name}={m.peer_url}" for m in self.members)

    def _start(self, member: EtcdMember, state: str) -> None:
        with open(self.base / f"{member.name}.log", "ab") as log:
            member.process = subprocess.Popen(
                ["etcd", "--name", member.name, "--data-dir", str(member.data_dir),
                 "--listen-client-urls", member.url, "--advertise-client-urls", member.url,
                 "--listen-peer-urls", member.peer_url, "--initial-advertise-peer-urls", member.peer_url,
                 "--initial-cluster", self._initial_cluster(), "--initial-cluster-state", state,
                 "--initial-cluster-token", "scale-bench"],
                stdout=log, stderr=subprocess.STDOUT,
            )

    def _stop_member(self, member: EtcdMember) -> None:
        if member.process is not None:
            _stop_process(member.process)
            member.process = None

    def stop(self) -> None:
        for member in self.members:
            if member.process is not None and member.process.poll() is None:
                member.process.terminate()
        for member in self.members:
            self._stop_member(member)

    def member(self, name: str) -> EtcdMember:
        return next(m for m in self.members if m.name == name)

    def _status(self, member: EtcdMember) -> dict[str, Any] | None:
        try:
            return get_json(f"{member.url}/v3/maintenance/status", b"{}")
        except (OSError, ValueError):
            return None

    def wait_ready(self, timeout: float, names: list[str] | None = None) -> None:
        """Every member answers /health true (it has a leader and can serve)."""
        deadline = time.monotonic() + timeout
        members = [self.member(n) for n in names] if names else self.members
        while time.monotonic() < deadline:
            for m in members:
                if m.process is not None and m.process.poll() is not None:
                    raise RuntimeError(f"etcd {m.name} exited; see {self.base / (m.name + '.log')}")
            healthy = 0
            for m in members:
                try:
                    if get_json(f"{m.url}/health", timeout=1).get("health") == "true":
                        healthy += 1
                except (OSError, ValueError):
                    pass
            if healthy == len(members):
                return
            time.sleep(0.05)
        raise TimeoutError(f"etcd not ready within {timeout:g}s")

    def leader_id(self) -> str:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for m in self.members:
                status = self._status(m)
                if status and status.get("leader") and status["leader"] == status["header"]["member_id"]:
                    return m.name
            time.sleep(0.1)
        raise TimeoutError("etcd has no leader")

    def leader_url(self) -> str:
        return self.member(self.leader_id()).url

    def node_ids(self) -> list[str]:
        return [m.name for m in self.members]

    def pid(self, node_id: str) -> int:
        process = self.member(node_id).process
        assert process is not None
        return process.pid

    def data_dir(self, node_id: str) -> Path:
        return self.member(node_id).data_dir

    def term_and_leader(self) -> list[tuple[int, str] | None]:
        out: list[tuple[int, str] | None] = []
        for m in self.members:
            status = self._status(m)
            out.append(None if status is None else (int(status.get("raftTerm", 0)), str(status.get("leader", ""))))
        return out

    def loop_lag(self) -> dict[str, dict[str, Any]] | None:
        return None  # etcd does not report event-loop pauses (Go has no single loop)

    def revision(self, node_id: str) -> int | None:
        status = self._status(self.member(node_id))
        return None if status is None else int(status["header"].get("revision", 0))

    def new_key_script(self, prefix: str) -> str:
        value = base64.b64encode(b"v" * SMALL_VALUE_BYTES).decode()
        return _LUA_BASE64 + f"""
wrk.headers["Content-Type"] = "application/json"
request = function()
  return wrk.format("POST", "/v3/kv/put", nil,
    '{{"key":"' .. b64(next_key("{prefix}")) .. '","value":"{value}"}}')
end
"""

    def fill_script(self, prefix: str, value_file: Path) -> str:
        return _LUA_BASE64 + _read_file_lua(value_file) + f"""
wrk.headers["Content-Type"] = "application/json"
local b64value = b64(value)
request = function()
  local ops = {{}}
  for i = 1, {FILL_TXN_KEYS} do
    ops[i] = '{{"requestPut":{{"key":"' .. b64(next_key("{prefix}")) .. '","value":"' .. b64value .. '"}}}}'
  end
  return wrk.format("POST", "/v3/kv/txn", nil, '{{"success":[' .. table.concat(ops, ",") .. ']}}')
end
"""

    def big_value_script(self, prefix: str, value_file: Path) -> str:
        # The value's base64 is read from a file written once (encoding a
        # megabyte in Lua per request would make wrk the bottleneck).
        return _LUA_BASE64 + _read_file_lua(value_file) + f"""
wrk.headers["Content-Type"] = "application/json"
request = function()
  return wrk.format("POST", "/v3/kv/put", nil,
    '{{"key":"' .. b64(next_key("{prefix}")) .. '","value":"' .. value .. '"}}')
end
"""

    def restart_all(self, timeout: float) -> float:
        self.stop()
        started = time.monotonic()
        for member in self.members:
            self._start(member, "new")  # ignored once the data dir exists
        self.wait_ready(timeout)
        return time.monotonic() - started

    def rebuild_follower(self, node_id: str, timeout: float) -> float:
        member = self.member(node_id)
        leader = self.member(self.leader_id())
        listed = get_json(f"{leader.url}/v3/cluster/member/list", b"{}")["members"]
        old_id = next(m["ID"] for m in listed if m.get("name") == node_id)
        self._stop_member(member)
        shutil.rmtree(member.data_dir)
        _retry_unavailable(lambda: get_json(
            f"{leader.url}/v3/cluster/member/remove", json.dumps({"ID": old_id}).encode(), timeout=10))
        _retry_unavailable(lambda: get_json(
            f"{leader.url}/v3/cluster/member/add", json.dumps({"peerURLs": [member.peer_url]}).encode(), timeout=10))
        started = time.monotonic()
        self._start(member, "existing")
        self.wait_ready(timeout, names=[node_id])
        return time.monotonic() - started


def _retry_unavailable(call: Callable[[], Any], timeout: float = 60) -> Any:
    """etcd's strict reconfiguration check answers 503 (unhealthy cluster)
    to a membership change until every member has been connected for 5 s,
    so one right after a restart is retried."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except urllib.error.HTTPError as e:
            if e.code != 503 or time.monotonic() > deadline:
                raise
        time.sleep(0.5)


# -- the scenario -----------------------------------------------------------------


@dataclass
class Settings:
    duration: float
    connections: int
    keys: int
    big_duration: float
    big_connections: int
    big_value_bytes: int
    ready_timeout: float


@dataclass
class SystemReport:
    system: str
    new_keys: dict[str, Any] = field(default_factory=dict)
    fill: dict[str, Any] | None = None
    keys: int = 0
    at_size: dict[str, Any] = field(default_factory=dict)
    restart_s: float = 0.0
    rebuild: dict[str, Any] = field(default_factory=dict)
    big_values: dict[str, Any] = field(default_factory=dict)
    final: dict[str, Any] = field(default_factory=dict)
    # phase -> node -> pauses of the event loop over 10 ms during the phase
    # and the longest (raftkv only; restarts reset the counters, so the
    # restart and rebuild phases have none)
    loop_pauses: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)


def snapshot_resources(system: System) -> dict[str, Any]:
    nodes = {}
    for node_id in system.node_ids():
        nodes[node_id] = {**memory_of(system.pid(node_id)), "disk": disk_bytes(system.data_dir(node_id))}
    return {
        "nodes": nodes,
        "rss_total": sum(n["rss"] for n in nodes.values()),
        "rss_max": max(n["rss"] for n in nodes.values()),
        "disk_total": sum(n["disk"] for n in nodes.values()),
    }


def leader_revision(system: System) -> int:
    revision = system.revision(system.leader_id())
    if revision is None:
        raise RuntimeError(f"{system.name}: the leader did not report its revision")
    return revision


def phase_new_keys(system: System, settings: Settings) -> dict[str, Any]:
    with LeaderWatch(system.term_and_leader) as watch:
        result = run_wrk(system.leader_url(), system.new_key_script("scale/new/"), settings.connections,
                         settings.duration)
    return {**asdict(result), "connections": settings.connections, "leader_changes": watch.changes,
            "unanswered_status_polls": watch.unanswered}


def phase_fill(system: System, target_keys: int, written: int, value_file: Path) -> dict[str, Any] | None:
    if target_keys <= written:
        return None
    url = system.leader_url()
    started = time.monotonic()
    # Long enough for any fill; the run ends as soon as the leader's
    # revision shows every key is in: both systems give a txn one revision,
    # whatever number of keys it writes.
    goal = leader_revision(system) + -(-(target_keys - written) // FILL_TXN_KEYS)
    result = run_wrk(url, system.fill_script("scale/fill/", value_file), FILL_CONNECTIONS, 24 * 3600,
                     stop_when=lambda: (system.revision(system.leader_id()) or 0) >= goal)
    return {**asdict(result), "keys_per_s": result.requests * FILL_TXN_KEYS / (time.monotonic() - started)}


def phase_rebuild_timed(system: System, timeout: float) -> dict[str, Any]:
    """Rebuild with the clock running until the follower has the leader's revision."""
    leader = system.leader_id()
    follower = next(n for n in system.node_ids() if n != leader)
    target = leader_revision(system)
    started = time.monotonic()
    start_to_ready = system.rebuild_follower(follower, timeout)
    launched = time.monotonic() - start_to_ready
    deadline = time.monotonic() + timeout
    while (system.revision(follower) or 0) < target:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{system.name}: {follower} did not reach revision {target}")
        time.sleep(0.05)
    caught_up = time.monotonic() - launched
    return {
        "node": follower,
        "revision": target,
        "seconds": caught_up,
        "seconds_to_ready": start_to_ready,
        "procedure_seconds": launched - started,
        "disk": disk_bytes(system.data_dir(follower)),
    }


def phase_big_values(system: System, settings: Settings, value_file: Path) -> dict[str, Any]:
    before = snapshot_resources(system)
    result = run_wrk(system.leader_url(), system.big_value_script("scale/big/", value_file),
                     settings.big_connections, settings.big_duration)
    after = snapshot_resources(system)
    written = (result.requests - result.non_2xx) * settings.big_value_bytes
    growth = {n: after["nodes"][n]["rss"] - before["nodes"][n]["rss"] for n in after["nodes"]}
    anon_growth = {n: after["nodes"][n]["rss_anon"] - before["nodes"][n]["rss_anon"] for n in after["nodes"]}
    return {
        **asdict(result),
        "connections": settings.big_connections,
        "value_bytes": settings.big_value_bytes,
        "bytes_written": written,
        "rss_growth": growth,
        "rss_anon_growth": anon_growth,
        "max_rss_growth_vs_written": max(growth.values()) / written if written else None,
        "disk_growth": after["disk_total"] - before["disk_total"],
    }


def phase_pauses(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]], since: float) -> dict[str, dict[str, float]]:
    """Per node: event-loop pauses over 10 ms between two /v1/status
    ``loop_lag`` readings, and the longest of them (the all-time maximum if
    it rose, else the longest of the recent pauses since ``since``)."""
    out = {}
    for node, lag in after.items():
        old = before.get(node)
        if old is None:
            continue
        if lag["max_ms"] > old["max_ms"]:
            longest = lag["max_ms"]
        else:
            longest = max((ms for at, ms in lag["recent"] if at >= since), default=0.0)
        out[node] = {"over_10ms": lag["over_10ms"] - old["over_10ms"], "max_ms": longest}
    return out


def run_scenario(systems: list[System], settings: Settings, base: Path, log: Callable[[str], None]) -> list[SystemReport]:
    reports = {s.name: SystemReport(s.name) for s in systems}
    small = base / "small.value"
    small.write_bytes(b"v" * SMALL_VALUE_BYTES)
    big_raw = base / "big.value"
    big_raw.write_bytes(b"v" * settings.big_value_bytes)
    big_b64 = base / "big.value.b64"
    big_b64.write_bytes(base64.b64encode(big_raw.read_bytes()))

    def each(what: str, step: Callable[[System, SystemReport], None], pauses: bool = False) -> None:
        for system in systems:
            log(f"{system.name}: {what}")
            before, started = (system.loop_lag() if pauses else None), time.time()
            step(system, reports[system.name])
            if before is not None:
                after = system.loop_lag()
                if after is not None:
                    reports[system.name].loop_pauses[what] = phase_pauses(before, after, started)
            # Every figure so far, in case a later phase fails.
            log(f"{system.name}: {json.dumps(asdict(reports[system.name]))}")

    def new_keys(system: System, report: SystemReport) -> None:
        report.new_keys = phase_new_keys(system, settings)
        report.keys = report.new_keys["requests"] - report.new_keys["non_2xx"]

    def fill(system: System, report: SystemReport) -> None:
        report.fill = phase_fill(system, settings.keys, report.keys, small)
        if report.fill is not None:
            report.keys += (report.fill["requests"] - report.fill["non_2xx"]) * FILL_TXN_KEYS

    def at_size(system: System, report: SystemReport) -> None:
        report.at_size = snapshot_resources(system)

    def restart(system: System, report: SystemReport) -> None:
        report.restart_s = system.restart_all(settings.ready_timeout)

    def rebuild(system: System, report: SystemReport) -> None:
        report.rebuild = phase_rebuild_timed(system, settings.ready_timeout)

    def big(system: System, report: SystemReport) -> None:
        value_file = big_raw if system.name == "raftkv" else big_b64
        report.big_values = phase_big_values(system, settings, value_file)
        report.final = snapshot_resources(system)

    each("new keys", new_keys, pauses=True)
    each("fill", fill, pauses=True)
    each("resources at size", at_size)
    each("restart all", restart)
    each("follower rebuild", rebuild)
    each("big values", big, pauses=True)
    return [reports[s.name] for s in systems]


# -- output -------------------------------------------------------------------------

MIB = 1 << 20


def _rows(report: SystemReport) -> list[tuple[str, str]]:
    nk, big, size = report.new_keys, report.big_values, report.at_size
    per_node_rss = " / ".join(f"{n['rss'] / MIB:,.0f}" for n in size["nodes"].values())
    growth = " / ".join(f"{g / MIB:,.0f}" for g in big["rss_growth"].values())
    return [
        (f"new keys, {nk['connections']} connections: writes/s", f"{nk['requests_per_s']:,.0f}"),
        ("new keys: p50 / p90 / p99 ms", f"{nk['p50_ms']:.1f} / {nk['p90_ms']:.1f} / {nk['p99_ms']:.1f}"),
        ("new keys: leader changes", f"{nk['leader_changes']}"),
        ("new keys: non-2xx / socket errors", f"{nk['non_2xx']} / {nk['socket_errors']}"),
        ("keys stored", f"{report.keys:,}"),
        ("RSS per node at size, MiB", per_node_rss),
        ("disk, 3 nodes, MiB", f"{size['disk_total'] / MIB:,.0f}"),
        ("restart of all 3 to ready, s", f"{report.restart_s:.2f}"),
        ("follower rebuild from empty, s", f"{report.rebuild['seconds']:.2f}"),
        (f"{big['value_bytes'] // 1024} KiB values, {big['connections']} connections: writes/s",
         f"{big['requests_per_s']:,.1f}"),
        ("big values: p50 / p99 ms", f"{big['p50_ms']:.0f} / {big['p99_ms']:.0f}"),
        ("big values: MiB written / RSS growth per node MiB",
         f"{big['bytes_written'] / MIB:,.0f} / {growth}"),
        ("RSS per node at the end, MiB",
         " / ".join(f"{n['rss'] / MIB:,.0f}" for n in report.final["nodes"].values())),
        *[(f"{phase}: loop pauses over 10 ms per node (longest ms)", _pauses(report.loop_pauses.get(phase)))
          for phase in ("new keys", "fill", "big values")],
    ]


def _pauses(per_node: dict[str, dict[str, float]] | None) -> str:
    if not per_node:
        return "n/a"
    return " / ".join(f"{p['over_10ms']:.0f} ({p['max_ms']:.0f})" for p in per_node.values())


def markdown(reports: list[SystemReport]) -> str:
    rows = [_rows(r) for r in reports]
    header = "| | " + " | ".join(r.system for r in reports) + " |"
    lines = [header, "| --- |" + " ---: |" * len(reports)]
    for i, (label, _) in enumerate(rows[0]):
        lines.append(f"| {label} | " + " | ".join(r[i][1] for r in rows) + " |")
    return "\n".join(lines)


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--systems", default="etcd,raftkv", help="comma-separated: etcd, raftkv (default: %(default)s)")
    parser.add_argument("--engine", default="native", help="raftkv engine (default: %(default)s)")
    parser.add_argument("--duration", type=float, default=60, help="seconds of new-key writes (default: %(default)s)")
    parser.add_argument("--connections", type=int, default=64, help="connections for new keys (default: %(default)s)")
    parser.add_argument("--keys", type=int, default=0,
                        help="fill up to this many keys after the new-key phase, in txns of 100 (default: no fill)")
    parser.add_argument("--big-duration", type=float, default=20, help="seconds of big-value writes (default: %(default)s)")
    parser.add_argument("--big-connections", type=int, default=8, help="connections for big values (default: %(default)s)")
    parser.add_argument("--big-value-bytes", type=int, default=MIB, help="big value size (default: %(default)s)")
    parser.add_argument("--ready-timeout", type=float, default=600, help="seconds a restart or rebuild may take")
    parser.add_argument("--quick", action="store_true",
                        help="a few seconds, raftkv only, small figures: the smoke test's run")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--keep-dir", type=Path, help="run in this directory and keep it (logs, data)")
    args = parser.parse_args(argv)
    if args.quick:
        args.systems, args.duration, args.connections = "raftkv", 1, 16
        # Past what one second of new keys writes, so the fill phase runs too.
        args.keys, args.big_duration, args.big_connections, args.ready_timeout = 20_000, 1, 2, 60
    names = [n for n in args.systems.split(",") if n]
    if not names or set(names) - {"etcd", "raftkv"}:
        parser.error(f"--systems takes etcd and/or raftkv, not {args.systems!r}")
    if shutil.which("wrk") is None:
        parser.error("wrk is not installed (apt-get install wrk)")
    if "etcd" in names and shutil.which("etcd") is None:
        parser.error("etcd is not installed (apt-get install etcd-server)")
    settings = Settings(args.duration, args.connections, args.keys, args.big_duration, args.big_connections,
                        args.big_value_bytes, args.ready_timeout)

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message} (load {load_average()})", file=sys.stderr, flush=True)

    with _workdir(args.keep_dir) as base, contextlib.ExitStack() as stack:
        systems: list[System] = []
        for name in names:
            log(f"starting {name}")
            systems.append(EtcdSystem(base, stack) if name == "etcd" else RaftkvSystem(base, stack, args.engine))
        load_before = load_average()
        started = time.time()
        reports = run_scenario(systems, settings, base, log)
        output = {
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "seconds": round(time.time() - started, 1),
            "load_average_before": load_before,
            "load_average_after": load_average(),
            "settings": asdict(settings),
            "systems": [asdict(r) for r in reports],
        }
    print(markdown(reports))
    print(f"\nload average (1/5/15 min) before {output['load_average_before']}, after {output['load_average_after']}")
    if args.json:
        args.json.write_text(json.dumps(output, indent=2))
    return 0


@contextlib.contextmanager
def _workdir(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    with tempfile.TemporaryDirectory(prefix="raftkv-scale-") as tmp:
        yield Path(tmp)


if __name__ == "__main__":
    sys.exit(main())
