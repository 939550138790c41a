"""Leases in the state machine (raftkv/kv/leases.py): pure, no clock."""

from __future__ import annotations

from pathlib import Path

import pytest

from raftkv.kv import commands, leases
from raftkv.kv.state_machine import KVStateMachine
from raftkv.kv.store import LmdbStore


@pytest.fixture(params=["memory", "lmdb"])
def machine(request: pytest.FixtureRequest, tmp_path: Path) -> KVStateMachine:
    if request.param == "memory":
        return KVStateMachine()
    return KVStateMachine(store=LmdbStore(tmp_path / "kv"))


def test_grant_put_and_read_show_the_lease(machine: KVStateMachine) -> None:
    assert machine.apply_command(leases.grant(7, 10)) == {"ok": True, "revision": 0, "id": 7, "ttl": 10}
    result = machine.apply_command(commands.put("a", b"1", lease=7))
    assert result["ok"] and result["kv"]["lease"] == 7
    assert machine.get("a")["lease"] == 7  # type: ignore[index]
    kvs, _ = machine.range("")
    assert kvs[0]["lease"] == 7
    # Reads at an older revision do not know leases (docs/leases.md).
    machine.apply_command(commands.put("b", b"2"))
    assert "lease" not in (machine.get("a", revision=1) or {})


def test_put_with_an_unknown_lease_applies_nothing(machine: KVStateMachine) -> None:
    result = machine.apply_command(commands.put("a", b"1", lease=99))
    assert result["error"]["code"] == "lease_not_found"
    assert machine.revision == 0 and machine.get("a") is None
    machine.apply_command(leases.grant(1, 5))
    txn = commands.txn([], [commands.txn_put("b", b"x"), commands.txn_put("c", b"y", lease=99)], [])
    result = machine.apply_command(txn)
    assert result["error"]["code"] == "lease_not_found"
    assert machine.get("b") is None and machine.revision == 0


def test_revoke_deletes_all_keys_at_one_revision(machine: KVStateMachine) -> None:
    changes: list[object] = []
    machine.add_change_listener(changes.append)
    machine.apply_command(leases.grant(3, 60))
    machine.apply_command(commands.put("x", b"1", lease=3))
    machine.apply_command(commands.txn([], [commands.txn_put("y", b"2", lease=3)], []))
    machine.apply_command(commands.put("z", b"keep"))
    changes.clear()
    result = machine.apply_command(leases.revoke(3))
    assert result == {"ok": True, "revision": 4, "id": 3, "deleted": 2}
    assert [(rev, sub, key, record) for rev, sub, key, record in changes[0]] == [  # type: ignore[union-attr]
        (4, 0, "x", None),
        (4, 1, "y", None),
    ]
    assert machine.get("x") is None and machine.get("y") is None and machine.get("z") is not None
    assert machine.apply_command(leases.revoke(3))["error"]["code"] == "lease_not_found"


def test_overwrite_or_delete_without_the_lease_detaches(machine: KVStateMachine) -> None:
    machine.apply_command(leases.grant(5, 60))
    machine.apply_command(commands.put("a", b"1", lease=5))
    machine.apply_command(commands.put("b", b"1", lease=5))
    machine.apply_command(commands.put("c", b"1", lease=5))
    machine.apply_command(commands.put("a", b"2"))  # overwritten without the lease
    machine.apply_command(commands.delete("b"))
    assert "lease" not in machine.get("a")  # type: ignore[operator]
    result = machine.apply_command(leases.revoke(5))
    assert result["deleted"] == 1
    assert machine.get("a") is not None and machine.get("c") is None


def test_expire_is_refused_after_a_renewal(machine: KVStateMachine) -> None:
    stamps: list[leases.LeaseEvent] = []
    machine.leases.add_listener(stamps.append)
    machine.apply_command(leases.grant(9, 2))
    machine.apply_command(commands.put("k", b"v", lease=9))
    first = stamps[-1][2]
    machine.apply_command(leases.keepalive(9))
    assert stamps[-1][0] == 9 and stamps[-1][2] > first
    assert machine.apply_command(leases.expire(9, first))["expired"] is False
    assert machine.get("k") is not None
    result = machine.apply_command(leases.expire(9, stamps[-1][2]))
    assert result["expired"] is True and result["deleted"] == 1
    assert machine.get("k") is None and stamps[-1] == (9, 0, 0)
    assert machine.apply_command(leases.keepalive(9))["error"]["code"] == "lease_not_found"


def test_grant_twice_and_malformed_commands(machine: KVStateMachine) -> None:
    machine.apply_command(leases.grant(1, 5))
    assert machine.apply_command(leases.grant(1, 5))["error"]["code"] == "lease_exists"
    for bad in (
        {"op": "lease_grant", "id": 2, "ttl": 0},
        {"op": "lease_grant", "id": 0, "ttl": 5},
        {"op": "lease_grant", "id": True, "ttl": 5},
        {"op": "lease_keepalive", "id": "1"},
        {"op": "lease_expire", "id": 1},
        {"op": "put", "key": "a", "value": b"v", "lease": -1},
        {"op": "txn", "success": [{"op": "put", "key": "a", "value": b"v", "lease": "x"}]},
    ):
        assert machine.apply_command(bad)["error"]["code"] == "invalid_command", bad
    assert machine.revision == 0


def test_snapshot_carries_leases_and_attachments(machine: KVStateMachine) -> None:
    machine.apply_command(leases.grant(4, 30))
    machine.apply_command(commands.put("p/1", b"a", lease=4))
    machine.apply_command(commands.put("p/2", b"b"))
    copy = KVStateMachine()
    copy.restore(machine.snapshot())
    assert copy.snapshot() == machine.snapshot()
    assert copy.get("p/1")["lease"] == 4  # type: ignore[index]
    txn = copy.store.read()
    assert list(leases.all_leases(txn)) == [(4, 30, 1)]
    assert leases.keys_of(txn, 4) == ["p/1"]
    txn.close()
    assert copy.apply_command(leases.revoke(4))["deleted"] == 1


def test_long_keys_attach_and_expire(machine: KVStateMachine) -> None:
    long_a, long_b = "k" * 1000 + "a", "k" * 1000 + "b"
    machine.apply_command(leases.grant(6, 30))
    machine.apply_command(commands.put(long_a, b"1", lease=6))
    machine.apply_command(commands.put(long_b, b"2", lease=6))
    txn = machine.store.read()
    assert sorted(leases.keys_of(txn, 6)) == [long_a, long_b]
    txn.close()
    assert machine.apply_command(leases.revoke(6))["deleted"] == 2
    assert machine.get(long_a) is None and machine.get(long_b) is None


def test_lease_ids_parse_and_format() -> None:
    assert leases.format_id(255) == "00000000000000ff"
    assert leases.parse_id("00000000000000ff") == 255 and leases.parse_id("FF") == 255
    for bad in ("", "0", "g", "1" * 17, "8000000000000000", "-1"):
        assert leases.parse_id(bad) is None, bad
