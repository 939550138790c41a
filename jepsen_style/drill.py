"""`drill failover`: while clients write, repeatedly kill -9 the leader (or
transfer leadership), restart it, and measure how long writes stalled, how
long until a new leader, and whether every acknowledged write survived.

Two kinds of client measure the stall: the writers (a steady pace, many
writes in flight, moving to the next node after a failure) and one patient
client (one write at a time to a follower, waiting for every answer with the
server's own timeout, retrying at once after an error) -- the client that a
follower holding a forward to a dead leader used to keep waiting."""
from __future__ import annotations

import asyncio
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp
import orjson

from raftkv.local_cluster import LocalCluster

from jepsen_style.harness import EXIT_HARNESS_FAILURE, STARTUP_TIMEOUT_S, HarnessCluster, HarnessError
from jepsen_style.report.drill_summary import RoundResult, drill_json, format_table, round_of, spread
from jepsen_style.workloads.node_api import (
    NodeApi,
    OutcomeUnknown,
    RequestNotSent,
    UnexpectedReply,
)

EXIT_OK = 0
EXIT_FAILED = 1

KEY_PREFIX = "drill/"
POLL_S = 0.02
MAX_IN_FLIGHT_PER_WRITER = 20
STATUS_TIMEOUT_S = 0.5
# The patient client's server-side timeout: the server's default, so the
# client never gives up before the server answers.
PATIENT_TIMEOUT_S = 5.0
# Pause after "connection refused" only, so a client of a node that is down
# does not spin; every other error is retried at once.
PATIENT_NOT_SENT_PAUSE_S = 0.05
# Think time after each acknowledged write: most faults then land between
# two writes, so the next write reaches a follower that still believes in
# the dead leader (without it, the write in flight at the fault is usually
# already in the follower's log and commits under the new leader anyway).
PATIENT_THINK_S = 0.02

Mode = Literal["kill", "transfer"]


@dataclass(frozen=True)
class DrillConfig:
    mode: Mode
    rounds: int
    engine: str
    out: Path
    nodes: int = 3
    writers: int = 3
    # Writes per second, all writers together.
    rate: float = 60.0
    # Healthy seconds with writes flowing before each fault.
    steady_s: float = 1.0
    # Longest wait for a new leader or the first write after a fault.
    round_timeout_s: float = 20.0
    # Extra `raftkv serve` arguments for every node.
    node_args: tuple[str, ...] = ()


@dataclass
class DrillResult:
    exit_code: int
    result: dict[str, Any]
    table: str


@dataclass(frozen=True, slots=True)
class AckedWrite:
    key: str
    value: str
    invoked: float
    acked: float


@dataclass
class Writers:
    """Clients writing unique keys at a steady pace whether or not earlier
    writes have answered (so the first write to succeed after a fault shows
    when the cluster took writes again, not when a client gave up waiting).
    A writer whose write fails moves to the next node, as a client with a
    node list would."""

    apis: list[NodeApi]
    count: int
    interval_s: float
    acked: list[AckedWrite] = field(default_factory=list)
    unknown: int = 0
    failed: int = 0

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(*(self._writer(w, stop) for w in range(self.count)))

    async def _writer(self, writer: int, stop: asyncio.Event) -> None:
        node = [writer % len(self.apis)]
        in_flight: set[asyncio.Task[None]] = set()
        sequence = 0
        while not stop.is_set():
            sequence += 1
            if len(in_flight) < MAX_IN_FLIGHT_PER_WRITER:
                task = asyncio.create_task(self._write(writer, sequence, node))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            try:
                await asyncio.wait_for(stop.wait(), self.interval_s)
            except asyncio.TimeoutError:
                pass
        if in_flight:
            await asyncio.gather(*in_flight)

    async def _write(self, writer: int, sequence: int, node: list[int]) -> None:
        key, value = f"{KEY_PREFIX}w{writer}/{sequence:08d}", f"{writer}-{sequence}"
        api_index = node[0]
        invoked = time.monotonic()
        try:
            reply = await self.apis[api_index].put(key, value.encode())
        except RequestNotSent:
            self.failed += 1
        except OutcomeUnknown:
            self.unknown += 1
        else:
            if reply.status == 200:
                self.acked.append(AckedWrite(key, value, invoked, time.monotonic()))
                return
            self.failed += 1
        if node[0] == api_index:  # not already moved on by another failed write
            node[0] = (api_index + 1) % len(self.apis)

    def first_ack_invoked_after(self, moment: float, start_index: int = 0) -> AckedWrite | None:
        """The earliest-acknowledged write invoked at or after `moment`."""
        for write in self.acked[start_index:]:
            if write.invoked >= moment:
                return write
        return None


@dataclass
class PatientClient:
    """One client writing one key at a time to one node (a follower of the
    current leader, chosen each round), waiting for every answer, thinking
    briefly after a success, and retrying at once (with the next key) after
    any error."""

    apis: dict[str, NodeApi]
    target: str
    acked: list[AckedWrite] = field(default_factory=list)
    error_times: list[float] = field(default_factory=list)

    async def run(self, stop: asyncio.Event) -> None:
        sequence = 0
        while not stop.is_set():
            sequence += 1
            key, value = f"{KEY_PREFIX}patient/{sequence:08d}", f"p-{sequence}"
            invoked = time.monotonic()
            try:
                reply = await self.apis[self.target].put(key, value.encode())
            except RequestNotSent:
                self.error_times.append(time.monotonic())
                await asyncio.sleep(PATIENT_NOT_SENT_PAUSE_S)
                continue
            except OutcomeUnknown:
                self.error_times.append(time.monotonic())
                continue
            if reply.status == 200:
                self.acked.append(AckedWrite(key, value, invoked, time.monotonic()))
                await asyncio.sleep(PATIENT_THINK_S)
            else:
                self.error_times.append(time.monotonic())

    def stall_after(self, moment: float, start_index: int) -> float | None:
        """Seconds from `moment` until a write invoked at or after it was acknowledged."""
        for write in self.acked[start_index:]:
            if write.invoked >= moment:
                return write.acked - moment
        return None


def run_drill(config: DrillConfig) -> DrillResult:
    return asyncio.run(_run_drill(config))


async def _run_drill(config: DrillConfig) -> DrillResult:
    config.out.mkdir(parents=True, exist_ok=True)
    harness = HarnessCluster(nodes=config.nodes, engine=config.engine, node_args=config.node_args,
                             logs_dir=config.out / "logs", prefix="jepsen-drill-")
    cluster = harness.cluster
    rounds: list[RoundResult] = []
    errors: list[str] = []
    fault_times: list[float] = []
    lost: list[AckedWrite] = []
    writers: Writers | None = None
    patient: PatientClient | None = None
    patient_rounds: list[dict[str, Any]] = []
    try:
        await harness.start(STARTUP_TIMEOUT_S)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
            apis = {n.node_id: NodeApi(session, n.url) for n in cluster.nodes}
            pollers = {n.node_id: NodeApi(session, n.url, STATUS_TIMEOUT_S) for n in cluster.nodes}
            writers = Writers(list(apis.values()), config.writers, config.writers / config.rate)
            patient = PatientClient({n.node_id: NodeApi(session, n.url, PATIENT_TIMEOUT_S) for n in cluster.nodes},
                                    target=cluster.nodes[0].node_id)
            stop = asyncio.Event()
            writing = asyncio.gather(writers.run(stop), patient.run(stop))
            try:
                for number in range(1, config.rounds + 1):
                    rounds.append(await _round(number, config, cluster, apis, pollers, writers, fault_times,
                                               patient, patient_rounds))
            finally:
                stop.set()
                await writing
            await asyncio.to_thread(cluster.wait_ready, STARTUP_TIMEOUT_S)
            lost = await _lost_writes(list(apis.values()), writers.acked + patient.acked)
    except HarnessError as error:
        errors.append(str(error))
    except (TimeoutError, RuntimeError, UnexpectedReply, OutcomeUnknown, RequestNotSent) as error:
        errors.append(f"the drill could not finish: {str(error).splitlines()[0]}")
    except Exception as error:  # a bug in the harness must not pass for a result
        traceback.print_exc()
        errors.append(f"the harness itself failed: {type(error).__name__}: {error}")
    finally:
        await harness.stop()
    acked = (writers.acked if writers else []) + (patient.acked if patient else [])
    rounds = _with_write_counts(rounds, acked, lost, fault_times)
    result = drill_json(rounds, _config_dict(config), len(acked), [w.key for w in lost],
                        sum(1 for w in lost if round_of(w.acked, fault_times) == 0), errors)
    result["failed_writes"] = writers.failed if writers else 0
    result["unknown_outcome_writes"] = writers.unknown if writers else 0
    result["patient_client"] = {
        "rounds": patient_rounds,
        "stall_s": spread([r["stall_s"] for r in patient_rounds]),
        "acknowledged_writes": len(patient.acked) if patient else 0,
        "errors": len(patient.error_times) if patient else 0,
    }
    (config.out / "drill.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    if errors:
        code = EXIT_HARNESS_FAILURE if not lost else EXIT_FAILED
    else:
        code = EXIT_FAILED if lost or result["rounds_failed"] else EXIT_OK
    return DrillResult(code, result, format_table(result) + "\n" + _patient_table(result["patient_client"]))


async def _round(number: int, config: DrillConfig, cluster: LocalCluster, apis: dict[str, NodeApi],
                 pollers: dict[str, NodeApi], writers: Writers, fault_times: list[float],
                 patient: PatientClient, patient_rounds: list[dict[str, Any]]) -> RoundResult:
    old = await _wait_for_leader(pollers, exclude=None, timeout=config.round_timeout_s)
    if old is None:
        raise HarnessError(f"round {number}: no leader before the fault")
    patient.target = next(n for n in sorted(apis) if n != old)  # a follower, which survives the fault
    await asyncio.sleep(config.steady_s)
    ack_index = len(writers.acked)
    patient_index, patient_errors = len(patient.acked), len(patient.error_times)
    fault_at = time.monotonic()
    fault_times.append(fault_at)
    transfer: asyncio.Task[str | None] | None = None
    if config.mode == "kill":
        await asyncio.to_thread(cluster.kill, old)
    else:
        transfer = asyncio.create_task(_transfer(apis[old]))
    survivors = {n: p for n, p in pollers.items() if n != old or config.mode == "transfer"}
    new = await _wait_for_leader(survivors, exclude=old, timeout=config.round_timeout_s)
    leader_s = time.monotonic() - fault_at if new is not None else None
    stall_s = await _wait_for_write(writers, fault_at, ack_index, config.round_timeout_s)
    patient_stall_s = await _wait_for_patient(patient, fault_at, patient_index, config.round_timeout_s)
    patient_rounds.append({"round": number, "node": patient.target, "stall_s": _round4(patient_stall_s),
                           "errors": len(patient.error_times) - patient_errors})
    notes = []
    if new is None:
        notes.append(f"no new leader within {config.round_timeout_s:g} s")
    if stall_s is None:
        notes.append(f"no write acknowledged within {config.round_timeout_s:g} s")
    if patient_stall_s is None:
        notes.append(f"the patient client got no write through within {config.round_timeout_s:g} s")
    if transfer is not None:
        problem = await transfer
        if problem:
            notes.append(problem)
    if config.mode == "kill":
        await asyncio.to_thread(cluster.start_node, old)
    await asyncio.to_thread(cluster.wait_ready, STARTUP_TIMEOUT_S)
    return RoundResult(number, config.mode, old, new, _round4(leader_s), _round4(stall_s),
                       error="; ".join(notes) or None)


def _round4(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


async def _wait_for_leader(pollers: dict[str, NodeApi], exclude: str | None, timeout: float) -> str | None:
    """The first node that says it leads (other than `exclude`), or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        statuses = await asyncio.gather(*(_status(p) for p in pollers.values()))
        for status in statuses:
            if status and status.get("role") == "leader" and status.get("node_id") != exclude:
                return str(status["node_id"])
        await asyncio.sleep(POLL_S)
    return None


async def _status(api: NodeApi) -> dict[str, Any] | None:
    try:
        return await api.status()
    except (RequestNotSent, OutcomeUnknown, UnexpectedReply):
        return None


async def _wait_for_write(writers: Writers, fault_at: float, start_index: int, timeout: float) -> float | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        write = writers.first_ack_invoked_after(fault_at, start_index)
        if write is not None:
            return write.acked - fault_at
        await asyncio.sleep(POLL_S)
    return None


async def _wait_for_patient(patient: PatientClient, fault_at: float, start_index: int,
                            timeout: float) -> float | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stall = patient.stall_after(fault_at, start_index)
        if stall is not None:
            return stall
        await asyncio.sleep(POLL_S)
    return None


def _patient_table(patient: dict[str, Any]) -> str:
    per_round = " ".join("-" if r["stall_s"] is None else f"{r['stall_s'] * 1000:.0f}" for r in patient["rounds"])
    spread_s = patient["stall_s"]
    median, worst = (("-" if spread_s[k] is None else f"{spread_s[k] * 1000:.0f}") for k in ("median", "worst"))
    return (f"patient client (one write at a time to a follower, {PATIENT_TIMEOUT_S:g} s timeout, "
            f"{PATIENT_THINK_S * 1000:g} ms between writes, retries at once): "
            f"write stall ms per round: {per_round or '-'}; median {median}, worst {worst}; "
            f"errors answered: {patient['errors']}")


async def _transfer(leader: NodeApi) -> str | None:
    """Ask the leader to hand over; None on success, else what went wrong."""
    try:
        reply = await leader.request("POST", "/v1/leadership/transfer", body=b"{}",
                                     headers={"Content-Type": "application/json"})
    except (RequestNotSent, OutcomeUnknown) as error:
        return f"transfer request failed: {error}"
    return None if reply.status == 200 else f"transfer refused: {reply.describe()}"


async def _lost_writes(apis: list[NodeApi], acked: list[AckedWrite]) -> list[AckedWrite]:
    """Acknowledged writes missing from (or different in) a linearizable read-back."""
    last_error: Exception | None = None
    for api in apis:
        try:
            stored = {kv["key"]: kv.get("value") for kv in await api.list_kvs(KEY_PREFIX)}
        except (RequestNotSent, OutcomeUnknown, UnexpectedReply) as error:
            last_error = error
            continue
        return [w for w in acked if stored.get(w.key) != w.value]
    raise HarnessError(f"could not read the writes back from any node: {last_error}")


def _with_write_counts(rounds: list[RoundResult], acked: list[AckedWrite], lost: list[AckedWrite],
                       fault_times: list[float]) -> list[RoundResult]:
    """Attribute each acknowledged (and each lost) write to the round it was
    acknowledged in."""
    acked_in = [0] * (len(fault_times) + 1)
    lost_in = [0] * (len(fault_times) + 1)
    for write in acked:
        acked_in[round_of(write.acked, fault_times)] += 1
    for write in lost:
        lost_in[round_of(write.acked, fault_times)] += 1
    return [RoundResult(**{**asdict(r), "acknowledged": acked_in[r.round], "lost": lost_in[r.round]})
            for r in rounds]


def _config_dict(config: DrillConfig) -> dict[str, Any]:
    data = asdict(config)
    data["out"] = str(config.out)
    return data
