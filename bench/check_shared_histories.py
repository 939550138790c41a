"""Benchmark: parse and check every reference history in ../shared/histories.

    .venv/bin/python bench/check_shared_histories.py [--repeat N]

Prints per-file CPU time (parse + check) and verdict, and the total. Exits 1
if any verdict disagrees with the folder's expected.json. CPU time (not wall
time) is reported because the machine is shared.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from jepsen_style.checker.formats import load_history  # noqa: E402
from jepsen_style.checker.linearizability import check  # noqa: E402

SHARED_HISTORIES = REPO_ROOT.parent / "shared" / "histories"
FOLDERS = (("jepsen-etcd", "jepsen-log"), ("porcupine-kv", "porcupine-kv"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="run N times, report the fastest total")
    args = parser.parse_args()
    if not SHARED_HISTORIES.is_dir():
        print(f"reference histories not found at {SHARED_HISTORIES}", file=sys.stderr)
        return 2
    best_total = float("inf")
    mismatches: list[str] = []
    for _ in range(max(args.repeat, 1)):
        rows: list[tuple[str, float, str, str]] = []
        for folder, format_name in FOLDERS:
            expected = json.loads((SHARED_HISTORIES / folder / "expected.json").read_text())
            for name, verdict in sorted(expected.items()):
                started = time.process_time()
                ops, model = load_history(SHARED_HISTORIES / folder / name, format_name)
                result = check(ops, model)
                rows.append((f"{folder}/{name}", time.process_time() - started, result.verdict, verdict))
        total = sum(seconds for _, seconds, _, _ in rows)
        if total < best_total:
            best_total, best_rows = total, rows
    for name, seconds, verdict, expected in best_rows:
        flag = "" if verdict == expected else f"  MISMATCH (expected {expected})"
        print(f"{name:32} {seconds * 1000:8.1f} ms  {verdict}{flag}")
        if flag:
            mismatches.append(name)
    print(f"total: {best_total:.3f} s CPU for {len(best_rows)} histories"
          + (f", {len(mismatches)} mismatches" if mismatches else ", all verdicts as expected"))
    return 1 if mismatches else 0


if __name__ == "__main__":
    raise SystemExit(main())
