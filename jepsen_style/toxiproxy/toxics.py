"""Toxic definitions: validating their JSON and the arithmetic of their effects.

Pure logic only: no sockets, no clocks. Randomness comes in as a
``random.Random`` so callers (and tests) control the seed.

Stream names follow Toxiproxy: ``upstream`` is client -> server bytes,
``downstream`` is server -> client bytes.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Literal, Mapping, cast

from .errors import bad_request, invalid_stream, invalid_toxic_type

Stream = Literal["upstream", "downstream"]
STREAMS: tuple[Stream, ...] = ("upstream", "downstream")

# Every attribute a toxic type accepts, with its default. All are
# non-negative integers (milliseconds, bytes, KB/s or microseconds).
TOXIC_ATTRIBUTE_DEFAULTS: dict[str, dict[str, int]] = {
    "latency": {"latency": 0, "jitter": 0},  # ms
    "bandwidth": {"rate": 0},  # KB/s (1 KB = 1000 bytes); 0 = unlimited
    "timeout": {"timeout": 0},  # ms; 0 = hold forever
    "reset_peer": {"timeout": 0},  # ms
    "limit_data": {"bytes": 0},
    "slicer": {"average_size": 0, "size_variation": 0, "delay": 0},  # bytes, bytes, us
    "slow_close": {"delay": 0},  # ms
}


@dataclass(frozen=True)
class ToxicSpec:
    """One toxic as configured through the API."""

    name: str
    type: str
    stream: Stream
    toxicity: float
    attributes: Mapping[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "type": self.type,
            "stream": self.stream,
            "toxicity": self.toxicity,
            "attributes": dict(self.attributes),
        }


def parse_new_toxic(body: object) -> ToxicSpec:
    """Validate the JSON body of ``POST /proxies/{proxy}/toxics``."""
    if not isinstance(body, dict):
        raise bad_request("a toxic must be a JSON object")
    toxic_type = body.get("type")
    if not isinstance(toxic_type, str) or toxic_type not in TOXIC_ATTRIBUTE_DEFAULTS:
        raise invalid_toxic_type(toxic_type)
    stream = body.get("stream", "downstream")
    if stream not in STREAMS:
        raise invalid_stream(stream)
    name = body.get("name")
    if name is None or name == "":
        name = f"{toxic_type}_{stream}"
    if not isinstance(name, str):
        raise bad_request(f"toxic name must be a string, got {name!r}")
    toxicity = _parse_toxicity(body.get("toxicity", 1.0))
    attributes = _parse_attributes(
        toxic_type, body.get("attributes", {}), TOXIC_ATTRIBUTE_DEFAULTS[toxic_type]
    )
    return ToxicSpec(name, toxic_type, cast(Stream, stream), toxicity, attributes)


def parse_toxic_update(current: ToxicSpec, body: object) -> ToxicSpec:
    """Apply the JSON body of ``POST /proxies/{proxy}/toxics/{toxic}``.

    Given attributes replace the current ones, the rest stay. Name, type and
    stream cannot change (delete and re-add instead); saying so beats
    silently ignoring the request.
    """
    if not isinstance(body, dict):
        raise bad_request("a toxic update must be a JSON object")
    for fixed in ("name", "type", "stream"):
        if fixed in body and body[fixed] != getattr(current, fixed):
            raise bad_request(
                f"a toxic's {fixed} cannot be changed (is {getattr(current, fixed)!r}, "
                f"got {body[fixed]!r}); remove it and add a new one"
            )
    toxicity = _parse_toxicity(body.get("toxicity", current.toxicity))
    attributes = _parse_attributes(
        current.type, body.get("attributes", {}), dict(current.attributes)
    )
    return ToxicSpec(current.name, current.type, current.stream, toxicity, attributes)


def _parse_toxicity(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad_request(f"toxicity must be a number from 0 to 1, got {value!r}")
    if not 0.0 <= value <= 1.0 or math.isnan(value):
        raise bad_request(f"toxicity must be a number from 0 to 1, got {value!r}")
    return float(value)


def _parse_attributes(
    toxic_type: str, given: object, base: dict[str, int]
) -> dict[str, int]:
    if not isinstance(given, dict):
        raise bad_request(f"attributes must be a JSON object, got {given!r}")
    allowed = TOXIC_ATTRIBUTE_DEFAULTS[toxic_type]
    result = dict(base)
    for key, value in given.items():
        # Toxiproxy ignores unknown attributes; we refuse them because a
        # misspelt attribute would otherwise silently inject no fault at all.
        if key not in allowed:
            raise bad_request(
                f"unknown attribute {key!r} for toxic type {toxic_type!r} "
                f"(known: {', '.join(sorted(allowed))})"
            )
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise bad_request(
                f"attribute {key!r} must be a non-negative integer, got {value!r}"
            )
        result[key] = value
    if toxic_type == "slicer":
        _check_slicer(result)
    return result


def _check_slicer(attributes: Mapping[str, int]) -> None:
    if attributes["average_size"] < 1:
        raise bad_request("slicer needs average_size >= 1")
    if attributes["size_variation"] >= attributes["average_size"]:
        raise bad_request("slicer needs size_variation < average_size")


def toxic_applies(toxicity: float, rng: random.Random) -> bool:
    """Whether a toxic affects one connection's link (decided once per link)."""
    return toxicity >= 1.0 or rng.random() < toxicity


def latency_delay_s(attributes: Mapping[str, int], rng: random.Random) -> float:
    """Delay for one chunk: ``latency`` +/- a uniform ``jitter``, never negative."""
    latency = attributes["latency"]
    jitter = attributes["jitter"]
    offset = rng.uniform(-jitter, jitter) if jitter else 0.0
    return max(0.0, latency + offset) / 1000.0


def bandwidth_delay_s(nbytes: int, rate_kb_per_s: int) -> float:
    """Time ``nbytes`` take at ``rate_kb_per_s``; 0 when the rate is unlimited."""
    if rate_kb_per_s <= 0:
        return 0.0
    return nbytes / (rate_kb_per_s * 1000.0)


def bandwidth_piece_size(rate_kb_per_s: int) -> int:
    """Bytes per write under a bandwidth limit: about 100 ms worth, so the
    flow stays smooth instead of one big burst followed by a long pause."""
    return max(1, rate_kb_per_s * 100)


def slice_sizes(
    total: int, average_size: int, size_variation: int, rng: random.Random
) -> list[int]:
    """Split ``total`` bytes into pieces of ``average_size`` +/- ``size_variation``."""
    sizes: list[int] = []
    remaining = total
    while remaining > 0:
        size = average_size
        if size_variation:
            size += rng.randint(-size_variation, size_variation)
        size = max(1, min(size, remaining))
        sizes.append(size)
        remaining -= size
    return sizes


def split_by_sizes(data: bytes, sizes: list[int]) -> list[bytes]:
    pieces: list[bytes] = []
    start = 0
    for size in sizes:
        pieces.append(data[start : start + size])
        start += size
    return pieces


def limit_data_allowance(limit: int, already_passed: int) -> int:
    """How many more bytes a ``limit_data`` toxic lets through."""
    return max(0, limit - already_passed)


def holds_data(spec: ToxicSpec) -> bool:
    """Toxics that stop the flow entirely while present."""
    return spec.type == "timeout"

