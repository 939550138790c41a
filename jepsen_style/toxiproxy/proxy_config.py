"""Validating proxy JSON (create, update, populate) and parsing addresses.

Pure logic only. Addresses are ``host:port`` strings as in Toxiproxy;
IPv6 hosts go in brackets (``[::1]:8080``) and an empty host means all
interfaces.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .errors import bad_request, missing_field


@dataclass(frozen=True)
class ProxyConfig:
    name: str
    listen: str
    upstream: str
    enabled: bool = True

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "listen": self.listen,
            "upstream": self.upstream,
            "enabled": self.enabled,
        }


def parse_host_port(address: str, field_name: str) -> tuple[str, int]:
    """Split ``host:port``; raise a 400 ApiError naming the field if malformed."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit():
        raise bad_request(
            f"{field_name} must look like host:port, got {address!r}"
        )
    port = int(port_text)
    if port > 65535:
        raise bad_request(f"{field_name} port must be 0-65535, got {port}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, port


def parse_new_proxy(body: object) -> ProxyConfig:
    """Validate one proxy of ``POST /proxies`` or ``POST /populate``."""
    if not isinstance(body, dict):
        raise bad_request("a proxy must be a JSON object")
    name = _string_field(body, "name", required=True)
    upstream = _string_field(body, "upstream", required=True)
    listen = _string_field(body, "listen", required=False) or "127.0.0.1:0"
    enabled = _bool_field(body, "enabled", default=True)
    parse_host_port(listen, "listen")
    _check_upstream(upstream)
    return ProxyConfig(name=name, listen=listen, upstream=upstream, enabled=enabled)


def parse_proxy_update(current: ProxyConfig, body: object) -> ProxyConfig:
    """Apply ``POST /proxies/{proxy}``: absent fields keep their value."""
    if not isinstance(body, dict):
        raise bad_request("a proxy update must be a JSON object")
    if "name" in body and body["name"] != current.name:
        raise bad_request("a proxy's name cannot be changed; delete and re-create it")
    listen = _string_field(body, "listen", required=False) or current.listen
    upstream = _string_field(body, "upstream", required=False) or current.upstream
    enabled = _bool_field(body, "enabled", default=current.enabled)
    parse_host_port(listen, "listen")
    _check_upstream(upstream)
    return replace(current, listen=listen, upstream=upstream, enabled=enabled)


def parse_populate(body: object) -> list[ProxyConfig]:
    """Validate every proxy of ``POST /populate`` before any is applied."""
    if not isinstance(body, list):
        raise bad_request("populate takes a JSON array of proxies")
    configs = [parse_new_proxy(item) for item in body]
    seen: set[str] = set()
    for config in configs:
        if config.name in seen:
            raise bad_request(f"proxy {config.name!r} appears twice in populate")
        seen.add(config.name)
    return configs


def _string_field(body: dict[str, object], key: str, *, required: bool) -> str:
    value = body.get(key)
    if value is None or value == "":
        if required:
            raise missing_field(key)
        return ""
    if not isinstance(value, str):
        raise bad_request(f"{key} must be a string, got {value!r}")
    return value


def _bool_field(body: dict[str, object], key: str, *, default: bool) -> bool:
    value = body.get(key, default)
    if not isinstance(value, bool):
        raise bad_request(f"{key} must be true or false, got {value!r}")
    return value


def _check_upstream(upstream: str) -> None:
    _, port = parse_host_port(upstream, "upstream")
    if port == 0:
        raise bad_request(f"upstream port must not be 0, got {upstream!r}")
