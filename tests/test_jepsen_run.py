"""The `run` command: pure parts (partitions, schedule, stats, generators),
the per-link proxy topology, and short real runs against a local cluster."""
from __future__ import annotations

import asyncio
import json
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest

from jepsen_style.cli import main
from jepsen_style.history import HistoryEvent, parse_history_lines, read_history
from jepsen_style.nemesis.kinds import NemesisChoiceError, parse_nemeses
from jepsen_style.nemesis.link_proxies import LinkProxies
from jepsen_style.nemesis.partitions import all_links, bridge, isolate, one_way, random_halves
from jepsen_style.nemesis.schedule import choose_nodes, plan_faults
from jepsen_style.report.stats import fault_intervals, percentile, throughput, timed_ops
from jepsen_style.runner import RunConfig, run
from jepsen_style.workloads import make_workload
from jepsen_style.workloads.register import OPS_PER_GENERATION, RegisterWorkload

REPO = Path(__file__).resolve().parents[1]
NODES = ["n1", "n2", "n3", "n4", "n5"]


# --- partitions -------------------------------------------------------------

def test_random_halves_cuts_every_link_across_and_none_within() -> None:
    partition = random_halves(NODES, random.Random(7))
    assert len(partition.cut) == 2 * 2 * 3  # 2 x 3 nodes, both directions
    sides = partition.description.split(" | ")
    left, right = sides[0].split(), sides[1].split()
    assert len(left) == 2 and len(right) == 3 and set(left + right) == set(NODES)
    for a in left:
        for b in right:
            assert (a, b) in partition.cut and (b, a) in partition.cut
    for side in (left, right):
        assert not any((a, b) in partition.cut for a in side for b in side)


def test_isolate_cuts_one_node_both_ways() -> None:
    partition = isolate("n2", NODES[:3])
    assert partition.cut == {("n2", "n1"), ("n1", "n2"), ("n2", "n3"), ("n3", "n2")}


def test_bridge_keeps_the_bridge_node_connected_to_both_halves() -> None:
    partition = bridge(NODES, random.Random(3))
    middle = partition.description.split("bridge ")[1].rstrip(")")
    assert not any(middle in link for link in partition.cut)
    assert len(partition.cut) == 2 * 2 * 2


def test_one_way_cuts_only_links_into_one_node() -> None:
    partition = one_way(NODES[:3], random.Random(1))
    deaf = {b for _, b in partition.cut}
    assert len(deaf) == 1 and len(partition.cut) == 2
    assert all(a != b for a, b in partition.cut)


def test_all_links_are_directed_pairs() -> None:
    assert len(all_links(NODES[:3])) == 6


# --- nemesis choice and schedule --------------------------------------------

def test_parse_nemeses_expands_groups_and_keeps_order() -> None:
    assert parse_nemeses("kill,pause", "pysyncobj") == ["kill", "pause"]
    assert parse_nemeses("kills", "native") == ["kill", "kill-leader", "kill-minority"]
    assert parse_nemeses("none", "pysyncobj") == []
    assert "partition" in parse_nemeses("all", "native")
    assert "partition" not in parse_nemeses("all", "pysyncobj")


def test_partition_with_pysyncobj_is_refused_with_the_reason() -> None:
    with pytest.raises(NemesisChoiceError, match="names nodes by address"):
        parse_nemeses("kill,partition", "pysyncobj")
    with pytest.raises(NemesisChoiceError, match="unknown nemesis 'explode'"):
        parse_nemeses("explode", "native")


def test_fault_plan_is_deterministic_and_fits_in_time() -> None:
    plan = plan_faults(["kill", "pause"], 30.0, random.Random(5))
    assert plan == plan_faults(["kill", "pause"], 30.0, random.Random(5))
    assert plan and all(0 < f.start < f.end <= 30.0 for f in plan)
    assert all(a.end < b.start for a, b in zip(plan, plan[1:]))
    assert plan_faults([], 30.0, random.Random(5)) == []
    kinds = ["kill", "pause", "partition"]
    assert all({f.kind for f in plan_faults(kinds, 30.0, random.Random(seed))[:3]} == set(kinds)
               for seed in range(20))


def test_choose_nodes() -> None:
    rng = random.Random(1)
    assert choose_nodes("kill-leader", NODES, "n4", rng) == ["n4"]
    assert len(choose_nodes("kill-minority", NODES, None, rng)) == 2
    assert len(choose_nodes("kill-leader", NODES, None, rng)) == 1


# --- generators -------------------------------------------------------------

def test_register_generator_is_deterministic_and_rotates_keys() -> None:
    workload = make_workload("register")
    gen_a, gen_b = workload.generator(0), workload.generator(0)
    rng_a, rng_b = random.Random(9), random.Random(9)
    ops_a = [gen_a.next_op(rng_a) for _ in range(3 * OPS_PER_GENERATION)]
    ops_b = [gen_b.next_op(rng_b) for _ in range(3 * OPS_PER_GENERATION)]
    assert ops_a == ops_b
    assert len({op.key for op in ops_a}) > 3  # moved on to later key generations
    assert {op.f for op in ops_a} == {"read", "write", "cas"}


def test_set_generator_adds_unique_elements_per_worker() -> None:
    workload = make_workload("set")
    rng = random.Random(0)
    elements = [workload.generator(w).next_op(rng).value for w in range(3)]
    assert len(set(elements)) == 3


def test_unsafe_reads_only_for_register() -> None:
    with pytest.raises(ValueError, match="register workload only"):
        make_workload("set", unsafe_serializable_reads=True)
    with pytest.raises(ValueError, match="unknown workload"):
        make_workload("queue")


# --- report figures -----------------------------------------------------------

def _event(process: int | str, type: str, f: str, time: float, **extra: object) -> HistoryEvent:
    return HistoryEvent(process, type, f, None if process == "nemesis" else "k", None, time,  # type: ignore[arg-type]
                        dict(extra))


def test_timed_ops_and_fault_intervals() -> None:
    events = [
        _event(0, "invoke", "read", 0.0), _event("nemesis", "info", "kill", 0.5, phase="start"),
        _event(0, "ok", "read", 1.0), _event(1, "invoke", "write", 1.5),
        _event("nemesis", "info", "kill", 2.0, phase="end"), _event(2, "invoke", "write", 2.5),
        _event(1, "info", "write", 3.0), _event("nemesis", "info", "pause", 3.5, phase="start"),
    ]
    ops = timed_ops(events)
    assert [(op.process, op.type) for op in ops] == [(0, "ok"), (1, "info"), (2, "open")]
    assert ops[0].latency == 1.0
    faults = fault_intervals(events, 4.0)
    assert [(f.kind, f.start, f.end) for f in faults] == [("kill", 0.5, 2.0), ("pause", 3.5, 4.0)]
    assert throughput(ops) == {"info": [(0.0, 0), (1.0, 0), (2.0, 0), (3.0, 1)],
                               "ok": [(0.0, 0), (1.0, 1), (2.0, 0), (3.0, 0)]}


def test_percentile_nearest_rank() -> None:
    assert percentile([], 0.5) is None
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert percentile(list(map(float, range(1, 101))), 0.99) == 99.0


# A key's history recorded by a run (kill + partition, native engine) that a
# checker revision once wrongly judged not linearizable: write 1, cas 4->3
# refused, read 1, write 3, read 3, write 3, cas 2->2 refused, read 3.
RECORDED_REGISTER_HISTORY = [
    '{"process":0,"type":"invoke","f":"write","key":"k","value":1,"time":18.760818}',
    '{"process":0,"type":"ok","f":"write","key":"k","value":1,"time":18.775518}',
    '{"process":0,"type":"invoke","f":"cas","key":"k","value":[4,3],"time":19.114943}',
    '{"error":"compare failed","process":0,"type":"fail","f":"cas","key":"k","value":[4,3],"time":19.149537}',
    '{"process":5,"type":"invoke","f":"read","key":"k","value":null,"time":19.422149}',
    '{"process":5,"type":"ok","f":"read","key":"k","value":1,"time":19.432127}',
    '{"process":3,"type":"invoke","f":"write","key":"k","value":3,"time":19.459542}',
    '{"process":3,"type":"ok","f":"write","key":"k","value":3,"time":19.469458}',
    '{"process":8,"type":"invoke","f":"read","key":"k","value":null,"time":19.641953}',
    '{"process":8,"type":"ok","f":"read","key":"k","value":3,"time":19.649481}',
    '{"process":3,"type":"invoke","f":"write","key":"k","value":3,"time":19.735753}',
    '{"process":3,"type":"ok","f":"write","key":"k","value":3,"time":19.744181}',
    '{"process":5,"type":"invoke","f":"cas","key":"k","value":[2,2],"time":19.795421}',
    '{"error":"compare failed","process":5,"type":"fail","f":"cas","key":"k","value":[2,2],"time":19.809421}',
    '{"process":9,"type":"invoke","f":"read","key":"k","value":null,"time":20.043262}',
    '{"process":9,"type":"ok","f":"read","key":"k","value":3,"time":20.049095}',
]


def test_a_recorded_register_history_is_linearizable() -> None:
    workload = make_workload("register")
    events = list(parse_history_lines(RECORDED_REGISTER_HISTORY, "recorded"))
    assert workload.check(events).verdict == "valid"
    # The same history with a later read of the overwritten 1: a stale read.
    stale = [*RECORDED_REGISTER_HISTORY,
             '{"process":10,"type":"invoke","f":"read","key":"k","value":null,"time":20.1}',
             '{"process":10,"type":"ok","f":"read","key":"k","value":1,"time":20.2}']
    outcome = workload.check(list(parse_history_lines(stale, "stale")))
    assert outcome.verdict == "invalid" and outcome.failure_svg and "k" in outcome.anomalies[0]


# --- per-link proxies (the topology partitions use) ----------------------------

class _Listener:
    """A TCP server that records what each connection sends."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.received: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = conn.recv(1024)
                if data:
                    self.received.append(data)

    def close(self) -> None:
        self.sock.close()


def _send(address: str, data: bytes) -> None:
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=2) as conn:
        conn.sendall(data)


def _wait_for(condition: object, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def test_link_proxies_route_cut_and_heal_single_directions() -> None:
    peers = {name: _Listener() for name in ("n1", "n2", "n3")}
    proxies = LinkProxies()
    try:
        proxies.start()
        proxies.create({name: listener.address for name, listener in peers.items()})
        assert len(proxies.links) == 6
        assert proxies.route("n1", "n2") != proxies.route("n3", "n2")
        _send(proxies.route("n1", "n2"), b"n1->n2")
        assert _wait_for(lambda: b"n1->n2" in peers["n2"].received)

        proxies.cut([("n1", "n2")])
        with pytest.raises(OSError):
            _send(proxies.route("n1", "n2"), b"lost")
        _send(proxies.route("n2", "n1"), b"n2->n1")  # the other direction still flows
        _send(proxies.route("n3", "n2"), b"n3->n2")
        assert _wait_for(lambda: b"n2->n1" in peers["n1"].received and b"n3->n2" in peers["n2"].received)

        proxies.heal()
        _send(proxies.route("n1", "n2"), b"again")
        assert _wait_for(lambda: b"again" in peers["n2"].received)

        proxies.add_latency(300, 0, [("n1", "n3")])
        started = time.monotonic()
        _send(proxies.route("n1", "n3"), b"slow")
        assert _wait_for(lambda: b"slow" in peers["n3"].received)
        assert time.monotonic() - started >= 0.25
        proxies.remove_latency()
        started = time.monotonic()
        _send(proxies.route("n1", "n3"), b"fast")
        assert _wait_for(lambda: b"fast" in peers["n3"].received)
        assert time.monotonic() - started < 0.25
    finally:
        proxies.stop()
        for listener in peers.values():
            listener.close()


# --- the command and real runs ------------------------------------------------

def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "jepsen_style", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def test_cli_refuses_partition_on_pysyncobj_without_starting_anything(tmp_path: Path) -> None:
    result = _cli("run", "--engine", "pysyncobj", "--nemesis", "partition", "--out", str(tmp_path / "r"))
    assert result.returncode == 2
    assert "names nodes by address" in result.stderr and "--engine native" in result.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("args, message", [
    (["--time", "0"], "must be more than 0"),
    (["--rate", "fast"], "not a float"),
    (["--fault-seconds", "5:1"], "A <= B"),
    (["--nodes", "4"], "invalid choice"),
    (["--workload", "set", "--unsafe-serializable-reads"], "register only"),
])
def test_cli_rejects_bad_input(args: list[str], message: str, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r"
    try:
        code = main(["run", *args, "--out", str(out)])
    except SystemExit as exit:
        code = exit.code
    assert code == 2 and message in capsys.readouterr().err
    assert not out.exists()


def test_cluster_that_will_not_start_is_a_harness_failure(tmp_path: Path) -> None:
    config = RunConfig(workload="register", nemeses=["kill"], time_s=5, concurrency=2, rate=10,
                       nodes=3, engine="pysyncobj", seed=1, out=tmp_path / "r",
                       node_args=("--timeout", "not-a-number"))
    result = run(config)
    assert result.exit_code == 2
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert results["valid"] is None and results["verdict"] == "harness-error"
    assert "did not start" in results["harness_errors"][0]
    assert (tmp_path / "r" / "report.html").exists()
    # The complaint of the node that failed first is kept (the others may be
    # stopped before they got as far).
    logs = [p.read_text() for p in (tmp_path / "r" / "logs").glob("n*.log")]
    assert any("not-a-number" in text for text in logs), logs


def test_a_harness_bug_exits_2_and_is_not_taken_for_a_verdict(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # Nothing real makes the harness crash, so one client call is replaced.
    async def crash(self: RegisterWorkload, api: object, op: object) -> None:
        raise ValueError("client exploded")

    monkeypatch.setattr(RegisterWorkload, "invoke", crash)
    result = run(RunConfig(workload="register", nemeses=[], time_s=1, concurrency=2, rate=10,
                           nodes=3, engine="pysyncobj", seed=1, out=tmp_path / "r"))
    assert result.exit_code == 2
    assert "client exploded" in result.results["harness_errors"][0]
    assert result.results["valid"] is None


@pytest.mark.timeout(90)
def test_register_run_with_kill_and_partition_nemeses_is_valid(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = _cli("run", "--workload", "register", "--engine", "native", "--nemesis", "kill,partition",
                  "--time", "20",
                  "--concurrency", "6", "--rate", "30", "--seed", "11", "--out", str(out), timeout=80)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "verdict: VALID" in result.stdout
    results = json.loads((out / "results.json").read_text())
    assert results["valid"] is True and results["exit_code"] == 0
    assert results["nemesis"]["faults"] >= 2
    assert set(results["nemesis"]["ran"]) == {"kill", "partition"} and results["nemesis"]["not_run"] == []
    assert results["counts"]["ok"] > 100
    events = read_history(out / "history.jsonl")
    assert {e.f for e in events if e.is_nemesis} >= {"kill", "partition"}
    assert all(e.type != "fail" or e.f != "cas" or e.extra.get("error") == "compare failed" for e in events)
    page = (out / "report.html").read_text()
    assert "VALID" in page and "timeline.png" in page
    for name in ("timeline.png", "latency.png", "throughput.png", "logs/n1.log", "logs/n3.log",
                 "logs/toxiproxy.log"):
        assert (out / name).stat().st_size > 0


@pytest.mark.timeout(90)
def test_unsafe_serializable_reads_under_partition_are_caught(tmp_path: Path) -> None:
    out = tmp_path / "broken"
    result = _cli("run", "--workload", "register", "--engine", "native", "--nemesis", "partition",
                  "--time", "15",
                  "--unsafe-serializable-reads", "--seed", "3", "--out", str(out), timeout=80)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "INVALID" in result.stdout
    results = orjson.loads((out / "results.json").read_bytes())
    assert results["valid"] is False and "not linearizable" in results["anomalies"][0]
    assert (out / "failure.svg").read_text().startswith("<svg")
    assert "failure.svg" in (out / "report.html").read_text()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("workload, engine", [("inventory", "pysyncobj"), ("set", "native")])
def test_inventory_and_set_runs_with_kills_are_valid(workload: str, engine: str, tmp_path: Path) -> None:
    config = RunConfig(workload=workload, nemeses=["kill"], time_s=8, concurrency=4, rate=30,
                       nodes=3, engine=engine, seed=5, out=tmp_path / workload,
                       quiet_s=(1.0, 2.0), fault_s=(1.5, 2.5))
    result = run(config)
    assert result.exit_code == 0, result.summary
    assert result.results["nemesis"]["faults"] >= 1
    finals = [e for e in read_history(tmp_path / workload / "history.jsonl")
              if e.f == "read" and e.type == "ok"]
    assert finals
