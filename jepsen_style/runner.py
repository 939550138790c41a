"""`run` orchestration: cluster up, workload and nemesis, heal, settle, final
reads, check, results and report, cluster down."""
from __future__ import annotations

import asyncio
import random
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from jepsen_style.harness import EXIT_HARNESS_FAILURE, STARTUP_TIMEOUT_S, HarnessCluster, HarnessError
from jepsen_style.history import HistoryFormatError
from jepsen_style.nemesis.executor import Nemesis
from jepsen_style.nemesis.kinds import KINDS
from jepsen_style.nemesis.schedule import PlannedFault, plan_faults
from jepsen_style.report.results import build_results, write_results
from jepsen_style.report.html import write_report
from jepsen_style.workloads import CheckOutcome, Workload, make_workload
from jepsen_style.workloads.clients import ProcessNumbers, perform, run_client
from jepsen_style.workloads.node_api import NodeApi
from jepsen_style.workloads.recorder import HistoryRecorder

EXIT_VALID = 0
EXIT_ANOMALIES = 1

SETTLE_TIMEOUT_S = 30.0
FINAL_READ_ATTEMPTS = 10
# How long clients' in-flight requests may take after the workload's time is up.
DRAIN_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class RunConfig:
    workload: str
    nemeses: list[str]
    time_s: float
    concurrency: int
    rate: float
    nodes: int
    engine: str
    seed: int
    out: Path
    unsafe_serializable_reads: bool = False
    # Quiet and fault period bounds for the nemesis schedule (seconds).
    quiet_s: tuple[float, float] = (2.0, 4.0)
    fault_s: tuple[float, float] = (2.0, 4.0)
    # Extra `raftkv serve` arguments for every node (e.g. ["--log-level", "DEBUG"]).
    node_args: tuple[str, ...] = ()


@dataclass
class RunResult:
    exit_code: int
    results: dict[str, Any]
    summary: str
    harness_errors: list[str] = field(default_factory=list)


def run(config: RunConfig) -> RunResult:
    return asyncio.run(_run(config))


async def _run(config: RunConfig) -> RunResult:
    config.out.mkdir(parents=True, exist_ok=True)
    workload = make_workload(config.workload, config.unsafe_serializable_reads)
    harness = HarnessCluster(nodes=config.nodes, engine=config.engine, node_args=config.node_args,
                             logs_dir=config.out / "logs",
                             link_proxies=any(KINDS[k].needs_link_proxies for k in config.nemeses))
    cluster, proxies = harness.cluster, harness.proxies
    recorder = HistoryRecorder(config.out / "history.jsonl")
    errors: list[str] = []
    run_started = time.monotonic()
    # Seconds since the run started (history times count from the workload's start).
    phases: dict[str, float] = {}
    check: CheckOutcome | None = None
    checkable = False
    faults = 0
    plan = plan_faults(config.nemeses, config.time_s, random.Random(f"{config.seed}/schedule"),
                       config.quiet_s, config.fault_s)
    try:
        await harness.start(STARTUP_TIMEOUT_S)
        phases["cluster_ready"] = time.monotonic() - run_started
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
            apis = [NodeApi(session, url) for url in cluster.endpoints]
            await _setup_workload(workload, apis)
            nemesis = Nemesis(cluster, proxies, random.Random(f"{config.seed}/nemesis"),
                              recorder.record_nemesis)
            recorder.start_clock()
            await workload.start(apis)
            phases["workload_start"] = time.monotonic() - run_started
            await _run_workload(config, workload, apis, recorder, nemesis, plan)
            faults = nemesis.faults_injected
            phases["workload_end"] = time.monotonic() - run_started
            await nemesis.heal_everything()
            recorder.record_nemesis("heal", {"nodes": [n.node_id for n in cluster.nodes]}, "end")
            try:
                await asyncio.to_thread(cluster.wait_ready, SETTLE_TIMEOUT_S)
            except (TimeoutError, RuntimeError) as error:
                errors.append(f"the cluster did not settle within {SETTLE_TIMEOUT_S:g} s "
                              f"after healing: {str(error).splitlines()[0]}")
            phases["settled"] = time.monotonic() - run_started
            missing = await _final_reads(workload, apis, recorder, config.concurrency)
            checkable = not (missing and workload.needs_final_reads)
            if not checkable:
                errors.append(f"final reads failed for {', '.join(missing)}: the history cannot be checked")
            phases["final_reads_done"] = time.monotonic() - run_started
    except HarnessError as error:
        errors.append(str(error))
    except Exception as error:  # a bug in the harness must not pass for a verdict
        traceback.print_exc()
        errors.append(f"the harness itself failed: {type(error).__name__}: {error}")
    finally:
        recorder.close()
        await harness.stop()
    if checkable:
        try:
            check = workload.check(recorder.events)
            phases["checked"] = time.monotonic() - run_started
        except HistoryFormatError as error:
            errors.append(f"the recorded history is malformed (a harness bug): {error}")
    exit_code = _exit_code(check, errors)
    results = build_results(config=_config_dict(config), events=recorder.events, check=check,
                            harness_errors=errors, exit_code=exit_code, faults=faults, phases=phases,
                            planned=[fault.kind for fault in plan])
    write_results(config.out / "results.json", results)
    if check is not None and check.failure_svg:
        (config.out / "failure.svg").write_text(check.failure_svg, encoding="utf-8")
    write_report(config.out, results, recorder.events, check)
    return RunResult(exit_code, results, _summary(config, results), errors)


async def _setup_workload(workload: Workload, apis: list[NodeApi]) -> None:
    try:
        await workload.setup(apis[0])
    except RuntimeError as error:
        raise HarnessError(f"workload setup failed: {error}") from None


async def _run_workload(config: RunConfig, workload: Workload, apis: list[NodeApi],
                        recorder: HistoryRecorder, nemesis: Nemesis, plan: list[PlannedFault]) -> None:
    started = time.monotonic()
    stop_at = started + config.time_s
    interval = config.concurrency / config.rate
    numbers = ProcessNumbers(config.concurrency)
    clients = [
        asyncio.create_task(run_client(worker, workload, apis[worker % len(apis)], recorder,
                                       random.Random(f"{config.seed}/client/{worker}"),
                                       interval, stop_at, numbers))
        for worker in range(config.concurrency)
    ]
    stop_nemesis = asyncio.Event()
    nemesis_task = asyncio.create_task(nemesis.run(plan, started, stop_nemesis))
    done, pending = await asyncio.wait(clients, timeout=config.time_s + DRAIN_TIMEOUT_S)
    for task in pending:
        task.cancel()
    stop_nemesis.set()
    await nemesis_task
    for task in done:
        task.result()  # a client that crashed is a harness bug: let it surface
    if pending:
        raise HarnessError(f"{len(pending)} clients did not finish within "
                           f"{DRAIN_TIMEOUT_S:g} s after the workload ended")


async def _final_reads(workload: Workload, apis: list[NodeApi], recorder: HistoryRecorder,
                       concurrency: int) -> list[str]:
    """Read each final op until one attempt succeeds, cycling through nodes;
    returns the keys that never read successfully."""
    used = [e.process for e in recorder.events if isinstance(e.process, int)]
    process = max(used, default=-1) + 1
    missing: list[str] = []
    for op in workload.final_ops(recorder.events):
        for attempt in range(FINAL_READ_ATTEMPTS):
            completion = await perform(workload, apis[attempt % len(apis)], op, process, recorder,
                                       final=True)
            if completion.type == "info":
                process += concurrency
            if completion.type == "ok":
                break
            await asyncio.sleep(0.3)
        else:
            missing.append(str(op.key))
    return missing


def _exit_code(check: CheckOutcome | None, errors: list[str]) -> int:
    if check is not None and check.verdict == "invalid":
        return EXIT_ANOMALIES
    if errors or check is None or check.verdict != "valid":
        return EXIT_HARNESS_FAILURE
    return EXIT_VALID


def _config_dict(config: RunConfig) -> dict[str, Any]:
    data = asdict(config)
    data["out"] = str(config.out)
    return data


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _summary(config: RunConfig, results: dict[str, Any]) -> str:
    counts = results["counts"]
    nemesis = ", ".join(config.nemeses) or "none"
    lines = [
        f"{config.workload} workload, nemesis {nemesis} ({_plural(results['nemesis']['faults'], 'fault')}), "
        f"{config.nodes} nodes, {config.engine} engine, {config.time_s:g} s, seed {config.seed}",
        f"operations: {counts['operations']} (ok {counts['ok']}, cas compare false {counts['cas_false']}, "
        f"fail {counts['fail']}, info {counts['info']}); latency p50 {results['latency_ms']['p50']} ms, "
        f"p99 {results['latency_ms']['p99']} ms",
    ]
    by_reason: dict[str, list[str]] = {}
    for skipped in results["nemesis"]["not_run"]:
        by_reason.setdefault(skipped["reason"], []).append(skipped["kind"])
    lines += [f"  did not run: {', '.join(kinds)} ({reason})" for reason, kinds in by_reason.items()]
    verdict = results["verdict"]
    checked = f" ({results['checked']})" if results.get("checked") else ""
    label = {"valid": "VALID", "invalid": "INVALID: anomalies found",
             "unknown": "UNKNOWN: the checker could not decide",
             "harness-error": "HARNESS FAILURE: nothing was proven"}[verdict]
    lines.append(f"verdict: {label}{checked}")
    lines += [f"  anomaly: {a}" for a in results["anomalies"][:10]]
    if len(results["anomalies"]) > 10:
        lines.append(f"  ... and {len(results['anomalies']) - 10} more in results.json")
    lines += [f"  harness error: {e}" for e in results["harness_errors"]]
    lines.append(f"report: {config.out / 'report.html'}")
    return "\n".join(lines)
