"""Helpers shared by the checker tests: where the reference histories live."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_HISTORIES = REPO_ROOT.parent / "shared" / "histories"
# (folder, --format name)
SHARED_FOLDERS = (("jepsen-etcd", "jepsen-log"), ("porcupine-kv", "porcupine-kv"))


def shared_history_cases() -> list[object]:
    """One pytest param per shared history: (path, format, expected verdict)."""
    if not SHARED_HISTORIES.is_dir():
        return [pytest.param(None, None, None, marks=pytest.mark.skip(
            reason=f"reference histories not found at {SHARED_HISTORIES}"))]
    cases: list[object] = []
    for folder, format_name in SHARED_FOLDERS:
        expected = json.loads((SHARED_HISTORIES / folder / "expected.json").read_text())
        for name, verdict in sorted(expected.items()):
            cases.append(pytest.param(SHARED_HISTORIES / folder / name, format_name, verdict, id=name))
    return cases
