"""`run`: start a cluster, run a workload under a nemesis, check the history,
write a report. Exit 0: valid; 1: anomalies found; 2: the harness failed or
the checker could not decide (nothing proven)."""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from typing import TextIO

from raftkv.config import DEFAULT_ENGINE, ENGINES

from jepsen_style.harness import EXIT_HARNESS_FAILURE, HarnessError, require_harness_extra
from jepsen_style.nemesis.kinds import GROUPS, KINDS, NemesisChoiceError, parse_nemeses
from jepsen_style.workloads import WORKLOAD_NAMES

# jepsen_style.runner (matplotlib, aiohttp) is imported only when a run starts,
# so `--help` and input errors stay fast.


def _positive(kind: type, text: str) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a {kind.__name__}: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def positive_float(text: str) -> float:
    return _positive(float, text)


def positive_int(text: str) -> int:
    return int(_positive(int, text))


def seconds_range(text: str) -> tuple[float, float]:
    """"A:B" (seconds, 0 < A <= B) or a single number meaning exactly that."""
    parts = text.split(":")
    try:
        low, high = (float(parts[0]), float(parts[-1])) if len(parts) in (1, 2) else (0.0, -1.0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds as A:B, got {text!r}") from None
    if not 0 < low <= high:
        raise argparse.ArgumentTypeError(f"expected 0 < A <= B seconds as A:B, got {text!r}")
    return low, high


def register(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    kinds = "; ".join(f"{k.name}: {k.description}" for k in KINDS.values())
    groups = "; ".join(f"{name} = {','.join(members)}" for name, members in GROUPS.items() if name != "all")
    parser = subparsers.add_parser(
        "run",
        help="run a workload against a local cluster under faults and check it",
        description="Start a local raftkv cluster, run a workload from concurrent clients while a "
        "nemesis injects faults, heal, let the cluster settle, do final reads, check the history and "
        "write a report. Exit 0: valid; 1: anomalies found; 2: the harness failed or the checker "
        "could not decide. Needs the harness extra: pip install 'raftkv[harness]'.",
        epilog=f"nemeses: {kinds}. Groups: {groups}; all = every nemesis the engine supports; "
        "none = no faults. Partition and latency nemeses need --engine native.",
    )
    parser.add_argument("--workload", choices=WORKLOAD_NAMES, default="register")
    parser.add_argument("--nemesis", default="kill", metavar="LIST",
                        help="comma-separated nemeses (default: kill)")
    parser.add_argument("--time", type=positive_float, default=30.0, metavar="S",
                        help="seconds of workload (default 30)")
    parser.add_argument("--concurrency", type=positive_int, default=6, metavar="N",
                        help="client workers (default 6)")
    parser.add_argument("--rate", type=positive_float, default=30.0, metavar="R",
                        help="operations per second, all clients together (default 30)")
    parser.add_argument("--nodes", type=int, choices=(3, 5), default=3)
    parser.add_argument("--engine", choices=ENGINES, default=DEFAULT_ENGINE)
    parser.add_argument("--seed", type=int, default=None,
                        help="seed for operations and the fault schedule (default: random, printed)")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="where to write the history and report (default jepsen-runs/<time>)")
    parser.add_argument("--fault-seconds", type=seconds_range, default=(2.0, 4.0), metavar="A:B",
                        help="each fault lasts between A and B seconds (default 2:4)")
    parser.add_argument("--quiet-seconds", type=seconds_range, default=(2.0, 4.0), metavar="A:B",
                        help="healthy time between faults (default 2:4)")
    parser.add_argument("--node-arg", action="append", default=[], metavar="ARG",
                        help="extra argument for every `raftkv serve` (repeatable), "
                        "e.g. --node-arg=--log-level --node-arg=DEBUG")
    parser.add_argument("--unsafe-serializable-reads", action="store_true",
                        help="DELIBERATELY BROKEN: register reads use ?consistency=serializable, "
                        "which may return stale values; a correct checker reports anomalies")
    parser.set_defaults(handler=run_from_args)


def run_from_args(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    try:
        nemeses = parse_nemeses(args.nemesis, args.engine)
    except NemesisChoiceError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_HARNESS_FAILURE
    if args.unsafe_serializable_reads and args.workload != "register":
        print("error: --unsafe-serializable-reads applies to --workload register only", file=sys.stderr)
        return EXIT_HARNESS_FAILURE
    try:
        require_harness_extra()  # before anything starts, not when the report is drawn
    except HarnessError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_HARNESS_FAILURE
    from jepsen_style.runner import RunConfig, run

    seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    directory = args.out or Path("jepsen-runs") / time.strftime("%Y%m%d-%H%M%S")
    config = RunConfig(
        workload=args.workload, nemeses=nemeses, time_s=args.time, concurrency=args.concurrency,
        rate=args.rate, nodes=args.nodes, engine=args.engine, seed=seed, out=directory,
        unsafe_serializable_reads=args.unsafe_serializable_reads,
        quiet_s=args.quiet_seconds, fault_s=args.fault_seconds, node_args=tuple(args.node_arg),
    )
    print(f"running {config.workload} for {config.time_s:g} s (seed {seed}), output in {directory}",
          file=out, flush=True)
    result = run(config)
    print(result.summary, file=out)
    return result.exit_code
