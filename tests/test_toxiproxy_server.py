"""Toxiproxy-compatible server: driven through the real toxiproxy-python
client and raw HTTP, with real sockets on 127.0.0.1.

Client-level tests run against every available server: ours always, the
real ``toxiproxy-server`` when it is on PATH.
"""

from __future__ import annotations

import random
import socket
import socketserver
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from toxiproxy import Toxiproxy
from toxiproxy.exceptions import InvalidToxic, NotFound

from jepsen_style.toxiproxy import start_toxiproxy
from jepsen_style.toxiproxy.errors import ApiError
from jepsen_style.toxiproxy.launcher import ToxiproxyProcess, ToxiproxyStartError, real_server_path
from jepsen_style.toxiproxy.proxy_config import (
    ProxyConfig,
    parse_host_port,
    parse_new_proxy,
    parse_populate,
    parse_proxy_update,
)
from jepsen_style.toxiproxy.toxics import (
    bandwidth_delay_s,
    latency_delay_s,
    limit_data_allowance,
    parse_new_toxic,
    parse_toxic_update,
    slice_sizes,
    toxic_applies,
)

pytestmark = pytest.mark.timeout(60)

REPO_ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- fixtures


class _EchoHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


class _EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@pytest.fixture(scope="module")
def echo_address() -> Iterator[str]:
    server = _EchoServer(("127.0.0.1", 0), _EchoHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture(scope="module", params=["python", "real"])
def toxiproxy_server(request: pytest.FixtureRequest) -> Iterator[ToxiproxyProcess]:
    if request.param == "real" and real_server_path() is None:
        pytest.skip("toxiproxy-server is not on PATH")
    with start_toxiproxy(implementation=request.param) as server:
        yield server


@pytest.fixture
def client(toxiproxy_server: ToxiproxyProcess) -> Iterator[Toxiproxy]:
    toxiproxy = Toxiproxy()
    # The client keeps host and port in class attributes: point it at this
    # test's server every time.
    toxiproxy.update_api_consumer(toxiproxy_server.host, toxiproxy_server.port)
    yield toxiproxy
    toxiproxy.destroy_all()


@pytest.fixture
def python_only(toxiproxy_server: ToxiproxyProcess) -> None:
    if toxiproxy_server.implementation != "python":
        pytest.skip("behaviour specific to our server")


def connect(listen: str, timeout: float = 3.0) -> socket.socket:
    host, port = parse_host_port(listen, "listen")
    return socket.create_connection((host, port), timeout=timeout)


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def round_trip(sock: socket.socket, payload: bytes) -> bytes:
    sock.sendall(payload)
    return recv_exactly(sock, len(payload))


def assert_cut(sock: socket.socket) -> None:
    """The peer closed or reset the connection (not merely went silent)."""
    sock.settimeout(3.0)
    try:
        assert sock.recv(100) == b""
    except ConnectionResetError:
        pass


# ---------------------------------------------------------------- proxying


def test_proxy_passes_bytes_both_ways(client: Toxiproxy, echo_address: str) -> None:
    proxy = client.create(upstream=echo_address, name="echo")
    assert not proxy.listen.endswith(":0")
    assert client.get_proxy("echo").upstream == echo_address
    payload = random.Random(1).randbytes(200_000)
    with connect(proxy.listen) as sock:
        assert round_trip(sock, payload) == payload


def test_latency_toxic_delays_existing_connection(
    client: Toxiproxy, echo_address: str
) -> None:
    proxy = client.create(upstream=echo_address, name="slow")
    with connect(proxy.listen) as sock:
        started = time.monotonic()
        assert round_trip(sock, b"fast") == b"fast"
        assert time.monotonic() - started < 0.2
        proxy.add_toxic(type="latency", attributes={"latency": 300})
        started = time.monotonic()
        assert round_trip(sock, b"slow") == b"slow"
        assert time.monotonic() - started >= 0.27
    toxic = proxy.get_toxic("latency_downstream")
    assert toxic is not None
    assert (toxic.type, toxic.stream, toxic.toxicity) == ("latency", "downstream", 1.0)
    assert toxic.attributes["latency"] == 300


def test_latency_with_zero_toxicity_never_applies(
    client: Toxiproxy, echo_address: str
) -> None:
    proxy = client.create(upstream=echo_address, name="lucky")
    proxy.add_toxic(type="latency", toxicity=0.0, attributes={"latency": 1000})
    with connect(proxy.listen) as sock:
        started = time.monotonic()
        assert round_trip(sock, b"ping") == b"ping"
        assert time.monotonic() - started < 0.5


def test_timeout_toxic_stops_data_and_removal_closes(
    client: Toxiproxy, echo_address: str
) -> None:
    proxy = client.create(upstream=echo_address, name="stalled")
    proxy.add_toxic(type="timeout", stream="upstream", attributes={"timeout": 0})
    with connect(proxy.listen) as sock:
        sock.settimeout(0.5)
        sock.sendall(b"lost")
        with pytest.raises(socket.timeout):
            sock.recv(100)
        proxy.destroy_toxic("timeout_upstream")
        assert_cut(sock)


def test_timeout_toxic_closes_after_its_timeout(
    client: Toxiproxy, echo_address: str
) -> None:
    proxy = client.create(upstream=echo_address, name="timeout_close")
    proxy.add_toxic(type="timeout", attributes={"timeout": 300})
    with connect(proxy.listen) as sock:
        started = time.monotonic()
        assert_cut(sock)
        assert 0.25 <= time.monotonic() - started < 2.5


def test_reset_peer_makes_client_see_reset(client: Toxiproxy, echo_address: str) -> None:
    proxy = client.create(upstream=echo_address, name="rst")
    proxy.add_toxic(type="reset_peer", attributes={"timeout": 0})
    with connect(proxy.listen) as sock:
        sock.sendall(b"hello")
        with pytest.raises(ConnectionResetError):
            sock.recv(100)
            sock.recv(100)  # in case the first read raced the reset


def test_bandwidth_limits_throughput(client: Toxiproxy, echo_address: str) -> None:
    proxy = client.create(upstream=echo_address, name="narrow")
    proxy.add_toxic(type="bandwidth", attributes={"rate": 50})  # 50 KB/s
    payload = bytes(40_000)  # 0.8 s at 50 KB/s
    with connect(proxy.listen, timeout=10) as sock:
        started = time.monotonic()
        assert round_trip(sock, payload) == payload
        elapsed = time.monotonic() - started
    assert elapsed >= 0.7, elapsed


def test_limit_data_closes_after_byte_budget(client: Toxiproxy, echo_address: str) -> None:
    proxy = client.create(upstream=echo_address, name="budget")
    proxy.add_toxic(type="limit_data", attributes={"bytes": 10})
    with connect(proxy.listen) as sock:
        sock.sendall(b"0123456789abcdefghij")
        assert recv_exactly(sock, 20) == b"0123456789"


def test_slicer_keeps_data_intact(client: Toxiproxy, echo_address: str) -> None:
    proxy = client.create(upstream=echo_address, name="sliced")
    proxy.add_toxic(
        type="slicer",
        attributes={"average_size": 100, "size_variation": 50, "delay": 100},
    )
    payload = random.Random(2).randbytes(5_000)
    with connect(proxy.listen) as sock:
        assert round_trip(sock, payload) == payload


def test_slow_close_delays_the_eof(client: Toxiproxy, echo_address: str) -> None:
    proxy = client.create(upstream=echo_address, name="lingering")
    proxy.add_toxic(type="slow_close", attributes={"delay": 300})
    with connect(proxy.listen) as sock:
        sock.sendall(b"bye")
        sock.shutdown(socket.SHUT_WR)
        assert recv_exactly(sock, 3) == b"bye"
        started = time.monotonic()
        assert sock.recv(10) == b""
        assert time.monotonic() - started >= 0.27


def test_disable_cuts_connections_and_refuses_then_enable_restores(
    client: Toxiproxy, echo_address: str
) -> None:
    proxy = client.create(upstream=echo_address, name="partition")
    with connect(proxy.listen) as before:
        assert round_trip(before, b"up") == b"up"
        with proxy.down():
            assert client.get_proxy("partition").enabled is False
            assert_cut(before)
            with pytest.raises(ConnectionRefusedError):
                connect(proxy.listen)
    assert client.get_proxy("partition").enabled is True
    with connect(proxy.listen) as after:
        assert round_trip(after, b"back") == b"back"


def test_delete_removes_proxy_and_listener(client: Toxiproxy, echo_address: str) -> None:
    proxy = client.create(upstream=echo_address, name="doomed")
    with connect(proxy.listen) as sock:
        assert proxy.destroy()
        assert_cut(sock)
    assert client.get_proxy("doomed") is None
    with pytest.raises(ConnectionRefusedError):
        connect(proxy.listen)


def test_reset_enables_all_and_removes_toxics(
    client: Toxiproxy, echo_address: str
) -> None:
    proxy = client.create(upstream=echo_address, name="messy")
    proxy.add_toxic(type="latency", attributes={"latency": 1000})
    proxy.disable()
    assert client.reset()
    restored = client.get_proxy("messy")
    assert restored.enabled is True
    assert proxy.toxics() == {}
    with connect(proxy.listen) as sock:
        started = time.monotonic()
        assert round_trip(sock, b"clean") == b"clean"
        assert time.monotonic() - started < 0.5


def test_unreachable_upstream_drops_client(client: Toxiproxy) -> None:
    proxy = client.create(upstream=f"127.0.0.1:{_free_port()}", name="nowhere")
    with connect(proxy.listen) as sock:
        assert_cut(sock)


def test_half_close_is_passed_on(client: Toxiproxy, echo_address: str) -> None:
    proxy = client.create(upstream=echo_address, name="halfclose")
    with connect(proxy.listen) as sock:
        sock.sendall(b"last words")
        sock.shutdown(socket.SHUT_WR)
        # The echo server sees EOF only if the proxy forwarded the FIN.
        assert recv_exactly(sock, 100) == b"last words"


def test_changing_listen_moves_the_proxy(
    toxiproxy_server: ToxiproxyProcess, client: Toxiproxy, echo_address: str
) -> None:
    proxy = client.create(upstream=echo_address, name="mover")
    new_listen = f"127.0.0.1:{_free_port()}"
    reply = requests.post(f"{toxiproxy_server.url}/proxies/mover", json={"listen": new_listen})
    assert reply.status_code == 200 and reply.json()["listen"] == new_listen
    with pytest.raises(ConnectionRefusedError):
        connect(proxy.listen)
    with connect(new_listen) as sock:
        assert round_trip(sock, b"moved") == b"moved"


def test_proxy_created_disabled_listens_only_once_enabled(
    client: Toxiproxy, echo_address: str
) -> None:
    listen = f"127.0.0.1:{_free_port()}"
    proxy = client.create(upstream=echo_address, name="dormant", listen=listen, enabled=False)
    assert proxy.enabled is False
    with pytest.raises(ConnectionRefusedError):
        connect(listen)
    proxy.enable()
    with connect(listen) as sock:
        assert round_trip(sock, b"awake") == b"awake"


# ---------------------------------------------------------------- HTTP API


def test_toxic_update_and_show(toxiproxy_server: ToxiproxyProcess, client: Toxiproxy,
                               echo_address: str) -> None:
    proxy = client.create(upstream=echo_address, name="tune")
    proxy.add_toxic(type="latency", name="lag", attributes={"latency": 10, "jitter": 5})
    url = f"{toxiproxy_server.url}/proxies/tune/toxics/lag"
    reply = requests.post(url, json={"attributes": {"latency": 20}, "toxicity": 0.5})
    assert reply.status_code == 200
    shown = requests.get(url).json()
    assert shown["attributes"] == {"latency": 20, "jitter": 5}
    assert shown["toxicity"] == 0.5
    whole = requests.get(f"{toxiproxy_server.url}/proxies/tune").json()
    assert [toxic["name"] for toxic in whole["toxics"]] == ["lag"]


def test_version_answers(toxiproxy_server: ToxiproxyProcess, client: Toxiproxy) -> None:
    assert b"version" in client.version()


def test_populate_creates_and_keeps_matching(
    toxiproxy_server: ToxiproxyProcess, client: Toxiproxy, echo_address: str
) -> None:
    port = _free_port()
    body = [{"name": "pop", "listen": f"127.0.0.1:{port}", "upstream": echo_address}]
    first = requests.post(f"{toxiproxy_server.url}/populate", json=body)
    assert first.status_code == 201
    assert [p["name"] for p in first.json()["proxies"]] == ["pop"]
    with connect(f"127.0.0.1:{port}") as sock:
        again = requests.post(f"{toxiproxy_server.url}/populate", json=body)
        assert again.status_code == 201
        # Same addresses: the proxy (and this open connection) is kept.
        assert round_trip(sock, b"still") == b"still"


def _error_of(reply: requests.Response, status: int) -> str:
    assert reply.status_code == status, reply.text
    body = reply.json()
    assert body["status"] == status
    assert isinstance(body["error"], str) and body["error"]
    return body["error"]


def test_unknown_proxy_and_toxic_are_404(
    toxiproxy_server: ToxiproxyProcess, client: Toxiproxy, echo_address: str
) -> None:
    base = toxiproxy_server.url
    _error_of(requests.get(f"{base}/proxies/missing"), 404)
    _error_of(requests.post(f"{base}/proxies/missing", json={"enabled": False}), 404)
    _error_of(requests.delete(f"{base}/proxies/missing"), 404)
    _error_of(requests.get(f"{base}/proxies/missing/toxics"), 404)
    proxy = client.create(upstream=echo_address, name="present")
    _error_of(requests.get(f"{base}/proxies/present/toxics/missing"), 404)
    _error_of(requests.delete(f"{base}/proxies/present/toxics/missing"), 404)
    with pytest.raises(NotFound):
        proxy.destroy_toxic("missing")


def test_duplicates_are_409(
    toxiproxy_server: ToxiproxyProcess, client: Toxiproxy, echo_address: str
) -> None:
    base = toxiproxy_server.url
    proxy = client.create(upstream=echo_address, name="twin")
    _error_of(requests.post(f"{base}/proxies", json={"name": "twin", "upstream": echo_address}), 409)
    proxy.add_toxic(type="latency", name="lag", attributes={"latency": 1})
    _error_of(requests.post(f"{base}/proxies/twin/toxics", json={"name": "lag", "type": "latency"}), 409)
    assert len(proxy.toxics()) == 1


def test_bad_input_is_400_and_changes_nothing(
    toxiproxy_server: ToxiproxyProcess, client: Toxiproxy, echo_address: str
) -> None:
    base = toxiproxy_server.url
    _error_of(requests.post(f"{base}/proxies", data=b"{not json"), 400)
    _error_of(requests.post(f"{base}/proxies", json={"name": "nameless-upstream"}), 400)
    _error_of(requests.post(f"{base}/proxies", json={"upstream": echo_address}), 400)
    proxy = client.create(upstream=echo_address, name="strict")
    with pytest.raises(InvalidToxic):
        proxy.add_toxic(type="no_such_toxic")
    _error_of(requests.post(f"{base}/proxies/strict/toxics", json={"type": "latency", "stream": "sideways"}), 400)
    _error_of(requests.post(f"{base}/proxies/strict/toxics", data=b"[1,"), 400)
    _error_of(requests.post(f"{base}/proxies/strict", data=b"nope"), 400)
    assert proxy.toxics() == {}
    assert set(client.proxies()) == {"strict"}
    assert client.get_proxy("strict").enabled is True


def test_listen_on_busy_port_is_500(
    toxiproxy_server: ToxiproxyProcess, client: Toxiproxy, echo_address: str
) -> None:
    reply = requests.post(
        f"{toxiproxy_server.url}/proxies",
        json={"name": "clash", "listen": echo_address, "upstream": echo_address},
    )
    _error_of(reply, 500)
    assert client.get_proxy("clash") is None


def test_our_server_rejects_what_real_toxiproxy_would_ignore(
    python_only: None, toxiproxy_server: ToxiproxyProcess, client: Toxiproxy,
    echo_address: str,
) -> None:
    base = toxiproxy_server.url
    client.create(upstream=echo_address, name="typo")
    message = _error_of(requests.post(f"{base}/proxies/typo/toxics", json={"type": "latency", "attributes": {"latancy": 5}}), 400)
    assert "latancy" in message
    _error_of(requests.post(f"{base}/proxies/typo/toxics", json={"type": "latency", "attributes": {"latency": -5}}), 400)
    _error_of(requests.post(f"{base}/proxies/typo/toxics", json={"type": "latency", "toxicity": 2}), 400)
    _error_of(requests.post(f"{base}/proxies", json={"name": "x", "upstream": "no-port"}), 400)
    _error_of(requests.post(f"{base}/populate", json={"name": "not-a-list"}), 400)
    _error_of(requests.get(f"{base}/no/such/route"), 404)
    assert requests.get(f"{base}/proxies/typo/toxics").json() == []


# ---------------------------------------------------------------- launcher


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/version", timeout=1.0):
            return True
    except OSError:
        return False


def test_launcher_starts_and_stops_cleanly(echo_address: str) -> None:
    port = _free_port()
    with start_toxiproxy(port, implementation="python") as server:
        assert server.port == port and server.url == f"http://127.0.0.1:{port}"
        assert _answers(server.url)
        created = requests.post(f"{server.url}/proxies", json={"name": "p", "upstream": echo_address})
        listen = created.json()["listen"]
    assert server.process.returncode == 0
    assert not _answers(server.url)
    with pytest.raises(ConnectionRefusedError):
        connect(listen)
    server.stop()  # idempotent


def test_module_entry_point_creates_proxies_from_config(
    tmp_path: Path, echo_address: str
) -> None:
    listen = f"127.0.0.1:{_free_port()}"
    config = tmp_path / "proxies.json"
    config.write_text(f'[{{"name": "boot", "listen": "{listen}", "upstream": "{echo_address}"}}]')
    port = _free_port()
    command = [sys.executable, "-m", "jepsen_style.toxiproxy", "--port", str(port),
               "--config", str(config)]  # fmt: skip
    process = subprocess.Popen(command, stderr=subprocess.PIPE, cwd=REPO_ROOT)
    try:
        deadline = time.monotonic() + 15
        while not _answers(f"http://127.0.0.1:{port}"):
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        with connect(listen) as sock:
            assert round_trip(sock, b"booted") == b"booted"
    finally:
        process.terminate()
        process.communicate(timeout=10)
    assert process.returncode == 0


def test_module_entry_point_rejects_bad_config(tmp_path: Path) -> None:
    config = tmp_path / "proxies.json"
    config.write_text('[{"name": "no-upstream"}]')
    result = subprocess.run(
        [sys.executable, "-m", "jepsen_style.toxiproxy", "--port", str(_free_port()),
         "--config", str(config)],
        capture_output=True, timeout=30, cwd=REPO_ROOT,
    )  # fmt: skip
    assert result.returncode == 1
    assert b"missing required field: upstream" in result.stderr


def test_launcher_reports_a_server_that_cannot_start() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ToxiproxyStartError, match="did not start"):
            start_toxiproxy(port, implementation="python")


def test_launcher_refuses_real_when_absent() -> None:
    if real_server_path() is not None:
        pytest.skip("toxiproxy-server is installed")
    with pytest.raises(ToxiproxyStartError, match="not on PATH"):
        start_toxiproxy(implementation="real")


# ---------------------------------------------------------------- pure logic


def test_parse_new_toxic_fills_defaults() -> None:
    spec = parse_new_toxic({"type": "latency", "attributes": {"latency": 5}})
    assert spec.to_json() == {
        "name": "latency_downstream", "type": "latency", "stream": "downstream",
        "toxicity": 1.0, "attributes": {"latency": 5, "jitter": 0},
    }  # fmt: skip


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"type": "nope"},
        {"type": "latency", "stream": "both"},
        {"type": "latency", "name": 5},
        {"type": "latency", "toxicity": "high"},
        {"type": "latency", "toxicity": True},
        {"type": "latency", "attributes": []},
        {"type": "latency", "attributes": {"latency": 1.5}},
        {"type": "latency", "attributes": {"latency": True}},
        {"type": "slicer", "attributes": {"average_size": 0}},
        {"type": "slicer", "attributes": {"average_size": 4, "size_variation": 4}},
    ],
)
def test_parse_new_toxic_rejects(body: object) -> None:
    with pytest.raises(ApiError) as caught:
        parse_new_toxic(body)
    assert caught.value.status == 400


def test_parse_toxic_update_merges_and_guards_fixed_fields() -> None:
    spec = parse_new_toxic({"type": "latency", "attributes": {"latency": 5, "jitter": 2}})
    updated = parse_toxic_update(spec, {"attributes": {"latency": 9}})
    assert dict(updated.attributes) == {"latency": 9, "jitter": 2}
    for change in ({"stream": "upstream"}, {"type": "timeout"}, {"name": "other"}, "x"):
        with pytest.raises(ApiError):
            parse_toxic_update(spec, change)


def test_proxy_config_parsing() -> None:
    assert parse_host_port("[::1]:80", "listen") == ("::1", 80)
    assert parse_host_port(":8080", "listen") == ("", 8080)
    config = parse_new_proxy({"name": "a", "upstream": "127.0.0.1:1"})
    assert config == ProxyConfig("a", "127.0.0.1:0", "127.0.0.1:1", True)
    assert parse_proxy_update(config, {"enabled": False}).enabled is False
    bad_updates = [{"enabled": "no"}, {"name": "b"}, {"listen": "x"}, {"upstream": 3}]
    for update in bad_updates:
        with pytest.raises(ApiError):
            parse_proxy_update(config, update)
    for bad in ({"name": "a", "upstream": "h:0"}, {"name": "a", "upstream": "h:99999"}):
        with pytest.raises(ApiError):
            parse_new_proxy(bad)
    with pytest.raises(ApiError, match="twice"):
        parse_populate([{"name": "a", "upstream": "h:1"}] * 2)


def test_toxic_arithmetic() -> None:
    rng = random.Random(3)
    sizes = slice_sizes(1000, 30, 10, rng)
    assert sum(sizes) == 1000 and all(1 <= s <= 40 for s in sizes)
    delays = [latency_delay_s({"latency": 100, "jitter": 20}, rng) for _ in range(200)]
    assert all(0.08 <= d <= 0.12 for d in delays) and len(set(delays)) > 1
    assert latency_delay_s({"latency": 5, "jitter": 50}, rng) >= 0.0
    assert bandwidth_delay_s(50_000, 100) == pytest.approx(0.5)
    assert bandwidth_delay_s(50_000, 0) == 0.0
    assert limit_data_allowance(10, 4) == 6 and limit_data_allowance(10, 12) == 0
    assert not any(toxic_applies(0.0, rng) for _ in range(100))
    assert all(toxic_applies(1.0, rng) for _ in range(100))
    hits = sum(toxic_applies(0.5, rng) for _ in range(1000))
    assert 400 < hits < 600
