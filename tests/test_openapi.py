"""The OpenAPI document is valid, covers exactly the v1 contract, and its
schemas accept what the client sends and what a real cluster answers."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

from raftkv.client import Compare, Op
from raftkv.client.txn import txn_body

SPEC_PATH = Path(__file__).resolve().parent.parent / "api" / "openapi.yaml"

CONTRACT_OPERATIONS = {
    ("get", "/v1/kv/{key}"),
    ("put", "/v1/kv/{key}"),
    ("delete", "/v1/kv/{key}"),
    ("get", "/v1/kv"),
    ("delete", "/v1/kv"),
    ("post", "/v1/txn"),
    ("get", "/v1/status"),
    ("post", "/v1/leadership/transfer"),
    ("get", "/healthz"),
    ("get", "/readyz"),
}
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    with SPEC_PATH.open() as f:
        return yaml.safe_load(f)


def schema_validator(spec: dict[str, Any], name: str) -> Draft202012Validator:
    """A validator for components/schemas/<name> whose $refs resolve in the spec."""
    return Draft202012Validator({"components": spec["components"], "$ref": f"#/components/schemas/{name}"})


def test_spec_is_valid_openapi_3_1(spec: dict[str, Any]) -> None:
    assert spec["openapi"].startswith("3.1")
    validate(spec)


def test_validator_rejects_a_broken_spec(spec: dict[str, Any]) -> None:
    broken = copy.deepcopy(spec)
    broken["components"]["parameters"]["Timeout"]["in"] = "body"  # not a 3.1 location
    with pytest.raises(OpenAPIValidationError):
        validate(broken)


def test_spec_has_exactly_the_contract_operations(spec: dict[str, Any]) -> None:
    found = {(m, p) for p, item in spec["paths"].items() for m in item if m in HTTP_METHODS}
    assert found == CONTRACT_OPERATIONS


def test_every_error_response_uses_the_error_shape(spec: dict[str, Any]) -> None:
    error_schemas = {"#/components/schemas/Error", "#/components/schemas/PreconditionFailedError"}
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method not in HTTP_METHODS:
                continue
            for status, response in op["responses"].items():
                if int(status) < 400:
                    continue
                if "$ref" in response:
                    response = spec["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
                schema = response["content"]["application/json"]["schema"]
                assert schema["$ref"] in error_schemas, (method, path, status)


def test_write_operations_accept_idempotency_key(spec: dict[str, Any]) -> None:
    writes = [("put", "/v1/kv/{key}"), ("delete", "/v1/kv/{key}"), ("delete", "/v1/kv"), ("post", "/v1/txn")]
    for method, path in writes:
        params = spec["paths"][path][method].get("parameters", [])
        assert {"$ref": "#/components/parameters/IdempotencyKey"} in params, (method, path)
        assert "504" in spec["paths"][path][method]["responses"]


def test_client_txn_bodies_match_the_schema(spec: dict[str, Any]) -> None:
    body = txn_body(
        [Compare.number("stock", ">=", 2), Compare.value("k", "==", b"\xff"), Compare.mod_revision("k", "<", 9)],
        [Op.add("stock", -2), Op.put("p", "v"), Op.put("b", b"\x80"), Op.get("k"), Op.delete("k"),
         Op.delete_prefix("")],
        [Op.get("stock")],
    )
    schema_validator(spec, "TxnRequest").validate(body)


@pytest.mark.parametrize(
    "bad",
    [
        {"compare": [{"key": "k", "target": "number", "cmp": "=", "value": 1}]},
        {"success": [{"op": "add", "key": "k", "delta": "1"}]},
        {"success": [{"op": "put", "key": "k"}]},
        {"success": [{"op": "incr", "key": "k"}]},
        {"compare": [], "extra": 1},
    ],
)
def test_txn_schema_rejects_malformed_bodies(spec: dict[str, Any], bad: dict[str, Any]) -> None:
    assert not schema_validator(spec, "TxnRequest").is_valid(bad)


def test_response_schemas_accept_contract_examples(spec: dict[str, Any]) -> None:
    kv = {"key": "a", "value": "/w==", "encoding": "base64", "create_revision": 1, "mod_revision": 3, "version": 2}
    schema_validator(spec, "ListResponse").validate({"revision": 3, "kvs": [kv], "more": False})
    schema_validator(spec, "TxnResponse").validate(
        {"succeeded": True, "revision": 4, "results": [{"kv": kv}, {"kv": None}, {"deleted": 2}]}
    )
    schema_validator(spec, "PreconditionFailedError").validate(
        {"error": {"code": "precondition_failed", "message": "m", "mod_revision": 0}}
    )
    assert not schema_validator(spec, "Error").is_valid({"error": {"code": "NoLeader", "message": "m"}})
    assert not schema_validator(spec, "ListResponse").is_valid({"revision": 3, "kvs": []})
