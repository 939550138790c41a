"""The lifecycle `run` and `drill` share (jepsen_style.harness), on real node processes,
and the harness extra: `run` needs it and says so before starting anything; `drill` does not."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from jepsen_style.harness import HarnessCluster, HarnessError, require_harness_extra

REPO = Path(__file__).resolve().parents[1]
# sys.modules[name] = None makes every import of that package fail, as if not installed.
WITHOUT_EXTRA = "import sys; sys.modules['matplotlib'] = None; sys.modules['toxiproxy'] = None; "


def jepsen_style_without_extra(*args: str) -> subprocess.CompletedProcess[str]:
    code = WITHOUT_EXTRA + f"from jepsen_style.cli import main; sys.exit(main({list(args)!r}))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)


def test_a_cluster_starts_and_stops_with_logs_kept_and_data_removed(tmp_path: Path) -> None:
    harness = HarnessCluster(nodes=3, engine="native", node_args=(), logs_dir=tmp_path / "logs")

    async def lifecycle() -> None:
        await harness.start()
        assert harness.cluster.leader() is not None
        await harness.stop()

    asyncio.run(lifecycle())
    assert not any(node.running for node in harness.cluster.nodes)
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == ["n1.log", "n2.log", "n3.log"]
    assert not harness.data_dir.exists()


def test_a_cluster_that_does_not_start_is_a_harness_error_with_the_reason(tmp_path: Path) -> None:
    harness = HarnessCluster(nodes=3, engine="native", node_args=("--timeout", "soon"),
                             logs_dir=tmp_path / "logs")

    async def lifecycle() -> None:
        try:
            with pytest.raises(HarnessError, match="the cluster did not start: node n. exited"):
                await harness.start()
        finally:
            await harness.stop()

    asyncio.run(lifecycle())
    logs = [p.read_text() for p in (tmp_path / "logs").glob("n*.log")]
    assert any("soon" in text for text in logs), logs
    assert not harness.data_dir.exists()


def test_require_harness_extra_names_what_is_missing() -> None:
    require_harness_extra()  # installed here (make installs .[test,harness])
    with pytest.raises(HarnessError, match="missing: no-such-package-xyz; install it with `pip install 'raftkv"):
        require_harness_extra("no-such-package-xyz")


def test_run_without_the_harness_extra_says_so_and_starts_nothing(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = jepsen_style_without_extra("run", "--time", "1", "--out", str(out))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "needs the harness extra, missing: matplotlib, toxiproxy-python" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_drill_and_check_import_without_the_harness_extra() -> None:
    code = WITHOUT_EXTRA + "import jepsen_style.drill, jepsen_style.drill_command, jepsen_style.check_command"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_drill_does_not_need_the_harness_extra(tmp_path: Path) -> None:
    # One real round, start to finish, with neither matplotlib nor Toxiproxy importable.
    out = tmp_path / "drill"
    result = jepsen_style_without_extra("drill", "failover", "--rounds", "1", "--out", str(out))
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 0, result.stdout + result.stderr
    saved = json.loads((out / "drill.json").read_text())
    assert saved["harness_errors"] == [] and len(saved["rounds"]) == 1
