"""README's curl walkthrough, word for word, against `raftkv dev`.

The dev cluster here runs on free ports (the README's 7001-7003 become them),
so `make test` passes while a `make dev` of the reader's own is running.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from raftkv.local_cluster import free_port_run
from tests.http import call

README = Path(__file__).resolve().parent.parent / "README.md"


def walkthrough() -> str:
    text = README.read_text()
    section = text.split("## A walk with curl", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```sh\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def on_ports(text: str, first_http: int) -> str:
    """README text with the dev cluster's ports 7001-7003 replaced by first_http.."""
    for i in range(3):
        text = text.replace(f"127.0.0.1:{7001 + i}", f"127.0.0.1:{first_http + i}")
    return text


def test_readme_curl_walkthrough_against_raftkv_dev(tmp_path: Path) -> None:
    http = free_port_run(3)
    peer = free_port_run(3)
    while abs(http - peer) < 3:
        peer = free_port_run(3)
    dev = subprocess.Popen(
        [sys.executable, "-m", "raftkv", "dev", "--clean", "--data-dir", str(tmp_path / "dev"),
         "--http-port", str(http), "--peer-port", str(peer)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        assert dev.stdout is not None
        for line in dev.stdout:
            if "cluster ready" in line:
                break
            assert time.monotonic() < deadline, "raftkv dev did not become ready"
        script = "set -e\n" + walkthrough().replace("curl ", "curl -sS --fail-with-body ")
        assert "127.0.0.1:7001" in script
        # two lines are meant to fail: the stale If-Match (412) and the delete of a missing key (404)
        script = script.replace("curl -sS --fail-with-body -X PUT -H 'If-Match: \"1\"' --data-binary 'too late'", "! curl -sS --fail-with-body -X PUT -H 'If-Match: \"1\"' --data-binary 'too late'")
        script = script.replace("curl -sS --fail-with-body -X DELETE http://127.0.0.1:7001/v1/kv/no-such-key", "! curl -sS --fail-with-body -X DELETE http://127.0.0.1:7001/v1/kv/no-such-key")
        run = subprocess.run(["bash", "-c", on_ports(script, http)], capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stdout + run.stderr
        assert '"precondition_failed"' in run.stdout
        assert '"key_not_found"' in run.stdout
        assert "Idempotency-Replayed: true" in run.stdout
        assert call("GET", f"http://127.0.0.1:{http}/v1/kv/stock/widget").body == b"8"
        assert call("GET", f"http://127.0.0.1:{http + 1}/v1/kv/greeting").body == b"hello again"
        listing = call("GET", f"http://127.0.0.1:{http + 2}/v1/kv?prefix=config/").json()
        assert [kv["key"] for kv in listing["kvs"]] == ["config/app/mode"]
    finally:
        dev.send_signal(signal.SIGINT)
        try:
            dev.wait(20)
        except subprocess.TimeoutExpired:
            dev.kill()
            dev.wait()
    assert "stopped" in (dev.stdout.read() if dev.stdout else "")
