"""The replicated state machine the simulated clients talk to: registers
with put and compare-and-set, deduplicating requests by id (as the real
KV does with idempotency keys) so a duplicated proposal applies once."""

from __future__ import annotations

from typing import Any

import msgpack


def encode_command(req_id: int, op: str, key: str, arg: Any) -> bytes:
    return msgpack.packb((req_id, op, key, arg))


def decode_command(data: bytes) -> tuple[int, str, str, Any]:
    req_id, op, key, arg = msgpack.unpackb(data)
    if isinstance(arg, list):
        arg = tuple(arg)
    return req_id, op, key, arg


class RegisterKV:
    def __init__(self) -> None:
        self.values: dict[str, int] = {}
        self.results: dict[int, Any] = {}

    def apply(self, data: bytes) -> tuple[int, Any] | None:
        """Apply one command; returns (req_id, result), None for empty entries."""
        if not data:
            return None
        req_id, op, key, arg = decode_command(data)
        if req_id in self.results:
            return req_id, self.results[req_id]
        if op == "put":
            self.values[key] = arg
            result: Any = None
        elif op == "cas":
            expected, new = arg
            result = self.values.get(key) == expected
            if result:
                self.values[key] = new
        else:
            raise AssertionError(f"unknown op {op!r}")
        self.results[req_id] = result
        return req_id, result

    def read(self, key: str) -> int | None:
        return self.values.get(key)

    def snapshot(self) -> bytes:
        return msgpack.packb((self.values, list(self.results.items())))

    def restore(self, data: bytes) -> None:
        values, results = msgpack.unpackb(data, strict_map_key=False)
        self.values = dict(values)
        self.results = {k: v for k, v in results}
