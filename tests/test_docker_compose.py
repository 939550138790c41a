"""docker-compose.yml cannot run here (no Docker engine), so check what can be
checked: every node service's command and environment make a valid node
configuration for our own CLI, and the cluster they describe is consistent."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from raftkv import cli

ROOT = Path(__file__).resolve().parent.parent


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def node_services() -> dict[str, dict]:
    """The services that run raftkv nodes: our image, not behind a profile."""
    return {
        name: svc
        for name, svc in compose()["services"].items()
        if svc.get("image") == "raftkv:latest" and "profiles" not in svc and svc.get("command") == ["raftkv", "serve"]
    }


def test_nodes_form_one_cluster_with_distinct_published_ports() -> None:
    services = node_services()
    assert set(services) == {"n1", "n2", "n3"}
    published = [svc["ports"][0].split(":") for svc in services.values()]
    # the API has no authentication: publish on the host's loopback only
    assert [host for host, _, _ in published] == ["127.0.0.1"] * 3
    assert sorted(port for _, port, _ in published) == ["7001", "7002", "7003"]
    peers = {svc["environment"]["RAFTKV_PEERS"] for svc in services.values()}
    assert len(peers) == 1, "every node must describe the same membership"
    for name, svc in services.items():
        assert svc["environment"]["RAFTKV_ID"] == name
        assert svc["hostname"] == name
        assert svc["volumes"][0].endswith(":/data")


def make_compose_certs(target: Path) -> None:
    """Run the `certs` service's own shell command, with its volume mapped to ``target``."""
    svc = compose()["services"]["certs"]
    assert svc["entrypoint"] == ["sh", "-c"]
    assert svc["volumes"] == ["certs:/certs"]
    # Compose turns $$ into $ before the shell sees the command.
    script = svc["command"][0].replace("$$", "$").replace("/certs", str(target))
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    subprocess.run(["sh", "-c", script], check=True, env=env, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def compose_certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("compose-certs")
    make_compose_certs(target)
    return target


def test_certs_service_runs_once_and_nodes_wait_for_it(compose_certs: Path) -> None:
    names = {p.name for p in compose_certs.iterdir()}
    assert {"ca.pem", "ca-key.pem", "n1.pem", "n1-key.pem", "n2.pem", "n3-key.pem"} <= names
    before = (compose_certs / "ca.pem").read_bytes()
    make_compose_certs(compose_certs)  # a later `up`: keeps the CA it has
    assert (compose_certs / "ca.pem").read_bytes() == before
    for name, svc in node_services().items():
        assert svc["depends_on"]["certs"]["condition"] == "service_completed_successfully"
        assert "certs:/certs:ro" in svc["volumes"]
        assert "RAFTKV_INSECURE_PEERS" not in svc["environment"], "peers use mutual TLS"


@pytest.mark.parametrize("name", ["n1", "n2", "n3"])
def test_node_command_and_environment_parse_as_a_valid_node(
    name: str, monkeypatch: pytest.MonkeyPatch, compose_certs: Path
) -> None:
    svc = node_services()[name]
    for key, value in svc["environment"].items():
        monkeypatch.setenv(key, str(value).replace("/certs/", f"{compose_certs}/"))
    argv = svc["command"]
    assert argv[0] == "raftkv"
    args = cli.build_parser().parse_args(argv[1:])
    config = cli.config_from_args(args)
    assert config.node_id == name
    assert config.engine == "native"
    assert set(config.peers) == {"n1", "n2", "n3"}
    assert config.peers[name].endswith(":7101") and config.peer_addr.endswith(":7101")
    port = svc["ports"][0].split(":")[2]
    assert config.client_addr.endswith(f":{port}")
    healthcheck = " ".join(svc["healthcheck"]["test"])
    assert f"127.0.0.1:{port}/readyz" in healthcheck


def test_dockerfile_puts_toxiproxy_server_on_path_and_installs_the_package() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "/usr/local/bin/toxiproxy-server" in dockerfile
    assert "pip install" in dockerfile
    assert ".[harness]" in dockerfile, "the image runs jepsen_style, which needs the harness extra"
    for path in ("raftkv", "jepsen_style", "pyproject.toml"):
        assert f"COPY {path}" in dockerfile or f" {path} " in dockerfile


def test_prometheus_scrapes_every_node_with_the_shipped_rules_on_loopback_only() -> None:
    services = compose()["services"]
    prometheus = services["prometheus"]
    assert "profiles" not in prometheus, "it runs with the cluster"
    assert prometheus["image"].startswith("prom/prometheus:")
    assert prometheus["ports"] == ["127.0.0.1:9090:9090"]
    mounts = {}
    for volume in prometheus["volumes"]:
        source, target = volume.split(":")[:2]
        mounts[target] = source
    command = " ".join(prometheus["command"])
    config_path = next(arg.split("=", 1)[1] for arg in prometheus["command"] if arg.startswith("--config.file="))
    assert mounts[config_path] == "./docs/monitoring/prometheus.yml"
    assert "--storage.tsdb.path=/prometheus" in command and "/prometheus" in mounts
    assert set(prometheus["depends_on"]) == set(node_services())

    config = yaml.safe_load((ROOT / "docs/monitoring/prometheus.yml").read_text())
    [job] = [job for job in config["scrape_configs"] if job["job_name"] == "raftkv"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = [t for group in job["static_configs"] for t in group["targets"]]
    # each node's HTTP address on the compose network: its hostname and the port it listens on
    expected = []
    for name, svc in node_services().items():
        listen_port = svc["environment"]["RAFTKV_LISTEN"].rsplit(":", 1)[1]
        expected.append(f"{svc['hostname']}:{listen_port}")
    assert sorted(targets) == sorted(expected)
    # the rule files Prometheus loads are the ones mounted from docs/monitoring/
    for rule_file in config["rule_files"]:
        assert mounts[rule_file].startswith("./docs/monitoring/")
        assert (ROOT / mounts[rule_file]).is_file()
    assert mounts["/etc/prometheus/alerts.yml"] == "./docs/monitoring/alerts.yml"
