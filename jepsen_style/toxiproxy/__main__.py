"""``python -m jepsen_style.toxiproxy --host 127.0.0.1 --port 8474``"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

import orjson

from .errors import ApiError

try:  # a faster loop roughly doubles proxy throughput; optional
    import uvloop
except ImportError:  # pragma: no cover - uvloop is absent on Windows
    uvloop = None  # type: ignore[assignment]
from .server import serve


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m jepsen_style.toxiproxy",
        description="A Toxiproxy-compatible TCP fault-injection proxy server.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="API listen host")
    parser.add_argument("--port", type=int, default=8474, help="API listen port")
    parser.add_argument("--seed", type=int, default=None, help="seed for toxicity/jitter")
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="JSON file with an array of proxies to create at startup",
    )
    parser.add_argument(
        "--no-uvloop",
        action="store_true",
        help="use the standard asyncio event loop even when uvloop is installed",
    )
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    initial = orjson.loads(args.config.read_bytes()) if args.config else None
    await serve(args.host, args.port, seed=args.seed, initial_proxies=initial, stop=stop)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        if args.no_uvloop or uvloop is None:
            asyncio.run(run(args))
        else:
            uvloop.run(run(args))
    except (OSError, ApiError, orjson.JSONDecodeError) as error:
        print(f"toxiproxy: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
