"""Every reference history in ../shared/histories gets the verdict Porcupine asserts."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from jepsen_style.checker.formats import load_history
from jepsen_style.checker.linearizability import check

SHARED_HISTORIES = Path(__file__).resolve().parents[1].parent / "shared" / "histories"
# (folder, --format name)
SHARED_FOLDERS = (("jepsen-etcd", "jepsen-log"), ("porcupine-kv", "porcupine-kv"))


def shared_history_cases() -> list[object]:
    if not SHARED_HISTORIES.is_dir():
        return [pytest.param(None, None, None, marks=pytest.mark.skip(
            reason=f"reference histories not found at {SHARED_HISTORIES}"))]
    cases: list[object] = []
    for folder, format_name in SHARED_FOLDERS:
        expected = json.loads((SHARED_HISTORIES / folder / "expected.json").read_text())
        for name, verdict in sorted(expected.items()):
            cases.append(pytest.param(SHARED_HISTORIES / folder / name, format_name, verdict, id=name))
    return cases


@pytest.mark.parametrize(("path", "format_name", "expected"), shared_history_cases())
def test_shared_history_verdict(path: Path, format_name: str, expected: str) -> None:
    ops, model = load_history(path, format_name)
    result = check(ops, model, timeout=60)
    assert result.verdict == expected
    if expected == "not-linearizable":
        assert result.failure is not None and result.failure.stuck is not None
