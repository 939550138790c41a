"""Command line entry point: `python -m jepsen_style COMMAND ...`.

Each command lives in its own module named `jepsen_style/<name>_command.py`
exposing `register(subparsers)`, which adds a subparser and sets
`handler=<function taking the parsed args and returning an exit code>`.
Modules are discovered by that name, so adding a command needs no edit here.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
from pathlib import Path
from typing import Sequence

import jepsen_style

COMMAND_MODULE_SUFFIX = "_command"


def command_modules() -> list[str]:
    """Names of the modules that provide subcommands, in a stable order."""
    package_dir = [str(Path(jepsen_style.__file__).parent)]
    return sorted(
        f"jepsen_style.{info.name}"
        for info in pkgutil.iter_modules(package_dir)
        if info.name.endswith(COMMAND_MODULE_SUFFIX) and not info.ispkg
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m jepsen_style",
        description="Fault injection and history checking for raftkv.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in command_modules():
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.handler(args))
