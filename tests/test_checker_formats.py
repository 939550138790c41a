from __future__ import annotations

import math
from pathlib import Path

import pytest

from jepsen_style.checker.formats import (
    HistoryFormatError,
    Keyword,
    load_history,
    parse_edn,
    parse_jepsen_log,
    parse_jsonl,
    parse_porcupine_kv,
)
from jepsen_style.checker.linearizability import check
from jepsen_style.checker.models import kv_model, register_model
from jepsen_style.checker.operation import UNKNOWN, Operation


def jepsen(*rows: str) -> str:
    return "\n".join(f"INFO  jepsen.util - {row}" for row in rows) + "\n"


def test_edn_values() -> None:
    assert parse_edn("nil") is None
    assert parse_edn("[1 4]") == (1, 4)
    assert parse_edn(":timed-out") == Keyword("timed-out")
    assert parse_edn('{:a "x \\"y\\"", :b [true false], :c -2.5}') == {
        Keyword("a"): 'x "y"', Keyword("b"): (True, False), Keyword("c"): -2.5,
    }


@pytest.mark.parametrize("text", ["[1 2", '"open', "{:a}", "1 2", "@", '"\\q"'])
def test_bad_edn_is_rejected(text: str) -> None:
    with pytest.raises(ValueError):
        parse_edn(text)


def test_jepsen_log_pairs_calls_and_follows_the_readme_rules() -> None:
    text = "some other log line\n" + jepsen(
        "0\t:invoke\t:write\t1",
        "1\t:invoke\t:read\tnil",
        "0\t:ok\t:write\t1",
        "1\t:ok\t:read\t1",
        "2\t:invoke\t:cas\t[1 4]",
        "2\t:fail\t:cas\t[1 4]",
        "3\t:invoke\t:read\tnil",
        "3\t:fail\t:read\t:timed-out",
        "4\t:invoke\t:cas\t[1 2]",
        "4\t:info\t:cas\t:timed-out",
        ":nemesis\t:info\t:start\tnil",
        "5\t:invoke\t:write\t3",
    )
    ops = parse_jepsen_log(text, "t.log")
    assert ops == [
        Operation(0, ("write", 1), 2.0, "ok", 4.0),
        Operation(1, ("read", None), 3.0, 1, 5.0),
        Operation(2, ("cas", (1, 4)), 6.0, False, 7.0),
        Operation(4, ("cas", (1, 2)), 10.0, UNKNOWN, math.inf),
        Operation(5, ("write", 3), 13.0, UNKNOWN, math.inf),
    ]
    assert check(ops, register_model()).verdict == "not-linearizable"  # the cas should have swapped


def test_jepsen_log_fields_may_be_separated_by_runs_of_spaces() -> None:
    # As Jepsen's own logs print them and Porcupine's parser reads them.
    tabs = jepsen("0\t:invoke\t:write\t1", "0\t:ok\t:write\t1", "1\t:invoke\t:cas\t[2 4]", "1\t:fail\t:cas\t[2 4]",
                  "2\t:invoke\t:read\tnil", "2\t:ok\t:read\t1")
    spaces = (
        "INFO  jepsen.util - 0   :invoke  :write  1\n"
        "INFO  jepsen.util - 0   :ok      :write  1  \n"
        "INFO  jepsen.util - 1   :invoke  :cas    [2 4]\n"
        "INFO  jepsen.util - 1 \t:fail  :cas\t  [2 4]\n"
        "INFO  jepsen.util - 2   :invoke  :read   nil\n"
        "INFO  jepsen.util - 2   :ok      :read   1\n"
    )
    ops = parse_jepsen_log(spaces, "spaces.log")
    assert ops == parse_jepsen_log(tabs, "tabs.log")
    assert Operation(1, ("cas", (2, 4)), 3.0, False, 4.0) in ops
    assert check(ops, register_model()).verdict == "linearizable"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nothing to see\n", "no Jepsen operation lines found"),
        (jepsen("0\t:invoke\t:read"), "expected 4 fields separated by tabs or spaces"),
        (jepsen("0  :invoke :read"), "expected 4 fields separated by tabs or spaces"),
        (jepsen("x\t:invoke\t:read\tnil"), "t.log:1: invalid literal"),
        (jepsen("0\t:invoke\t:delete\tnil"), "unknown function 'delete'"),
        (jepsen("0\t:invoke\t:cas\t3"), "cas value must be \\[from to\\]"),
        (jepsen("0\t:ok\t:read\t3"), "t.log:1: process 0 completes read without an invoke"),
        (jepsen("0\t:invoke\t:read\tnil", "0\t:invoke\t:read\tnil"), "t.log:2: process 0 invokes read while"),
        (jepsen("0\t:invoke\t:read\tnil", "0\t:ok\t:write\t1"), "completes write but invoked read"),
        (jepsen("0\t:invoke\t:read\tnil", "0\t:done\t:read\t1"), "unknown type 'done'"),
    ],
)
def test_bad_jepsen_log_gets_a_clear_error(text: str, message: str) -> None:
    with pytest.raises(HistoryFormatError, match=message):
        parse_jepsen_log(text, "t.log")


def kv(process: int, type: str, f: str, key: str, value: str | None) -> str:
    shown = "nil" if value is None else f'"{value}"'
    return f'{{:process {process}, :type :{type}, :f :{f}, :key "{key}", :value {shown}}}'


def test_porcupine_kv_lines() -> None:
    text = "\n".join([
        kv(0, "invoke", "append", "1", "x 0 0 y"),
        kv(1, "invoke", "get", "1", None),
        kv(0, "ok", "append", "1", "x 0 0 y"),
        kv(1, "ok", "get", "1", ""),
        kv(2, "invoke", "put", "2", "p"),
        kv(3, "invoke", "get", "2", None),
    ])
    ops = parse_porcupine_kv(text, "k.txt")
    assert ops == [
        Operation(0, ("1", "append", "x 0 0 y"), 1.0, "ok", 3.0),
        Operation(1, ("1", "get", None), 2.0, "", 4.0),
        Operation(2, ("2", "put", "p"), 5.0, UNKNOWN, math.inf),
    ]
    assert check(ops, kv_model()).verdict == "linearizable"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no events found"),
        ("{:process 0, :type :invoke", "k.txt:1: missing '}'"),
        ("[1 2]", "expected a map"),
        ('{:process 0, :type :invoke, :f :get, :key "1"}', "missing :value"),
        ('{:process 0, :type :invoke, :f :cas, :key "1", :value nil}', "unknown function 'cas'"),
        ('{:process 0, :type :invoke, :f :get, :key 1, :value nil}', ":key must be a string"),
        ('{:process 0, :type :invoke, :f :put, :key "1", :value 5}', ":value must be a string or nil"),
        ('{:process 0, :type :invoke, :f :put, :key "1", :value nil}', "put needs a string :value"),
        (kv(0, "invoke", "get", "1", None) + "\n" + kv(0, "ok", "get", "2", ""), "completes key '2'"),
    ],
)
def test_bad_porcupine_kv_gets_a_clear_error(text: str, message: str) -> None:
    with pytest.raises(HistoryFormatError, match=message):
        parse_porcupine_kv(text, "k.txt")


def test_jsonl_and_load_history(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    path.write_text(
        '{"process": 0, "type": "invoke", "f": "write", "key": "k", "value": "v", "time": 1}\n'
        '{"process": 0, "type": "ok", "f": "write", "key": "k", "value": "v", "time": 2}\n'
    )
    ops, model = load_history(path, "jsonl")
    assert ops == [Operation(0, ("k", "write", "v"), 1.0, "ok", 2.0)]
    assert model.name == "keyed-register"
    with pytest.raises(HistoryFormatError, match="no events found"):
        parse_jsonl("\n", "e.jsonl")
    with pytest.raises(HistoryFormatError, match="e.jsonl: event 1 .* completion without a matching invoke"):
        parse_jsonl('{"process": 0, "type": "ok", "f": "read", "key": "k", "value": null, "time": 1}', "e.jsonl")


def test_load_history_rejects_unknown_format_and_binary(tmp_path: Path) -> None:
    path = tmp_path / "b.log"
    path.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(HistoryFormatError, match="not UTF-8"):
        load_history(path, "jepsen-log")
    with pytest.raises(HistoryFormatError, match="unknown format 'edn'"):
        load_history(path, "edn")
