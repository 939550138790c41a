"""Start a Toxiproxy server as a subprocess: the real ``toxiproxy-server`` if
it is on PATH, else this package's Python server.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO, Literal

Implementation = Literal["auto", "real", "python"]

REAL_SERVER_BINARY = "toxiproxy-server"
STARTUP_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0

# The directory holding the jepsen_style package, so the subprocess can
# import it whatever the caller's working directory is.
_IMPORT_ROOT = Path(__file__).resolve().parents[2]


class ToxiproxyStartError(RuntimeError):
    """The server process exited or did not answer in time."""


class ToxiproxyProcess:
    """A running Toxiproxy server subprocess; use as a context manager or
    call ``stop()``."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        host: str,
        port: int,
        implementation: Literal["real", "python"],
        log_file: IO[bytes],
    ) -> None:
        self.process = process
        self.host = host
        self.port = port
        self.implementation = implementation
        self._log_file = log_file
        self._final_log: str | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_text(self) -> str:
        """What the server wrote to stdout/stderr so far (kept after stop())."""
        if self._final_log is not None:
            return self._final_log
        self._log_file.seek(0)
        return self._log_file.read().decode(errors="replace")

    def stop(self) -> None:
        """Terminate the server and wait for it; idempotent."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._final_log is None:
            self._final_log = self.log_text()
            self._log_file.close()

    def __enter__(self) -> ToxiproxyProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def real_server_path() -> str | None:
    return shutil.which(REAL_SERVER_BINARY)


def start_toxiproxy(
    port: int | None = None,
    *,
    host: str = "127.0.0.1",
    implementation: Implementation = "auto",
) -> ToxiproxyProcess:
    """Start a server with its API on ``host:port`` (a free port if None) and
    return once the API answers.

    ``implementation``: "auto" uses the real binary when on PATH, else the
    Python server; "real" or "python" force one (ToxiproxyStartError if the
    real binary is missing).
    """
    binary = real_server_path()
    if implementation == "real" and binary is None:
        raise ToxiproxyStartError(f"{REAL_SERVER_BINARY} is not on PATH")
    use_real = binary is not None and implementation != "python"
    api_port = port if port is not None else _free_port(host)
    if use_real:
        assert binary is not None
        command = [binary, "-host", host, "-port", str(api_port)]
        env = dict(os.environ)
    else:
        command = [
            sys.executable, "-m", "jepsen_style.toxiproxy",
            "--host", host, "--port", str(api_port),
        ]  # fmt: skip
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(_IMPORT_ROOT), env.get("PYTHONPATH")])
        )
    # An anonymous temp file, not a pipe: nobody reads the output while the
    # server runs, and a full pipe would block it.
    log_file = tempfile.TemporaryFile()
    process = subprocess.Popen(
        command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
    )
    server = ToxiproxyProcess(
        process, host, api_port, "real" if use_real else "python", log_file
    )
    try:
        _wait_until_answering(server)
    except BaseException:
        server_log = server.log_text()
        server.stop()
        raise ToxiproxyStartError(
            f"toxiproxy ({' '.join(command)}) did not start:\n{server_log}"
        ) from None
    return server


def _wait_until_answering(server: ToxiproxyProcess) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        if server.process.poll() is not None:
            raise ToxiproxyStartError(f"exited with status {server.process.returncode}")
        try:
            with urllib.request.urlopen(f"{server.url}/version", timeout=1.0) as reply:
                if reply.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise ToxiproxyStartError(f"no answer within {STARTUP_TIMEOUT_S} s")
        time.sleep(0.05)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])
