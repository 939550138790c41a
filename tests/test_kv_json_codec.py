"""Tests for raftkv.server.json_codec: request parsing (every refusal) and rendering."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from raftkv.kv import commands
from raftkv.server.json_codec import (
    RequestError,
    decode_value,
    kv_to_json,
    parse_txn,
    result_error_status,
    result_to_json,
    validate_key,
    validate_prefix,
    validate_value,
)
from raftkv.kv.limits import Limits
from raftkv.kv.state_machine import KVStateMachine

LIMITS = Limits()
SMALL = Limits(max_key_bytes=8, max_value_bytes=4, max_txn_ops=3)


def refused(obj: Any, limits: Limits = LIMITS) -> RequestError:
    with pytest.raises(RequestError) as caught:
        parse_txn(obj, limits)
    return caught.value


# ---- parse_txn: accepted shapes ------------------------------------------------


def test_full_txn_becomes_a_command() -> None:
    body = {
        "compare": [
            {"key": "k", "target": "value", "cmp": "==", "value": "v"},
            {"key": "b", "target": "value", "cmp": "!=", "value": base64.b64encode(b"\xff\x00").decode(), "encoding": "base64"},
            {"key": "k", "target": "version", "cmp": ">", "value": 0},
            {"key": "n", "target": "number", "cmp": ">=", "value": -3},
        ],
        "success": [
            {"op": "put", "key": "k", "value": "héllo", "encoding": "utf-8"},
            {"op": "add", "key": "n", "delta": -1},
            {"op": "delete_prefix", "prefix": ""},
        ],
        "failure": [{"op": "get", "key": "k"}, {"op": "delete", "key": "k"}],
    }
    assert parse_txn(body, LIMITS) == {
        "op": "txn",
        "compare": [
            {"key": "k", "target": "value", "cmp": "==", "value": b"v"},
            {"key": "b", "target": "value", "cmp": "!=", "value": b"\xff\x00"},
            {"key": "k", "target": "version", "cmp": ">", "value": 0},
            {"key": "n", "target": "number", "cmp": ">=", "value": -3},
        ],
        "success": [
            {"op": "put", "key": "k", "value": "héllo".encode()},
            {"op": "add", "key": "n", "delta": -1},
            {"op": "delete_prefix", "prefix": ""},
        ],
        "failure": [{"op": "get", "key": "k"}, {"op": "delete", "key": "k"}],
    }


def test_all_sections_are_optional_and_idem_is_attached() -> None:
    assert parse_txn({}, LIMITS) == commands.txn([], [], [])
    assert parse_txn({}, LIMITS, idem="r1")["idem"] == "r1"


def test_parsed_txn_applies_through_the_log() -> None:
    sm = KVStateMachine()
    cmd = parse_txn({"success": [{"op": "add", "key": "n", "delta": 5}, {"op": "get", "key": "n"}]}, LIMITS)
    result = sm.apply(commands.encode(cmd))
    assert result["ok"] and result["results"][1]["kv"]["value"] == b"5"


def test_limits_are_inclusive() -> None:
    body = {"compare": [{"key": "k" * 8, "target": "value", "cmp": "==", "value": "vvvv"}],
            "success": [{"op": "put", "key": "é" * 4, "value": "ü" * 2}], "failure": [{"op": "delete_prefix", "prefix": "p" * 8}]}
    assert parse_txn(body, SMALL)["success"][0]["value"] == "üü".encode()


# ---- parse_txn: every refusal ------------------------------------------------------


@pytest.mark.parametrize(("body", "code", "words"), [
    ([], "wrong_type", ["request body", "JSON object", "array"]),
    ("txn", "wrong_type", ["request body", "string"]),
    (None, "wrong_type", ["request body", "null"]),
    ({"compare": [], "succes": []}, "unknown_field", ["succes", "allowed", "success"]),
    ({"success": {"op": "get"}}, "wrong_type", ["success", "array", "object"]),
    ({"compare": None}, "wrong_type", ["compare", "array", "null"]),
    ({"compare": ["k"]}, "wrong_type", ["compare[0]", "JSON object"]),
    ({"compare": [{"key": "k", "target": "value", "cmp": "=="}]}, "missing_field", ["compare[0]", "value"]),
    ({"compare": [{"target": "value", "cmp": "==", "value": "v"}]}, "missing_field", ["compare[0]", "key"]),
    ({"compare": [{"key": "k", "target": "value", "cmp": "==", "value": "v", "extra": 1}]}, "unknown_field", ["compare[0]", "extra"]),
    ({"compare": [{"key": "k", "target": "size", "cmp": "==", "value": 1}]}, "invalid_argument", ["compare[0].target", '"size"', "mod_revision"]),
    ({"compare": [{"key": "k", "target": 1, "cmp": "==", "value": 1}]}, "wrong_type", ["compare[0].target", "string", "integer"]),
    ({"compare": [{"key": "k", "target": "version", "cmp": "=", "value": 1}]}, "invalid_argument", ["compare[0].cmp", '"="', "=="]),
    ({"compare": [{"key": "k", "target": "version", "cmp": "==", "value": "1"}]}, "wrong_type", ["compare[0].value", "integer", "string"]),
    ({"compare": [{"key": "k", "target": "version", "cmp": "==", "value": True}]}, "wrong_type", ["compare[0].value", "integer", "boolean"]),
    ({"compare": [{"key": "k", "target": "mod_revision", "cmp": "==", "value": 1.5}]}, "wrong_type", ["compare[0].value", "integer", "number"]),
    ({"success": [{"op": "add", "key": "k", "delta": 2.0**60}]}, "wrong_type", ["success[0].delta", "integer", "number"]),
    ({"compare": [{"key": "k", "target": "number", "cmp": "==", "value": 2**63}]}, "invalid_argument", ["compare[0].value", "64-bit"]),
    ({"compare": [{"key": "k", "target": "version", "cmp": "==", "value": 1, "encoding": "base64"}]}, "invalid_argument", ["compare[0].encoding", "value"]),
    ({"compare": [{"key": "k", "target": "value", "cmp": "==", "value": 5}]}, "wrong_type", ["compare[0].value", "string", "integer"]),
    ({"compare": [{"key": "", "target": "value", "cmp": "==", "value": "v"}]}, "empty_key", ["compare[0].key"]),
    ({"compare": [{"key": None, "target": "value", "cmp": "==", "value": "v"}]}, "wrong_type", ["compare[0].key", "string", "null"]),
    ({"success": [7]}, "wrong_type", ["success[0]", "JSON object", "integer"]),
    ({"success": [{"key": "k"}]}, "missing_field", ["success[0].op"]),
    ({"success": [{"op": "incr", "key": "k"}]}, "invalid_argument", ["success[0].op", '"incr"', "add"]),
    ({"success": [{"op": None, "key": "k"}]}, "wrong_type", ["success[0].op", "string", "null"]),
    ({"success": [{"op": "get"}]}, "missing_field", ["success[0]", "key"]),
    ({"success": [{"op": "get", "key": "k", "value": "v"}]}, "unknown_field", ["success[0]", '"get"', "value"]),
    ({"success": [{"op": "delete", "prefix": "p"}]}, "unknown_field", ["success[0]", "prefix"]),
    ({"success": [{"op": "delete_prefix", "key": "p"}]}, "unknown_field", ["success[0]", "key"]),
    ({"success": [{"op": "delete_prefix"}]}, "missing_field", ["success[0]", "prefix"]),
    ({"success": [{"op": "delete_prefix", "prefix": 3}]}, "wrong_type", ["success[0].prefix", "string"]),
    ({"success": [{"op": "put", "key": "k"}]}, "missing_field", ["success[0]", "value"]),
    ({"success": [{"op": "put", "key": "k", "value": ["x"]}]}, "wrong_type", ["success[0].value", "string", "array"]),
    ({"success": [{"op": "put", "key": "k", "value": "x", "encoding": "latin-1"}]}, "invalid_argument", ["success[0].encoding", "latin-1", "base64"]),
    ({"success": [{"op": "put", "key": "k", "value": "x", "encoding": 64}]}, "wrong_type", ["success[0].encoding", "string"]),
    ({"success": [{"op": "put", "key": "k", "value": "not base64!", "encoding": "base64"}]}, "invalid_base64", ["success[0].value", "base64"]),
    ({"success": [{"op": "put", "key": "k", "value": "YWJj", "encoding": "base64"}, {"op": "put", "key": "k", "value": "YWJ", "encoding": "base64"}]}, "invalid_base64", ["success[1].value"]),
    ({"success": [{"op": "put", "key": "k", "value": "\ud800"}]}, "invalid_argument", ["success[0].value", "Unicode"]),
    ({"success": [{"op": "put", "key": "\ud800", "value": "v"}]}, "invalid_argument", ["success[0].key", "Unicode"]),
    ({"success": [{"op": "add", "key": "k"}]}, "missing_field", ["success[0]", "delta"]),
    ({"success": [{"op": "add", "key": "k", "delta": "1"}]}, "wrong_type", ["success[0].delta", "integer", "string"]),
    ({"success": [{"op": "add", "key": "k", "delta": False}]}, "wrong_type", ["success[0].delta", "integer", "boolean"]),
    ({"success": [{"op": "add", "key": "k", "delta": -(2**63) - 1}]}, "invalid_argument", ["success[0].delta", "64-bit"]),
    ({"failure": [{"op": "get", "key": ""}]}, "empty_key", ["failure[0].key"]),
    ({"failure": [{"op": "get", "key": "ok"}, {"op": "put", "key": "k", "value": "v", "bogus": 1, "zzz": 2}]}, "unknown_field", ["failure[1]", "bogus", "zzz"]),
])
def test_bad_txn_is_refused_with_a_clear_400(body: Any, code: str, words: list[str]) -> None:
    error = refused(body)
    assert (error.status, error.code) == (400, code), error.message
    for word in words:
        assert word in error.message, (word, error.message)
    assert error.to_json() == {"error": {"code": code, "message": error.message}}


@pytest.mark.parametrize(("body", "code", "words"), [
    ({"success": [{"op": "get", "key": "k" * 9}]}, "key_too_large", ["success[0].key", "9 bytes", "8 bytes"]),
    ({"success": [{"op": "get", "key": "é" * 5}]}, "key_too_large", ["10 bytes"]),
    ({"compare": [{"key": "k" * 9, "target": "version", "cmp": "==", "value": 0}]}, "key_too_large", ["compare[0].key"]),
    ({"success": [{"op": "delete_prefix", "prefix": "p" * 9}]}, "key_too_large", ["success[0].prefix"]),
    ({"success": [{"op": "put", "key": "k", "value": "12345"}]}, "value_too_large", ["success[0].value", "5 bytes", "4 bytes"]),
    ({"success": [{"op": "put", "key": "k", "value": base64.b64encode(b"\xff" * 5).decode(), "encoding": "base64"}]}, "value_too_large", ["5 bytes"]),
    ({"compare": [{"key": "k", "target": "value", "cmp": "==", "value": "12345"}]}, "value_too_large", ["compare[0].value"]),
    ({"compare": [{"key": "k", "target": "version", "cmp": "==", "value": 0}] * 2,
      "success": [{"op": "get", "key": "k"}], "failure": [{"op": "get", "key": "k"}]}, "too_many_ops", ["4", "limit is 3"]),
])
def test_oversized_txn_is_refused_with_413(body: Any, code: str, words: list[str]) -> None:
    error = refused(body, SMALL)
    assert (error.status, error.code) == (413, code), error.message
    for word in words:
        assert word in error.message, (word, error.message)


def test_an_integral_json_number_is_an_integer() -> None:
    # JSON Schema's "integer" (the spec's) includes -7.0; beyond 2**53 a float
    # is not exact, so it stays refused (the table above).
    command = parse_txn(
        {"compare": [{"key": "k", "target": "version", "cmp": "==", "value": 1.0}],
         "success": [{"op": "add", "key": "k", "delta": -7.0}]},
        Limits(),
    )
    assert command["compare"][0]["value"] == 1 and type(command["compare"][0]["value"]) is int
    assert command["success"][0]["delta"] == -7 and type(command["success"][0]["delta"]) is int


def test_op_count_is_checked_before_parsing_each_op() -> None:
    # a huge body of garbage ops is refused for its size, not after walking it
    assert refused({"success": ["junk"] * 4}, SMALL).code == "too_many_ops"


# ---- single-field validators used by the server ---------------------------------


def test_validate_key() -> None:
    validate_key("k" * 8, SMALL)
    validate_key("a/b/c", LIMITS)
    with pytest.raises(RequestError) as caught:
        validate_key("", LIMITS)
    assert (caught.value.status, caught.value.code) == (400, "empty_key")
    validate_key("ключ", SMALL)  # 4 characters, 8 bytes: fits
    with pytest.raises(RequestError) as caught:
        validate_key("ключи", SMALL)
    assert (caught.value.status, caught.value.code) == (413, "key_too_large")
    assert "10 bytes" in caught.value.message


def test_validate_prefix_allows_empty() -> None:
    validate_prefix("", SMALL)
    with pytest.raises(RequestError) as caught:
        validate_prefix("p" * 9, SMALL)
    assert caught.value.code == "key_too_large" and "prefix" in caught.value.message


def test_validate_value() -> None:
    validate_value(b"1234", SMALL)
    validate_value(b"", SMALL)
    with pytest.raises(RequestError) as caught:
        validate_value(b"12345", SMALL)
    assert (caught.value.status, caught.value.code) == (413, "value_too_large")


def test_decode_value_defaults_to_utf8() -> None:
    assert decode_value({"value": "ü"}, "body", LIMITS) == "ü".encode()
    assert decode_value({"value": "AP8=", "encoding": "base64"}, "body", LIMITS) == b"\x00\xff"
    assert decode_value({"value": "", "encoding": "base64"}, "body", LIMITS) == b""


def test_decode_value_requires_a_value() -> None:
    with pytest.raises(RequestError) as caught:
        decode_value({"encoding": "base64"}, "body", LIMITS)
    assert (caught.value.status, caught.value.code) == (400, "missing_field")
    assert "body.value" in caught.value.message


# ---- rendering -------------------------------------------------------------------


KV_TEXT = {"key": "k", "value": "ü".encode(), "create_revision": 1, "mod_revision": 3, "version": 2}
KV_BINARY = {"key": "b", "value": b"\xff\x00", "create_revision": 2, "mod_revision": 2, "version": 1}


def test_kv_to_json_text_binary_and_without_value() -> None:
    assert kv_to_json(KV_TEXT) == {"key": "k", "value": "ü", "create_revision": 1, "mod_revision": 3, "version": 2}
    assert kv_to_json(KV_BINARY) == {"key": "b", "value": "/wA=", "encoding": "base64",
                                     "create_revision": 2, "mod_revision": 2, "version": 1}
    assert kv_to_json(KV_TEXT, with_value=False) == {"key": "k", "create_revision": 1, "mod_revision": 3, "version": 2}
    # what the codec renders, the codec reads back
    rendered = kv_to_json(KV_BINARY)
    assert decode_value(rendered, "kv", LIMITS) == KV_BINARY["value"]


def test_result_to_json_for_each_result_shape() -> None:
    sm = KVStateMachine()
    put = sm.apply_command(commands.put("k", b"v", idem="i"))
    assert result_to_json(put) == {"revision": 1, "kv": {"key": "k", "value": "v", "create_revision": 1, "mod_revision": 1, "version": 1}}
    assert result_to_json(put, with_value=False) == {"revision": 1, "kv": {"key": "k", "create_revision": 1, "mod_revision": 1, "version": 1}}
    replay = sm.apply_command(commands.put("k", b"v", idem="i"))
    assert replay["replayed"] is True and result_to_json(replay) == result_to_json(put)
    assert result_to_json(sm.apply_command(commands.delete("k"))) == {"revision": 2, "deleted": 1}
    txn = sm.apply_command(commands.txn([], [
        {"op": "put", "key": "b", "value": b"\xff"}, {"op": "get", "key": "missing"}, {"op": "delete_prefix", "prefix": "zz"}], []))
    assert result_to_json(txn) == {"succeeded": True, "revision": 3, "results": [
        {"kv": {"key": "b", "value": "/w==", "encoding": "base64", "create_revision": 3, "mod_revision": 3, "version": 1}},
        {"kv": None},
        {"deleted": 0},
    ]}
    error = sm.apply_command(commands.txn([], [{"op": "add", "key": "b", "delta": 1}], []))
    rendered = result_to_json(error)
    assert rendered["revision"] == 3 and rendered["error"]["code"] == "not_a_number"
    assert '"b"' in rendered["error"]["message"]
    json.dumps(rendered)  # everything rendered is plain JSON


def test_result_error_status() -> None:
    assert result_error_status({"ok": True, "revision": 1}) == 200
    assert result_error_status({"ok": False, "revision": 1, "error": {"code": "not_a_number", "message": ""}}) == 409
    assert result_error_status({"ok": False, "revision": 1, "error": {"code": "out_of_range", "message": ""}}) == 409
    assert result_error_status({"ok": False, "revision": 1, "error": {"code": "invalid_command", "message": ""}}) == 400
