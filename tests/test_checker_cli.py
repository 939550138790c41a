from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import orjson

from jepsen_style.cli import build_parser, command_modules

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_check(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jepsen_style", "check", *map(str, args)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )


def write_jsonl(path: Path, events: list[tuple[int, str, str, object, float]]) -> Path:
    lines = [orjson.dumps({"process": p, "type": t, "f": f, "key": "k", "value": v, "time": time})
             for p, t, f, v, time in events]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def good_history(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "good.jsonl", [
        (0, "invoke", "write", "a", 0), (0, "ok", "write", "a", 1),
        (1, "invoke", "read", None, 2), (1, "ok", "read", "a", 3),
    ])


def bad_history(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "bad.jsonl", [
        (0, "invoke", "write", "a", 0), (0, "ok", "write", "a", 1),
        (1, "invoke", "read", None, 2), (1, "ok", "read", "never written", 3),
    ])


def hard_kv_history(tmp_path: Path) -> Path:
    # Many concurrent appends and a read no order can produce: a long search.
    lines = [f'{{:process {c}, :type :invoke, :f :append, :key "k", :value "{c}"}}' for c in range(18)]
    lines += [f'{{:process {c}, :type :ok, :f :append, :key "k", :value "{c}"}}' for c in range(18)]
    lines += ['{:process 99, :type :invoke, :f :get, :key "k", :value nil}',
              '{:process 99, :type :ok, :f :get, :key "k", :value "impossible"}']
    path = tmp_path / "hard.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_all_linearizable_exits_0(tmp_path: Path) -> None:
    history = good_history(tmp_path)
    done = run_check("--format", "jsonl", history)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{history}: linearizable\n"


def test_a_violation_exits_1_and_explains(tmp_path: Path) -> None:
    good, bad = good_history(tmp_path), bad_history(tmp_path)
    svg_dir = tmp_path / "svg"
    done = run_check("--format", "jsonl", "--explain", "--svg-dir", svg_dir, good, bad)
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"{good}: linearizable"
    assert lines[1] == f"{bad}: not-linearizable"
    assert "cannot be linearized: k: read never written" in done.stdout
    assert "which no operation sets" in done.stdout
    assert "longest linearizable order found:" not in done.stdout  # proven without search
    assert "#" in done.stdout
    svg = svg_dir / "bad.jsonl.svg"
    assert ElementTree.parse(svg).getroot().tag.endswith("svg")


def test_explain_reports_the_longest_order_of_a_search(tmp_path: Path) -> None:
    lines = [
        '{:process 0, :type :invoke, :f :append, :key "k", :value "x"}',
        '{:process 1, :type :invoke, :f :append, :key "k", :value "y"}',
        '{:process 0, :type :ok, :f :append, :key "k", :value "x"}',
        '{:process 1, :type :ok, :f :append, :key "k", :value "y"}',
        '{:process 2, :type :invoke, :f :get, :key "k", :value nil}',
        '{:process 2, :type :ok, :f :get, :key "k", :value "xy"}',
        '{:process 2, :type :invoke, :f :get, :key "k", :value nil}',
        '{:process 2, :type :ok, :f :get, :key "k", :value "yx"}',
    ]
    history = tmp_path / "kv.txt"
    history.write_text("\n".join(lines) + "\n")
    done = run_check("--format", "porcupine-kv", "--explain", history)
    assert done.returncode == 1
    assert "part 1 of 1 (4 operations) is not linearizable; longest linearizable order found: 3 operations" \
        in done.stdout
    assert "[3] k: get 'xy'" in done.stdout


def test_violation_wins_over_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing.jsonl"
    done = run_check("--format", "jsonl", missing, bad_history(tmp_path))
    assert done.returncode == 1
    assert f"{missing}: error: No such file or directory" in done.stdout


def test_parse_error_exits_2_with_file_and_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"process": 0, "type": "invoke"}\n')
    done = run_check("--format", "jsonl", good_history(tmp_path), broken)
    assert done.returncode == 2
    assert f"{broken}: error: {broken}:1: missing field(s) f, key, value, time" in done.stdout


def test_wrong_format_is_a_parse_error_not_a_verdict(tmp_path: Path) -> None:
    done = run_check("--format", "jepsen-log", good_history(tmp_path))
    assert done.returncode == 2
    assert "no Jepsen operation lines found" in done.stdout


def test_time_limit_gives_unknown_and_exits_2(tmp_path: Path) -> None:
    hard = hard_kv_history(tmp_path)
    done = run_check("--format", "porcupine-kv", "--timeout", "0.2", "--explain", hard)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout.splitlines()[0] == f"{hard}: unknown"
    assert "time limit of 0.2 s reached" in done.stdout


def test_bad_arguments_exit_2_with_usage(tmp_path: Path) -> None:
    done = run_check("--format", "jsonl", "--timeout", "-3", good_history(tmp_path))
    assert done.returncode == 2
    assert "must be more than 0 seconds" in done.stderr
    done = run_check("--format", "yaml", good_history(tmp_path))
    assert done.returncode == 2
    assert "invalid choice: 'yaml'" in done.stderr


def test_commands_are_discovered_from_modules() -> None:
    assert "jepsen_style.check_command" in command_modules()
    args = build_parser().parse_args(["check", "--format", "jsonl", "x.jsonl"])
    assert args.command == "check" and callable(args.handler)
