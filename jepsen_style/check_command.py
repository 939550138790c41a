"""`check`: decide whether recorded histories are linearizable.

Prints `FILE: linearizable|not-linearizable|unknown` per file (or
`FILE: error: ...` when a file cannot be read or parsed). Exit status: 0 when
every file is linearizable, 1 when any is not (a definite violation wins),
otherwise 2 when any is unknown (time limit) or unreadable.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

from jepsen_style.checker.formats import FORMATS, HistoryFormatError, load_history
from jepsen_style.checker.linearizability import CheckResult, check
from jepsen_style.checker.models import ModelInputError
from jepsen_style.checker.render import render_svg, render_text

EXIT_LINEARIZABLE = 0
EXIT_VIOLATION = 1
EXIT_UNDECIDED = 2


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text}")
    return value


def register(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = subparsers.add_parser(
        "check",
        help="check histories for linearizability",
        description="Check recorded histories for linearizability. Exit 0: all linearizable; "
        "1: some history is not; 2: some history could not be decided or read.",
    )
    parser.add_argument("--format", required=True, choices=sorted(FORMATS), dest="format_name",
                        help="history file format")
    parser.add_argument("--timeout", type=_seconds, default=None, metavar="S",
                        help="give up on a file after S seconds (verdict: unknown)")
    parser.add_argument("--explain", action="store_true",
                        help="draw a timeline of each violation")
    parser.add_argument("--svg-dir", type=Path, default=None, metavar="DIR",
                        help="also write DIR/<file name>.svg for each violation")
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    if args.svg_dir is not None:
        args.svg_dir.mkdir(parents=True, exist_ok=True)
    codes = [_check_file(path, args, out) for path in args.files]
    if EXIT_VIOLATION in codes:
        return EXIT_VIOLATION
    return max(codes, default=EXIT_LINEARIZABLE)


def _check_file(path: Path, args: argparse.Namespace, out: TextIO) -> int:
    try:
        ops, model = load_history(path, args.format_name)
        result = check(ops, model, timeout=args.timeout)
    except (OSError, HistoryFormatError, ModelInputError) as error:
        message = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        print(f"{path}: error: {message}", file=out)
        return EXIT_UNDECIDED
    print(f"{path}: {result.verdict}", file=out)
    if result.verdict == "not-linearizable":
        if args.explain:
            print(_explanation(result, model.describe_operation), file=out)
        if args.svg_dir is not None and result.failure is not None:
            svg_path = args.svg_dir / f"{path.name}.svg"
            svg_path.write_text(render_svg(result.failure, model.describe_operation), encoding="utf-8")
        return EXIT_VIOLATION
    if result.verdict == "unknown":
        if args.explain:
            print(f"  {result.detail}", file=out)
        return EXIT_UNDECIDED
    return EXIT_LINEARIZABLE


def _explanation(result: CheckResult, describe: object) -> str:
    failure = result.failure
    assert failure is not None
    header = (
        f"  part {failure.partition_index + 1} of {result.partitions} ({len(failure.partition)} operations) "
        "is not linearizable"
    )
    if failure.linearized:
        header += f"; longest linearizable order found: {len(failure.linearized)} operations"
    picture = render_text(failure, describe)  # type: ignore[arg-type]
    return header + "\n" + "\n".join("  " + line for line in picture.splitlines())
