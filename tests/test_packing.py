"""raftkv.kv.packing: the reused per-thread Packer encodes exactly as packb."""

from __future__ import annotations

import threading

import msgpack
import pytest

from raftkv.kv import packing

SAMPLES = [
    {"op": "put", "key": "a/b", "value": b"\x00\xff", "lease": 7},
    ["k", None, 0, 0],
    [2**63 - 1, -(2**63), 1.5, True, "é", b""],
    {"op": "txn", "compare": [], "success": [{"op": "get", "key": "x"}] * 50},
]


@pytest.mark.parametrize("value", SAMPLES)
def test_pack_is_packb(value: object) -> None:
    assert packing.pack(value) == msgpack.packb(value, use_bin_type=True)


def test_a_failed_pack_leaves_the_next_one_clean() -> None:
    for bad in ([1, object()], {"n": 2**70}):
        with pytest.raises((TypeError, OverflowError)):
            packing.pack(bad)
        assert packing.pack(SAMPLES[0]) == msgpack.packb(SAMPLES[0], use_bin_type=True)


def test_threads_do_not_mix_their_output() -> None:
    errors: list[str] = []

    def work(n: int) -> None:
        value = {"op": "put", "key": f"t{n}", "value": bytes([n]) * (n * 100)}
        expected = msgpack.packb(value, use_bin_type=True)
        for _ in range(2000):
            if packing.pack(value) != expected:
                errors.append(f"thread {n}")
                return

    threads = [threading.Thread(target=work, args=(n,)) for n in range(1, 5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
