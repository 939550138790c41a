"""The README's commands, word for word, wherever a test can run them.

The curl walk and the CLI block run against `raftkv dev` on free ports (the
README's 7001-7003 become them), so `make test` passes while a `make dev` of
the reader's own is running. The checker example runs as written from the
repository root; the harness run and drill examples run shortened (slow).
`make dev` and `make test` are what the rest of the suite tests; Docker does
not run here (tests/test_docker_compose.py checks the compose file).
"""

from __future__ import annotations

import os
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

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def sh_blocks(heading: str) -> list[str]:
    """The ```sh blocks of the README section under `## heading`."""
    section = README.read_text().split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, re.S)


def commands(block: str) -> list[str]:
    """The command lines of a block (comments and blank lines dropped)."""
    return [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def in_this_python(script: str) -> str:
    """README commands use the venv `make` builds; run them with this interpreter instead."""
    return (script.replace(".venv/bin/raftkv ", f"{sys.executable} -m raftkv ")
            .replace(".venv/bin/python ", f"{sys.executable} "))


def on_ports(text: str, first_http: int) -> str:
    """README text with the dev cluster's ports 7001-7003 replaced by first_http.."""
    for i in range(3):
        text = text.replace(f"127.0.0.1:{7001 + i}", f"127.0.0.1:{first_http + i}")
    return text


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_readme_curl_walk_and_cli_against_raftkv_dev(tmp_path: Path) -> None:
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
        walk = sh_blocks("A walk with curl")[0]
        script = "set -e\n" + walk.replace("curl ", "curl -sS --fail-with-body ")
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

        # the CLI block, against the same cluster through RAFTKV_ENDPOINTS
        cli = sh_blocks("A walk with curl")[1]
        assert len(commands(cli)) == 6
        endpoints = ",".join(f"http://127.0.0.1:{http + i}" for i in range(3))
        run = subprocess.run(["bash", "-c", "set -e\n" + in_this_python(cli)], capture_output=True, text=True,
                             timeout=60, cwd=ROOT, env={**os.environ, "RAFTKV_ENDPOINTS": endpoints})
        assert run.returncode == 0, run.stdout + run.stderr
        lines = run.stdout.splitlines()
        assert lines[0].startswith("OK revision=")
        # `get` into a pipe writes the value's bytes as stored (no newline), then `ls` lists
        assert lines[1] == "hiconfig/app/mode\tv1"
        assert sum(" leader " in line for line in lines) == 1
        leader = call("GET", f"http://127.0.0.1:{http}/v1/status").json()["leader_id"]
        assert leader == "n2"
        # `member list`, after the transfer: n2 leads, three voters
        assert any(line.startswith("n2\tvoter (leader)\t") for line in lines), lines
        assert sum("\tvoter" in line for line in lines) == 3
    finally:
        dev.send_signal(signal.SIGINT)
        try:
            dev.wait(20)
        except subprocess.TimeoutExpired:
            dev.kill()
            dev.wait()
    assert "stopped" in (dev.stdout.read() if dev.stdout else "")


def test_readme_checker_example_runs_in_a_fresh_clone() -> None:
    check = [c for c in commands(sh_blocks("Proving it: jepsen_style")[0]) if " check " in c]
    assert len(check) == 1
    assert "../" not in check[0], "the example must use files the repository ships"
    run = subprocess.run(["bash", "-c", in_this_python(check[0])], capture_output=True, text=True, timeout=120,
                         cwd=ROOT)
    # one valid history and one with a stale read: exit 1, the violation drawn
    assert run.returncode == 1, run.stdout + run.stderr
    assert "examples/histories/register-valid.jsonl: linearizable" in run.stdout
    assert "examples/histories/register-stale-reads.jsonl: not-linearizable" in run.stdout
    assert "cannot be linearized" in run.stdout


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_readme_harness_run_and_drill_examples_shortened(tmp_path: Path) -> None:
    lines = commands(sh_blocks("Proving it: jepsen_style")[0])
    run_line = next(c for c in lines if " run " in c)
    drill_line = next(c for c in lines if " drill " in c)
    shortened = [
        in_this_python(run_line).replace("--time 60", "--time 12").replace("out/run1", str(tmp_path / "run1")),
        in_this_python(drill_line).replace("--rounds 10", "--rounds 2") + f" --out {tmp_path / 'drill'}",
    ]
    for line in shortened:
        result = subprocess.run(["bash", "-c", line], capture_output=True, text=True, timeout=240, cwd=tmp_path)
        assert result.returncode == 0, line + "\n" + result.stdout + result.stderr
    assert (tmp_path / "run1" / "report.html").exists()
    assert (tmp_path / "drill" / "drill.json").exists()
