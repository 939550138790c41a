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
    ("post", "/v1/compaction"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/v1/hotkeys"),
    ("get", "/metrics"),
    ("get", "/v1/members"),
    ("post", "/v1/members"),
    ("post", "/v1/members/{id}/promote"),
    ("delete", "/v1/members/{id}"),
    ("get", "/v1/snapshot"),
    ("get", "/v1/watch"),
    ("post", "/v1/watch/{id}/progress"),
    ("post", "/v1/leases"),
    ("get", "/v1/leases"),
    ("get", "/v1/leases/{id}"),
    ("delete", "/v1/leases/{id}"),
    ("post", "/v1/leases/{id}/keepalive"),
    ("post", "/v1/locks/{name}"),
    ("delete", "/v1/locks/{name}"),
    ("post", "/v1/elections/{name}/campaign"),
    ("post", "/v1/elections/{name}/proclaim"),
    ("get", "/v1/elections/{name}/leader"),
    ("get", "/v1/elections/{name}/observe"),
    ("post", "/v1/elections/{name}/resign"),
    ("post", "/v1/auth/authenticate"),
    ("get", "/v1/auth/status"),
    ("post", "/v1/auth/enable"),
    ("post", "/v1/auth/disable"),
    ("get", "/v1/auth/users"),
    ("post", "/v1/auth/users"),
    ("get", "/v1/auth/users/{name}"),
    ("delete", "/v1/auth/users/{name}"),
    ("put", "/v1/auth/users/{name}/password"),
    ("put", "/v1/auth/users/{name}/roles/{role}"),
    ("delete", "/v1/auth/users/{name}/roles/{role}"),
    ("get", "/v1/auth/roles"),
    ("post", "/v1/auth/roles"),
    ("get", "/v1/auth/roles/{name}"),
    ("delete", "/v1/auth/roles/{name}"),
    ("post", "/v1/auth/roles/{name}/permissions"),
    ("delete", "/v1/auth/roles/{name}/permissions"),
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
    error_schemas = {
        "#/components/schemas/Error",
        "#/components/schemas/PreconditionFailedError",
        "#/components/schemas/NotLeaderError",
        "#/components/schemas/CompactedError",
    }
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method not in HTTP_METHODS:
                continue
            for status, response in op["responses"].items():
                if int(status.replace("XX", "00")) < 400:  # "4XX" is a range
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
        [Op.add("stock", -2), Op.put("p", "v"), Op.put("b", b"\x80", lease=0xC0FFEE), Op.get("k"), Op.delete("k"),
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


# ---------------------------------------------------------------- a real cluster answers as documented

import urllib.error  # noqa: E402
import urllib.request  # noqa: E402

import orjson  # noqa: E402

from raftkv.local_cluster import LocalCluster  # noqa: E402


def http(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def response_schema(spec: dict[str, Any], path: str, method: str, status: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(response object, JSON schema) documented for that path/method/status."""
    response = spec["paths"][path][method]["responses"][str(status)]
    if "$ref" in response:
        response = spec["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    content = response.get("content", {})
    schema = content.get("application/json", {}).get("schema", {})
    return response, schema


def check(spec: dict[str, Any], path: str, method: str, answer: tuple[int, dict[str, str], bytes]) -> Any:
    status, headers, body = answer
    assert str(status) in spec["paths"][path][method]["responses"], (method, path, status, body)
    response, schema = response_schema(spec, path, method, status)
    for name in response.get("headers", {}):
        if name not in ("Idempotency-Replayed", "Retry-After", "X-Raftkv-Lease"):  # only sometimes sent
            assert name in headers, (method, path, status, name)
    if "application/json" not in response.get("content", {}):
        return body
    data = orjson.loads(body)
    Draft202012Validator({"components": spec["components"], **schema}).validate(data)
    return data


def test_live_responses_match_the_spec(spec: dict[str, Any], cluster: LocalCluster) -> None:
    base = cluster.endpoints[1]
    kv = "/v1/kv/{key}"
    put = check(spec, kv, "put", http("PUT", base + "/v1/kv/spec%2Fa", b"\xff\x00"))
    check(spec, kv, "get", http("GET", base + "/v1/kv/spec/a"))
    check(spec, kv, "get", http("GET", base + "/v1/kv/spec/none?consistency=serializable"))
    stale = check(spec, kv, "put", http("PUT", base + "/v1/kv/spec/a", b"x", {"If-Match": '"999999"'}))
    assert stale["error"]["mod_revision"] == put["kv"]["mod_revision"]
    check(spec, kv, "put", http("PUT", base + "/v1/kv/spec/a", b"x", {"If-None-Match": "*"}))
    check(spec, kv, "put", http("PUT", base + "/v1/kv/spec/b", b"text", {"Idempotency-Key": "spec-1"}))
    status, headers, _ = http("PUT", base + "/v1/kv/spec/b", b"text", {"Idempotency-Key": "spec-1"})
    assert status == 200 and headers.get("Idempotency-Replayed") == "true"
    listed = check(spec, "/v1/kv", "get", http("GET", base + "/v1/kv?prefix=spec/&limit=1"))
    assert listed["more"] is True and listed["kvs"][0]["encoding"] == "base64"
    check(spec, "/v1/kv", "get", http("GET", base + "/v1/kv?prefix=spec/&keys_only=true"))
    check(spec, "/v1/kv", "get", http("GET", base + "/v1/kv?limit=zero"))
    txn = {"compare": [{"key": "spec/n", "target": "version", "cmp": "==", "value": 0}],
           "success": [{"op": "add", "key": "spec/n", "delta": 3}, {"op": "get", "key": "spec/zz"},
                       {"op": "delete", "key": "spec/zz"}], "failure": []}
    ran = check(spec, "/v1/txn", "post", http("POST", base + "/v1/txn", orjson.dumps(txn)))
    assert ran["succeeded"] is True
    nan = {"success": [{"op": "add", "key": "spec/b", "delta": 1}]}
    check(spec, "/v1/txn", "post", http("POST", base + "/v1/txn", orjson.dumps(nan)))
    check(spec, "/v1/txn", "post", http("POST", base + "/v1/txn", b"{oops"))
    check(spec, "/v1/txn", "post", http("POST", base + "/v1/txn", orjson.dumps({"bogus": []})))
    check(spec, kv, "delete", http("DELETE", base + "/v1/kv/spec/none"))
    check(spec, kv, "delete", http("DELETE", base + "/v1/kv/spec/a"))
    check(spec, "/v1/kv", "delete", http("DELETE", base + "/v1/kv"))
    check(spec, "/v1/kv", "delete", http("DELETE", base + "/v1/kv?prefix=spec/"))
    check(spec, "/v1/status", "get", http("GET", base + "/v1/status"))
    check(spec, "/healthz", "get", http("GET", base + "/healthz"))
    check(spec, "/readyz", "get", http("GET", base + "/readyz"))
    big_key = "k" * 5000
    check(spec, kv, "put", http("PUT", base + "/v1/kv/" + big_key, b"v"))


def test_live_watch_and_conditional_reads_match_the_spec(spec: dict[str, Any], cluster: LocalCluster) -> None:
    base = cluster.endpoints[1]
    kv = "/v1/kv/{key}"
    written = check(spec, kv, "put", http("PUT", base + "/v1/kv/specw/a", b"\xfe"))
    revision = written["revision"]
    status, headers, _ = http("GET", base + "/v1/kv/specw/a")
    check(spec, kv, "get", http("GET", base + "/v1/kv/specw/a", headers={"If-None-Match": headers["ETag"]}))
    assert http("GET", base + "/v1/kv/specw/a", headers={"If-None-Match": headers["ETag"]})[0] == 304
    _, list_headers, _ = http("GET", base + "/v1/kv?prefix=specw/")
    check(spec, "/v1/kv", "get", http("GET", base + "/v1/kv?prefix=specw/", headers={"If-None-Match": list_headers["ETag"]}))
    check(spec, "/v1/kv", "get", http("GET", base + "/v1/kv?prefix=specw/&wait=1s"))  # wait without If-None-Match: 400
    check(spec, "/v1/watch", "get", http("GET", base + "/v1/watch?prefix=specw/", headers={"Accept": "text/html"}))
    check(spec, "/v1/watch", "get", http("GET", base + "/v1/watch?prefix=specw/&key=specw/a"))
    check(spec, "/v1/watch/{id}/progress", "post", http("POST", base + "/v1/watch/99999/progress"))

    watch = spec["paths"]["/v1/watch"]["get"]["responses"]["200"]
    message = Draft202012Validator({"components": spec["components"], "$ref": "#/components/schemas/WatchMessage"})
    query = f"/v1/watch?prefix=specw/&start_revision={revision}&prev_kv=true&progress_interval=0.2"
    request = urllib.request.Request(base + query, headers={"Accept": "application/x-ndjson"})
    with urllib.request.urlopen(request, timeout=10) as stream:
        assert stream.status == 200 and stream.headers["Content-Type"] in watch["content"]
        for name in watch["headers"]:
            assert name in stream.headers, name
        http("DELETE", base + "/v1/kv/specw/a")
        lines = [orjson.loads(stream.readline()) for _ in range(3)]
    for line in lines:
        message.validate(line)
    events = [line for line in lines if line["type"] != "progress"]
    assert events[0]["value_base64"] == "/g==" and events[0]["revision"] == revision
    assert not message.is_valid({"type": "put", "key": "k", "revision": 1})  # no metadata


def test_live_lease_answers_match_the_spec(spec: dict[str, Any], cluster: LocalCluster) -> None:
    base = cluster.endpoints[2]
    leases, one, keepalive = "/v1/leases", "/v1/leases/{id}", "/v1/leases/{id}/keepalive"
    granted = check(spec, leases, "post", http("POST", base + leases, orjson.dumps({"ttl": 30})))
    lease = granted["id"]
    check(spec, leases, "post", http("POST", base + leases, orjson.dumps({"ttl": 30, "id": lease})))  # 409
    check(spec, leases, "post", http("POST", base + leases, orjson.dumps({"ttl": 0})))
    check(spec, leases, "post", http("POST", base + leases, orjson.dumps({"ttl": 5, "owner": "me"})))
    put = check(spec, "/v1/kv/{key}", "put", http("PUT", f"{base}/v1/kv/specl/a?lease={lease}", b"v"))
    assert put["kv"]["lease"] == lease
    _, headers, _ = http("GET", base + "/v1/kv/specl/a")
    check(spec, "/v1/kv/{key}", "get", (200, headers, b"v"))
    assert headers["X-Raftkv-Lease"] == lease
    check(spec, "/v1/kv/{key}", "put", http("PUT", base + "/v1/kv/specl/b?lease=7fffffffffff0003", b"v"))  # 404
    check(spec, "/v1/kv/{key}", "put", http("PUT", base + "/v1/kv/specl/b?lease=zz", b"v"))  # 400
    txn = {"success": [{"op": "put", "key": "specl/t", "value": "t", "lease": lease}]}
    ran = check(spec, "/v1/txn", "post", http("POST", base + "/v1/txn", orjson.dumps(txn)))
    assert ran["results"][0]["kv"]["lease"] == lease
    schema_validator(spec, "TxnRequest").validate(txn)
    missing = {"success": [{"op": "put", "key": "specl/t", "value": "t", "lease": "7fffffffffff0003"}]}
    check(spec, "/v1/txn", "post", http("POST", base + "/v1/txn", orjson.dumps(missing)))  # 404
    shown = check(spec, one, "get", http("GET", f"{base}/v1/leases/{lease}"))
    assert shown["keys"] == ["specl/a", "specl/t"]
    check(spec, one, "get", http("GET", base + "/v1/leases/nothex"))
    check(spec, leases, "get", http("GET", base + leases + "?consistency=serializable"))
    check(spec, keepalive, "post", http("POST", f"{base}/v1/leases/{lease}/keepalive"))
    revoked = check(spec, one, "delete", http("DELETE", f"{base}/v1/leases/{lease}"))
    assert revoked["deleted"] == 2
    check(spec, one, "delete", http("DELETE", f"{base}/v1/leases/{lease}"))  # 404
    check(spec, keepalive, "post", http("POST", f"{base}/v1/leases/{lease}/keepalive"))  # 404
    check(spec, one, "get", http("GET", f"{base}/v1/leases/{lease}"))  # 404
