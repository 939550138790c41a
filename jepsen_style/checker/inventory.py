"""Inventory invariants: stock never goes negative and adds up at the end.

Workload per SKU (the history key): `purchase` (value: quantity; ok = bought,
fail = refused for lack of stock), `restock` (value: quantity) and `read`
(ok value: the stock). The last successful read of a SKU is its final read.
A purchase or restock counts fully when it succeeded before the final read
started, not at all when it failed, and may or may not count when its outcome
is unknown or it overlapped the final read; those give a [min, max] range.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Mapping

from jepsen_style.checker.invariants import InvariantResult, final_reads, settled_before
from jepsen_style.history import Call, HistoryEvent, HistoryFormatError, pair_calls

INVENTORY_FUNCTIONS = frozenset({"purchase", "restock", "read"})


def check_inventory(events: Iterable[HistoryEvent], initial_stock: Mapping[str, int]) -> InvariantResult:
    """Check the inventory workload's history against `initial_stock` (SKU -> units).

    Raises `HistoryFormatError` for malformed events (unknown function,
    quantities that are not positive integers, SKUs without a key).
    """
    calls = pair_calls(events)
    by_sku: dict[str, list[Call]] = defaultdict(list)
    for call in calls:
        _validate(call)
        by_sku[call.key].append(call)  # type: ignore[index]
    anomalies: list[str] = []
    for sku in sorted(by_sku):
        sku_calls = by_sku[sku]
        for call in sku_calls:
            if call.f == "read" and call.outcome == "ok" and call.result < 0:
                anomalies.append(
                    f"SKU {sku}: a read at time {call.start:g} saw negative stock {call.result}"
                )
        anomalies.extend(_check_final_stock(sku, sku_calls, initial_stock.get(sku, 0)))
    return InvariantResult(anomalies, checked=len(by_sku))


def _validate(call: Call) -> None:
    where = f"process {call.process} {call.f} at time {call.start:g}"
    if call.f not in INVENTORY_FUNCTIONS:
        raise HistoryFormatError(f"{where}: unknown function for the inventory workload "
                                 "(expected purchase, restock or read)")
    if not isinstance(call.key, str):
        raise HistoryFormatError(f"{where}: the SKU (key) must be a string, got {call.key!r}")
    if call.f != "read" and not _is_count(call.argument, minimum=1):
        raise HistoryFormatError(f"{where}: quantity must be a positive integer, got {call.argument!r}")
    if call.f == "read" and call.outcome == "ok" and not _is_count(call.result, minimum=None):
        raise HistoryFormatError(f"{where}: a read must return an integer stock, got {call.result!r}")


def _is_count(value: object, minimum: int | None) -> bool:
    if isinstance(value, bool) or not isinstance(value, int):
        return False
    return minimum is None or value >= minimum


def _check_final_stock(sku: str, calls: list[Call], initial: int) -> list[str]:
    final = final_reads(calls).get(sku)
    if final is None:
        return [f"SKU {sku}: no successful read, so its final stock cannot be checked"]
    certain = 0
    may_add = 0
    may_remove = 0
    for call in calls:
        if call.f == "read" or call.outcome == "fail":
            continue
        sign = 1 if call.f == "restock" else -1
        if call.outcome == "ok" and settled_before(call, final):
            certain += sign * call.argument
        elif call.start < final.end:
            # Unknown, or overlapping the final read: it may or may not count.
            if sign > 0:
                may_add += call.argument
            else:
                may_remove += call.argument
    low = initial + certain - may_remove
    high = initial + certain + may_add
    if low <= final.result <= high:
        return []
    expected = str(low) if low == high else f"between {low} and {high}"
    return [
        f"SKU {sku}: final stock read {final.result} but initial {initial} with the recorded "
        f"restocks and purchases gives {expected}"
    ]
