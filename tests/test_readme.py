"""README's curl walkthrough, word for word, against `raftkv dev`."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.http import call

README = Path(__file__).resolve().parent.parent / "README.md"


def walkthrough() -> str:
    text = README.read_text()
    section = text.split("## A walk with curl", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```sh\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_readme_curl_walkthrough_against_raftkv_dev(tmp_path: Path) -> None:
    dev = subprocess.Popen(
        [sys.executable, "-m", "raftkv", "dev", "--clean", "--data-dir", str(tmp_path / "dev")],
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
        # two lines are meant to fail: the stale If-Match (412) and the delete of a missing key (404)
        script = script.replace("curl -sS --fail-with-body -X PUT -H 'If-Match: \"1\"' --data-binary 'too late'", "! curl -sS --fail-with-body -X PUT -H 'If-Match: \"1\"' --data-binary 'too late'")
        script = script.replace("curl -sS --fail-with-body -X DELETE http://127.0.0.1:7001/v1/kv/no-such-key", "! curl -sS --fail-with-body -X DELETE http://127.0.0.1:7001/v1/kv/no-such-key")
        run = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stdout + run.stderr
        assert '"precondition_failed"' in run.stdout
        assert '"key_not_found"' in run.stdout
        assert "Idempotency-Replayed: true" in run.stdout
        assert call("GET", "http://127.0.0.1:7001/v1/kv/stock/widget").body == b"8"
        assert call("GET", "http://127.0.0.1:7002/v1/kv/greeting").body == b"hello again"
        listing = call("GET", "http://127.0.0.1:7003/v1/kv?prefix=config/").json()
        assert [kv["key"] for kv in listing["kvs"]] == ["config/app/mode"]
    finally:
        dev.send_signal(signal.SIGINT)
        try:
            dev.wait(20)
        except subprocess.TimeoutExpired:
            dev.kill()
            dev.wait()
    assert "stopped" in (dev.stdout.read() if dev.stdout else "")
