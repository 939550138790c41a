from __future__ import annotations

import pytest

from jepsen_style.checker.inventory import check_inventory
from jepsen_style.checker.set_checker import check_set
from jepsen_style.history import HistoryEvent, HistoryFormatError


def ev(process: int | str, type: str, f: str, key: str | None, value: object, time: float) -> HistoryEvent:
    return HistoryEvent(process, type, f, key, value, time)  # type: ignore[arg-type]


def call(process: int, f: str, key: str | None, value: object, outcome: str, start: float,
         result: object = None) -> list[HistoryEvent]:
    """An invoke and its completion one time unit later (none when outcome is "open")."""
    events = [ev(process, "invoke", f, key, value, start)]
    if outcome != "open":
        events.append(ev(process, outcome, f, key, result if result is not None else value, start + 1))
    return events


# --- inventory ------------------------------------------------------------------

def test_inventory_that_adds_up_is_valid() -> None:
    events = (
        call(0, "purchase", "apple", 3, "ok", 0)
        + call(1, "restock", "apple", 5, "ok", 2)
        + call(2, "purchase", "apple", 50, "fail", 4)
        + call(0, "read", "apple", None, "ok", 10, result=12)
    )
    result = check_inventory(events, {"apple": 10})
    assert result.valid, result.anomalies
    assert result.checked == 1


def test_unknown_purchases_and_restocks_give_a_range() -> None:
    base = (
        call(0, "purchase", "pear", 2, "info", 0)
        + call(1, "restock", "pear", 4, "open", 1)
    )
    for final in (8, 10, 12, 14):
        assert check_inventory(base + call(2, "read", "pear", None, "ok", 20, result=final),
                               {"pear": 10}).valid
    for final in (7, 15):
        result = check_inventory(base + call(2, "read", "pear", None, "ok", 20, result=final), {"pear": 10})
        assert not result.valid
        assert "between 8 and 14" in result.anomalies[0]


def test_lost_purchase_is_reported() -> None:
    events = call(0, "purchase", "fig", 3, "ok", 0) + call(1, "read", "fig", None, "ok", 5, result=10)
    result = check_inventory(events, {"fig": 10})
    assert not result.valid
    assert result.anomalies == [
        "SKU fig: final stock read 10 but initial 10 with the recorded restocks and purchases gives 7"
    ]


def test_negative_stock_read_is_reported() -> None:
    events = (call(0, "purchase", "kiwi", 2, "ok", 0) + call(1, "read", "kiwi", None, "ok", 2, result=-1)
              + call(1, "read", "kiwi", None, "ok", 5, result=0))
    result = check_inventory(events, {"kiwi": 2})
    assert not result.valid
    assert any("negative stock -1" in anomaly for anomaly in result.anomalies)


def test_purchase_overlapping_the_final_read_may_count_or_not() -> None:
    events = [
        ev(0, "invoke", "purchase", "plum", 1, 0.0),
        ev(1, "invoke", "read", "plum", None, 1.0),
        ev(0, "ok", "purchase", "plum", 1, 2.0),
        ev(1, "ok", "read", "plum", 5, 3.0),
    ]
    assert check_inventory(events, {"plum": 5}).valid


def test_sku_without_a_final_read_cannot_pass() -> None:
    result = check_inventory(call(0, "restock", "lime", 1, "ok", 0), {})
    assert result.anomalies == ["SKU lime: no successful read, so its final stock cannot be checked"]


@pytest.mark.parametrize(
    ("events", "message"),
    [
        (call(0, "purchase", "a", 0, "ok", 0), "quantity must be a positive integer"),
        (call(0, "restock", "a", "3", "ok", 0), "quantity must be a positive integer"),
        (call(0, "steal", "a", 1, "ok", 0), "unknown function for the inventory workload"),
        (call(0, "restock", None, 1, "ok", 0), "the SKU \\(key\\) must be a string"),
        (call(0, "read", "a", None, "ok", 0, result="lots"), "a read must return an integer stock"),
    ],
)
def test_malformed_inventory_history_is_a_clear_error(events: list[HistoryEvent], message: str) -> None:
    with pytest.raises(HistoryFormatError, match=message):
        check_inventory(events, {"a": 1})


# --- set ---------------------------------------------------------------------------

def test_set_with_every_acknowledged_add_is_valid() -> None:
    events = (
        call(0, "add", "s", 1, "ok", 0)
        + call(1, "add", "s", 2, "info", 0)
        + call(2, "add", "s", 3, "fail", 0)
        + call(3, "add", "s", 4, "open", 1)
        + call(0, "read", "s", None, "ok", 10, result=[1, 4])
    )
    result = check_set(events)
    assert result.valid, result.anomalies


def test_lost_and_phantom_elements_are_reported() -> None:
    events = (
        call(0, "add", None, 1, "ok", 0)
        + call(1, "add", None, 2, "ok", 0)
        + call(2, "add", None, 3, "fail", 0)
        + call(0, "read", None, None, "ok", 10, result=[2, 3, 9, 2])
    )
    result = check_set(events)
    assert not result.valid
    assert result.anomalies == [
        "the set: element 1 was acknowledged but is missing from the final read (lost)",
        "the set: the final read contains 3 whose add failed",
        "the set: the final read contains 9 that nobody added",
        "the set: the final read lists 2 2 times",
    ]


def test_set_without_a_read_cannot_pass() -> None:
    assert not check_set(call(0, "add", "s", 1, "ok", 0)).valid


def test_malformed_set_history_is_a_clear_error() -> None:
    with pytest.raises(HistoryFormatError, match="a read must return a list"):
        check_set(call(0, "read", "s", None, "ok", 0, result="1,2"))
    with pytest.raises(HistoryFormatError, match="unknown function for the set workload"):
        check_set(call(0, "remove", "s", 1, "ok", 0))
