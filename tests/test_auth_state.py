"""Users, roles and the auth switch in the state machine (raftkv/kv/auth_state.py):
pure, replicated, restored from snapshots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from raftkv.kv import auth_state as a
from raftkv.kv.state_machine import KVStateMachine
from raftkv.kv.store import LmdbStore

# A password record of the right shape; hashing is the edge's job (raftkv/auth/).
PW: dict[str, Any] = {"hash": b"h" * 32, "kdf": "scrypt", "n": 2, "p": 1, "r": 1, "salt": b"s" * 16}
KEY = b"k" * 32


@pytest.fixture(params=["memory", "lmdb"])
def machine(request: pytest.FixtureRequest, tmp_path: Path) -> KVStateMachine:
    if request.param == "memory":
        return KVStateMachine()
    return KVStateMachine(store=LmdbStore(tmp_path / "kv"))


def ok(machine: KVStateMachine, command: dict[str, Any]) -> dict[str, Any]:
    result = machine.apply_command(command)
    assert result["ok"], result
    return result


def code(machine: KVStateMachine, command: dict[str, Any]) -> str:
    result = machine.apply_command(command)
    assert not result["ok"], result
    return result["error"]["code"]


def test_enable_needs_root_and_grants_it_the_root_role(machine: KVStateMachine) -> None:
    assert code(machine, a.auth_enable(KEY)) == "root_user_required"
    ok(machine, a.user_add("root", PW))
    ok(machine, a.auth_enable(KEY))
    view = machine.auth
    assert view.enabled and view.signing_key == KEY and view.users["root"].is_root
    # The administrator cannot be removed while auth is on.
    assert code(machine, a.user_delete("root")) == "root_user_required"
    assert code(machine, a.user_revoke("root", "root")) == "root_user_required"
    ok(machine, a.auth_disable())
    assert not machine.auth.enabled
    ok(machine, a.user_delete("root"))


def test_permissions_by_prefix(machine: KVStateMachine) -> None:
    ok(machine, a.user_add("alice", PW))
    ok(machine, a.role_add("app"))
    ok(machine, a.role_grant("app", "app/", "readwrite"))
    ok(machine, a.role_grant("app", "pub/", "read"))
    ok(machine, a.user_grant("alice", "app"))
    view = machine.auth
    alice = view.users["alice"]
    assert view.allows_key(alice, "write", "app/x") and view.allows_key(alice, "read", "app/x")
    assert view.allows_key(alice, "read", "pub/y") and not view.allows_key(alice, "write", "pub/y")
    assert not view.allows_key(alice, "read", "other/x")
    assert view.allows_range(alice, "read", "app/sub/") and not view.allows_range(alice, "read", "ap")
    # A grant on the same prefix replaces the old one; a revoke removes it.
    ok(machine, a.role_grant("app", "pub/", "write"))
    assert machine.auth.roles["app"].perms == (("app/", "readwrite"), ("pub/", "write"))
    ok(machine, a.role_revoke("app", "pub/"))
    assert code(machine, a.role_revoke("app", "pub/")) == "permission_not_granted"
    # Deleting the role takes it away from its users.
    ok(machine, a.role_delete("app"))
    assert machine.auth.users["alice"].roles == ()


def test_a_users_change_moves_its_revision_only(machine: KVStateMachine) -> None:
    ok(machine, a.user_add("alice", PW))
    ok(machine, a.user_add("bob", PW))
    before = machine.auth.users
    ok(machine, a.user_passwd("alice", {**PW, "salt": b"t" * 16}))
    after = machine.auth.users
    assert after["alice"].revision > before["alice"].revision
    assert after["bob"].revision == before["bob"].revision


def test_errors_change_nothing(machine: KVStateMachine) -> None:
    ok(machine, a.user_add("alice", PW))
    revision = machine.auth.revision
    assert code(machine, a.user_add("alice", PW)) == "user_exists"
    assert code(machine, a.user_delete("nobody")) == "user_not_found"
    assert code(machine, a.user_grant("alice", "nope")) == "role_not_found"
    assert code(machine, a.user_revoke("alice", "nope")) == "role_not_granted"
    assert code(machine, a.role_add("root")) == "role_exists"
    assert code(machine, a.role_delete("root")) == "root_role"
    assert code(machine, a.role_grant("root", "", "read")) == "root_role"
    assert machine.auth.revision == revision


@pytest.mark.parametrize(
    "command",
    [
        {"op": "user_add", "name": "", "password": PW},
        {"op": "user_add", "name": "x" * 129, "password": PW},
        {"op": "user_add", "name": "a\nb", "password": PW},
        {"op": "user_add", "name": 5, "password": PW},
        {"op": "user_add", "name": "bob", "password": {"hash": b"x"}},
        {"op": "user_add", "name": "bob"},
        {"op": "role_grant", "name": "r", "prefix": "a/", "permission": "all"},
        {"op": "role_grant", "name": "r", "prefix": 3, "permission": "read"},
        {"op": "auth_enable", "signing_key": b"short"},
        {"op": "auth_enable"},
    ],
)
def test_malformed_commands_are_invalid(machine: KVStateMachine, command: dict[str, Any]) -> None:
    ok(machine, a.user_add("root", PW))
    ok(machine, a.role_add("r"))
    revision = machine.auth.revision
    assert code(machine, command) == "invalid_command"
    assert machine.auth.revision == revision


def test_state_survives_reopen_and_snapshot_restore(tmp_path: Path) -> None:
    machine = KVStateMachine(store=LmdbStore(tmp_path / "kv"))
    ok(machine, a.user_add("root", PW))
    ok(machine, a.role_add("app"))
    ok(machine, a.role_grant("app", "app/", "readwrite"))
    ok(machine, a.user_grant("root", "app"))
    ok(machine, a.auth_enable(KEY))
    view = machine.auth
    snapshot = machine.snapshot()
    machine.close_store()

    reopened = KVStateMachine(store=LmdbStore(tmp_path / "kv"))
    assert reopened.auth == view
    restored = KVStateMachine()
    restored.restore(snapshot, 10)
    assert restored.auth == view
    # Replicas applying the same commands hold byte-identical snapshots.
    assert restored.snapshot() == snapshot
    # A restore replaces the auth state too.
    restored.restore(KVStateMachine().snapshot(), 11)
    assert not restored.auth.enabled and not restored.auth.users


def test_a_snapshot_with_a_malformed_auth_record_is_refused_whole() -> None:
    source = KVStateMachine()
    txn = source.store.write()
    txn.put("auth", b"user/root", b"\xff")
    txn.commit()
    target = KVStateMachine()
    ok(target, a.user_add("alice", PW))
    with pytest.raises(ValueError):
        target.restore(source.snapshot(), 5)
    assert "alice" in target.auth.users
