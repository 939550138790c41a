"""`drill failover`: leader failover drill with a table and JSON of figures.
Exit 0: every round recovered and every acknowledged write survived; 1: a
write was lost or a round did not recover in time; 2: the harness failed."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TextIO

from raftkv.config import DEFAULT_ENGINE, ENGINES

from jepsen_style.run_command import positive_float, positive_int


def register(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = subparsers.add_parser("drill", help="operational drills against a local cluster",
                                   description="Operational drills against a local raftkv cluster.")
    drills = parser.add_subparsers(dest="drill", metavar="DRILL", required=True)
    failover = drills.add_parser(
        "failover",
        help="kill -9 (or transfer away from) the leader while clients write, repeatedly",
        description="While clients write continuously, kill -9 the leader (--mode kill) or ask it "
        "to hand over leadership (--mode transfer), restart it, and repeat. Per round: time until "
        "a new leader, how long writes stalled, and whether every acknowledged write survived. "
        "Exit 0: all good; 1: a write was lost or a round did not recover; 2: harness failure.",
    )
    failover.add_argument("--mode", choices=("kill", "transfer"), default="kill")
    failover.add_argument("--rounds", type=positive_int, default=5, metavar="N")
    failover.add_argument("--engine", choices=ENGINES, default=DEFAULT_ENGINE)
    failover.add_argument("--nodes", type=int, choices=(3, 5), default=3)
    failover.add_argument("--writers", type=positive_int, default=3, metavar="N",
                          help="concurrent writing clients (default 3)")
    failover.add_argument("--rate", type=positive_float, default=60.0, metavar="R",
                          help="writes per second, all writers together (default 60)")
    failover.add_argument("--round-timeout", type=positive_float, default=20.0, metavar="S",
                          help="longest wait for a new leader or a write after a fault (default 20)")
    failover.add_argument("--out", type=Path, default=None, metavar="DIR",
                          help="where to write drill.json and node logs (default jepsen-runs/drill-<time>)")
    failover.set_defaults(handler=run_failover)


def run_failover(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from jepsen_style.drill import DrillConfig, run_drill  # aiohttp etc. only when needed

    out = out or sys.stdout
    directory = args.out or Path("jepsen-runs") / time.strftime("drill-%Y%m%d-%H%M%S")
    config = DrillConfig(mode=args.mode, rounds=args.rounds, engine=args.engine, out=directory,
                         nodes=args.nodes, writers=args.writers, rate=args.rate,
                         round_timeout_s=args.round_timeout)
    print(f"failover drill: {config.rounds} rounds, mode {config.mode}, {config.engine} engine, "
          f"{config.nodes} nodes", file=out, flush=True)
    result = run_drill(config)
    print(result.table, file=out)
    for error in result.result["harness_errors"]:
        print(f"harness error: {error}", file=out)
    print(f"details: {directory / 'drill.json'}", file=out)
    return result.exit_code
