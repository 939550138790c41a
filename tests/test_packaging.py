"""The server and CLI need none of the harness extra (matplotlib, the Toxiproxy client)."""
from __future__ import annotations

import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

from raftkv.local_cluster import free_ports

ROOT = Path(__file__).resolve().parent.parent
HARNESS_ONLY = ("matplotlib", "toxiproxy")


def test_harness_packages_are_an_extra_not_a_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    dependencies = " ".join(project["dependencies"])
    harness = " ".join(project["optional-dependencies"]["harness"])
    for name in HARNESS_ONLY:
        assert name not in dependencies
        assert name in harness
    assert ".[test,harness]" in (ROOT / "Makefile").read_text()


def test_a_node_serves_with_the_harness_packages_unimportable(tmp_path: Path) -> None:
    http, peer = free_ports(2)
    # sys.modules[name] = None makes every import of that package fail.
    blocker = "; ".join(f"sys.modules[{name!r}] = None" for name in HARNESS_ONLY)
    code = (f"import sys; {blocker}; from raftkv.cli import main; "
            f"sys.exit(main(['serve', '--id', 'n1', '--data-dir', {str(tmp_path / 'n1')!r}, "
            f"'--listen', '127.0.0.1:{http}', '--peer-listen', '127.0.0.1:{peer}', "
            f"'--peers', 'n1=127.0.0.1:{peer}']))")
    node = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert node.poll() is None, node.stdout.read().decode() if node.stdout else ""
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http}/readyz", timeout=1) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the node did not become ready"
            time.sleep(0.1)
        request = urllib.request.Request(f"http://127.0.0.1:{http}/v1/kv/k", data=b"v", method="PUT")
        with urllib.request.urlopen(request, timeout=5) as answer:
            assert answer.status == 200
    finally:
        node.terminate()
        node.wait(10)
