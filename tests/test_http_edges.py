"""A hostile client against a real node: odd numbers, odd bytes, odd HTTP,
slow and idle connections, too many connections, huge lists. Every answer is
a 4xx (or 503 for the connection cap) in the JSON error shape, never a 500,
and the node keeps serving."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Iterator

import orjson
import pytest

from raftkv.local_cluster import LocalCluster
from tests.http import call

MAX_CONNECTIONS = 6
HEAD_TIMEOUT = 1.0
IDLE_TIMEOUT = 2.0
BODY_TIMEOUT = 1.5
MAX_LIST_BYTES = 2500


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    args = [
        "--max-connections", str(MAX_CONNECTIONS),
        "--head-timeout", str(HEAD_TIMEOUT),
        "--idle-timeout", str(IDLE_TIMEOUT),
        "--body-timeout", str(BODY_TIMEOUT),
        "--max-list-bytes", str(MAX_LIST_BYTES),
    ]
    with LocalCluster(
        tmp_path_factory.mktemp("edges"), nodes=1, engine="native", extra_args=args
    ) as cluster:
        cluster.wait_ready()
        yield cluster


def _url(node: LocalCluster) -> str:
    return f"http://{node.nodes[0].http_addr}"


def _port(node: LocalCluster) -> int:
    return int(node.nodes[0].http_addr.rsplit(":", 1)[1])


def _connect(node: LocalCluster) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", _port(node)), timeout=10)
    return sock


def _read_all(sock: socket.socket, timeout: float) -> bytes:
    """Everything the server sends until it closes (or ``timeout`` passes)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (socket.timeout, ConnectionResetError):
        pass
    return data


def _exchange(node: LocalCluster, request: bytes, timeout: float = 5.0) -> bytes:
    with _connect(node) as sock:
        sock.sendall(request)
        return _read_all(sock, timeout)


def _parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """The (last final) response in ``raw``: status, headers, body."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def _assert_json_error(raw: bytes, status: int, code: str) -> str:
    got_status, headers, body = _parse(raw)
    assert got_status == status, raw[:300]
    assert headers["content-type"].startswith("application/json"), headers
    error = orjson.loads(body)["error"]
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"]
    return error["message"]


def _node_log(node: LocalCluster) -> str:
    return Path(node.nodes[0].log_path).read_text()


# -- numbers and keys ------------------------------------------------------


@pytest.mark.parametrize(
    "if_match",
    [
        '"18446744073709551616"',
        '"99999999999999999999"',
        '"²"',
        '"' + "1" * 5000 + '"',
        '"٣"'.encode().decode("latin-1"),  # UTF-8 on the wire
        '"1_0"',
        '" 1"',
        '"-1"',
    ],
)
def test_if_match_that_is_not_a_64_bit_revision_is_400(node: LocalCluster, if_match: str) -> None:
    response = call("PUT", _url(node) + "/v1/kv/im", b"x", {"If-Match": if_match})
    assert response.status == 400, response.body
    assert response.error_code == "invalid_argument"
    assert "If-Match" in response.json()["error"]["message"]
    assert "may or may not" not in response.json()["error"]["message"]
    assert call("GET", _url(node) + "/v1/kv/im").status == 404


@pytest.mark.parametrize(
    "limit", ["%C2%B2", "1" + "0" * 5000, "%D9%A3", "0", "-1", "1.0", "9223372036854775808", "%201"]
)
def test_limit_that_is_not_a_positive_64_bit_integer_is_400(node: LocalCluster, limit: str) -> None:
    response = call("GET", _url(node) + f"/v1/kv?limit={limit}")
    assert response.status == 400, response.body
    assert response.error_code == "invalid_argument"
    assert "limit" in response.json()["error"]["message"]


def test_limit_at_the_top_of_the_64_bit_range_is_accepted(node: LocalCluster) -> None:
    assert call("GET", _url(node) + "/v1/kv?limit=9223372036854775807").status == 200


@pytest.mark.parametrize(
    "timeout",
    ["1e-300", "0", "0.001", "0.1", "0.49", "61", "60.5", "1e308", "nan", "inf", "%D9%A3", "1_0", "-1", "%201", "5e-1"],
)
def test_timeout_outside_the_allowed_range_or_format_is_400(node: LocalCluster, timeout: str) -> None:
    response = call("PUT", _url(node) + f"/v1/kv/t?timeout={timeout}", b"x")
    assert response.status == 400, response.body
    assert response.error_code == "invalid_argument"
    assert "timeout" in response.json()["error"]["message"]


@pytest.mark.parametrize("path", ["/v1/kv?consistency=serializable", "/v1/kv/t?consistency=serializable"])
def test_a_bad_timeout_is_400_on_a_serializable_read_too(node: LocalCluster, path: str) -> None:
    response = call("GET", _url(node) + path + "&timeout=null")
    assert response.status == 400, response.body
    assert response.error_code == "invalid_argument"


def test_a_decimal_timeout_is_accepted(node: LocalCluster) -> None:
    assert call("PUT", _url(node) + "/v1/kv/t?timeout=2.5", b"x").status == 200


def test_a_key_that_is_not_utf8_is_refused_and_aliases_nothing(node: LocalCluster) -> None:
    response = call("PUT", _url(node) + "/v1/kv/bad%FF", b"x")
    assert response.status == 400, response.body
    assert response.error_code == "invalid_argument"
    # Before the fix this key was stored as the literal text "bad%FF".
    assert call("GET", _url(node) + "/v1/kv/bad%25FF").status == 404
    assert call("GET", _url(node) + "/v1/kv/bad%FF").status == 400


def test_a_percent_encoded_utf8_key_round_trips(node: LocalCluster) -> None:
    assert call("PUT", _url(node) + "/v1/kv/caf%C3%A9%2Fx", b"v").status == 200
    listed = call("GET", _url(node) + "/v1/kv?prefix=caf%C3%A9").json()
    assert [kv["key"] for kv in listed["kvs"]] == ["café/x"]


def test_a_real_replacement_character_in_a_query_value_is_accepted(node: LocalCluster) -> None:
    assert call("PUT", _url(node) + "/v1/kv/r%EF%BF%BDx", b"v").status == 200
    listed = call("GET", _url(node) + "/v1/kv?prefix=r%EF%BF%BD").json()
    assert [kv["key"] for kv in listed["kvs"]] == ["r\ufffdx"]


def test_a_query_parameter_given_twice_is_400(node: LocalCluster) -> None:
    response = call("GET", _url(node) + "/v1/kv?prefix=a&limit=1&limit=2")
    assert response.status == 400
    assert response.error_code == "invalid_argument"
    assert "'limit' given more than once" in response.json()["error"]["message"]


def test_a_query_value_that_is_not_utf8_is_400(node: LocalCluster) -> None:
    response = call("GET", _url(node) + "/v1/kv?prefix=%FF")
    assert response.status == 400
    assert response.error_code == "invalid_argument"


# -- HTTP the parser refuses ------------------------------------------------


def test_a_header_over_the_size_limit_is_json_431(node: LocalCluster) -> None:
    raw = _exchange(node, b"GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n")
    _assert_json_error(raw, 431, "header_too_large")


def test_too_many_headers_is_json_431(node: LocalCluster) -> None:
    headers = b"".join(b"X-H%d: 1\r\n" % i for i in range(200))
    raw = _exchange(node, b"GET /v1/status HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    _assert_json_error(raw, 431, "header_too_large")


def test_a_request_line_over_the_limit_is_json_414(node: LocalCluster) -> None:
    raw = _exchange(node, b"GET /v1/kv/" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    _assert_json_error(raw, 414, "request_line_too_long")


def test_a_bad_chunk_size_is_json_400(node: LocalCluster) -> None:
    raw = _exchange(
        node,
        b"POST /v1/txn HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    )
    _assert_json_error(raw, 400, "bad_request")


def test_a_garbage_request_line_is_json_400(node: LocalCluster) -> None:
    raw = _exchange(node, b"\x16\x03\x01 hello\r\n\r\n")
    _assert_json_error(raw, 400, "bad_request")


# -- bodies --------------------------------------------------------------------


def test_content_length_over_the_limit_is_413_before_the_body(node: LocalCluster) -> None:
    # No body is sent: the answer must come from the head alone.
    raw = _exchange(node, b"PUT /v1/kv/big HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n")
    message = _assert_json_error(raw, 413, "request_too_large")
    assert "99999999" in message


def test_expect_100_continue_gets_100_then_the_answer(node: LocalCluster) -> None:
    with _connect(node) as sock:
        sock.sendall(
            b"PUT /v1/kv/expect HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        sock.settimeout(5)
        interim = sock.recv(65536)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), interim
        sock.sendall(b"abc")
        raw = interim[len(b"HTTP/1.1 100 Continue\r\n\r\n"):]
        while b"\r\n\r\n" not in raw or not raw.rstrip().endswith(b"}"):
            raw += sock.recv(65536)
    status, _, body = _parse(raw)
    assert status == 200, raw
    assert orjson.loads(body)["kv"]["key"] == "expect"
    assert call("GET", _url(node) + "/v1/kv/expect").body == b"abc"


def test_expect_100_continue_over_the_limit_gets_413_and_no_100(node: LocalCluster) -> None:
    raw = _exchange(
        node,
        b"PUT /v1/kv/big HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n"
        b"Expect: 100-continue\r\n\r\n",
    )
    assert b"100 Continue" not in raw
    _assert_json_error(raw, 413, "request_too_large")


def test_an_unknown_expectation_is_417(node: LocalCluster) -> None:
    raw = _exchange(
        node, b"PUT /v1/kv/e HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nExpect: magic\r\n\r\nx"
    )
    _assert_json_error(raw, 417, "expectation_failed")


def test_a_body_that_stops_arriving_is_408(node: LocalCluster) -> None:
    started = time.monotonic()
    raw = _exchange(
        node, b"PUT /v1/kv/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc", timeout=10
    )
    _assert_json_error(raw, 408, "request_timeout")
    assert time.monotonic() - started < BODY_TIMEOUT + 3
    assert call("GET", _url(node) + "/v1/kv/slow").status == 404


def test_a_client_leaving_mid_body_is_handled_quietly(node: LocalCluster) -> None:
    with _connect(node) as sock:
        sock.sendall(b"PUT /v1/kv/gone HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
        time.sleep(0.3)
    time.sleep(0.5)
    assert call("GET", _url(node) + "/v1/kv/gone").status == 404
    log = _node_log(node)
    assert "Traceback" not in log
    assert "unhandled error" not in log


# -- slow, idle and too many connections ------------------------------------


def test_a_client_dribbling_its_request_head_is_cut_off(node: LocalCluster) -> None:
    started = time.monotonic()
    with _connect(node) as sock:
        raw = b""
        sock.settimeout(0.25)
        for byte in b"GET /v1/status HTTP/1.1\r\nHost: x\r\n":
            try:
                sock.sendall(bytes([byte]))
                raw += sock.recv(65536)
            except socket.timeout:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
            if raw:
                break
        raw += _read_all(sock, 2.0)
    elapsed = time.monotonic() - started
    _assert_json_error(raw, 408, "request_timeout")
    # Cut off by the head deadline, well before the idle timeout would be.
    assert elapsed < HEAD_TIMEOUT + 1.0, elapsed


def test_a_second_request_head_dribbled_on_a_keep_alive_connection_is_cut_off(
    node: LocalCluster,
) -> None:
    with _connect(node) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(5)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHo")
        raw = _read_all(sock, HEAD_TIMEOUT + 3)
    _assert_json_error(raw, 408, "request_timeout")
    assert time.monotonic() - started < HEAD_TIMEOUT + 1.0


def test_a_body_slower_than_the_head_deadline_is_not_cut_off(node: LocalCluster) -> None:
    # The head deadline covers the head only: a body may take up to the body
    # deadline (BODY_TIMEOUT > HEAD_TIMEOUT here).
    with _connect(node) as sock:
        sock.sendall(b"PUT /v1/kv/slowbody HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nabc")
        time.sleep(HEAD_TIMEOUT + 0.3)
        sock.sendall(b"def")
        raw = _read_all(sock, 3)
    assert _parse(raw)[0] == 200, raw
    assert call("GET", _url(node) + "/v1/kv/slowbody").body == b"abcdef"


def test_an_idle_connection_is_closed(node: LocalCluster) -> None:
    started = time.monotonic()
    with _connect(node) as sock:
        assert _read_all(sock, IDLE_TIMEOUT + 3) == b""
    elapsed = time.monotonic() - started
    assert IDLE_TIMEOUT - 0.5 <= elapsed < IDLE_TIMEOUT + 2.5, elapsed


def test_an_idle_keep_alive_connection_is_closed_after_its_request(node: LocalCluster) -> None:
    with _connect(node) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        started = time.monotonic()
        raw = _read_all(sock, IDLE_TIMEOUT + 3)
    elapsed = time.monotonic() - started
    assert _parse(raw)[0] == 200
    assert IDLE_TIMEOUT - 0.5 <= elapsed < IDLE_TIMEOUT + 2.5, elapsed


def test_connections_beyond_the_cap_get_503_and_are_closed(node: LocalCluster) -> None:
    held = [_connect(node) for _ in range(MAX_CONNECTIONS)]
    try:
        # Each held connection has been accepted once it answers a request.
        for sock in held:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.settimeout(5)
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        raw = _exchange(node, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        message = _assert_json_error(raw, 503, "too_many_connections")
        assert str(MAX_CONNECTIONS) in message
        assert _parse(raw)[1]["retry-after"] == "1"
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 5
    while call("GET", _url(node) + "/healthz").status != 200:
        assert time.monotonic() < deadline, "the node did not take connections again"
        time.sleep(0.1)


# -- list size -----------------------------------------------------------------


def test_a_list_stops_at_the_byte_cap_and_pages_through_everything(node: LocalCluster) -> None:
    keys = [f"big/{i}" for i in range(7)]
    for key in keys:
        assert call("PUT", _url(node) + f"/v1/kv/{key}", b"v" * 1000).status == 200
    seen: list[str] = []
    start_after = ""
    pages = 0
    while True:
        query = "prefix=big/" + (f"&start_after={start_after}" if start_after else "")
        page = call("GET", _url(node) + f"/v1/kv?{query}").json()
        pages += 1
        assert 1 <= len(page["kvs"]) <= 3  # 3 x 1000-byte values pass 2500 bytes
        seen += [kv["key"] for kv in page["kvs"]]
        if not page["more"]:
            break
        start_after = seen[-1]
    assert seen == keys
    assert pages == 3
    # Keys only: the keys are small, so one page holds them all.
    keys_only = call("GET", _url(node) + "/v1/kv?prefix=big/&keys_only=true").json()
    assert [kv["key"] for kv in keys_only["kvs"]] == keys and keys_only["more"] is False


def test_a_single_value_over_the_list_cap_is_still_listed(node: LocalCluster) -> None:
    assert call("PUT", _url(node) + "/v1/kv/huge/1", b"h" * 5000).status == 200
    assert call("PUT", _url(node) + "/v1/kv/huge/2", b"h").status == 200
    page = call("GET", _url(node) + "/v1/kv?prefix=huge/").json()
    assert [kv["key"] for kv in page["kvs"]] == ["huge/1"] and page["more"] is True


def test_the_count_limit_and_byte_cap_combine(node: LocalCluster) -> None:
    page = call("GET", _url(node) + "/v1/kv?prefix=big/&keys_only=true&limit=2").json()
    assert [kv["key"] for kv in page["kvs"]] == ["big/0", "big/1"] and page["more"] is True
