"""Users, roles and the auth switch: replicated state in the store's "auth" table.

Pure and deterministic like the rest of the state machine: no clock, no
randomness, no hashing. Whatever needs those happens at the edge before
proposing (raftkv/auth/): a ``user_add`` command carries the password's salt
and scrypt hash, never the password; ``auth_enable`` carries the token
signing key drawn by the node that proposed it.

The model follows etcd's (server/auth/store.go), written for our prefixes:

* a user has a password and roles; a role has permissions, each a key
  prefix with ``read``, ``write`` or ``readwrite``;
* ``root`` is a built-in role (every permission and the admin routes); it
  is never stored, only granted;
* ``auth_enable`` needs a user named ``root``, and grants it the root role;
  while auth is on, user root cannot be deleted or lose the root role, so
  the cluster always keeps an administrator;
* every change bumps the auth revision; a user record keeps the revision
  of its last change (password, roles, deletion of one of its roles), and a
  token names it, so such a change invalidates the user's tokens at once
  while other users' tokens live on (etcd instead invalidates every token
  on any auth change).

Table layout (keys are bytes, values msgpack): ``enabled`` -> bool,
``revision`` -> int, ``signing_key`` -> bytes, ``user/<name>`` -> {"roles",
"password", "revision"}, ``role/<name>`` -> {"perms": [[prefix, mode], ...]}.
Records are written with sorted fields and lists, so replicas stay byte
identical.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import msgpack

from raftkv.kv.commands import AUTH_OPS, InvalidCommand
from raftkv.kv.store import ReadTxn, WriteTxn

TABLE = "auth"
ROOT = "root"
READ, WRITE, READWRITE = "read", "write", "readwrite"
PERMISSIONS = (READ, WRITE, READWRITE)
# The fields a password record must carry (raftkv/auth/passwords.py makes them).
PASSWORD_FIELDS = ("hash", "kdf", "n", "p", "r", "salt")

_ENABLED = b"enabled"
_REVISION = b"revision"
_SIGNING_KEY = b"signing_key"
_USER = b"user/"
_ROLE = b"role/"

Result = dict[str, Any]


@dataclass(frozen=True)
class User:
    name: str
    roles: tuple[str, ...]
    password: Mapping[str, Any]
    revision: int  # auth revision of the record's last change; tokens name it

    @property
    def is_root(self) -> bool:
        return ROOT in self.roles


@dataclass(frozen=True)
class Role:
    name: str
    perms: tuple[tuple[str, str], ...]  # (prefix, permission), sorted by prefix


@dataclass(frozen=True)
class AuthView:
    """The auth state as of one applied entry; never changed in place, so a
    reader on another thread may hold it while the applier moves on."""

    enabled: bool = False
    revision: int = 0
    signing_key: bytes = b""
    users: Mapping[str, User] = field(default_factory=lambda: MappingProxyType({}))
    roles: Mapping[str, Role] = field(default_factory=lambda: MappingProxyType({}))

    def allows_key(self, user: User, permission: str, key: str) -> bool:
        """May ``user`` read (or write) ``key``?"""
        return self._allows(user, permission, key.startswith)

    def allows_range(self, user: User, permission: str, prefix: str) -> bool:
        """May ``user`` read (or write) every key that starts with ``prefix``?

        One granted prefix must contain the whole range: a union of several
        granted prefixes never covers a prefix range (there are always keys
        beyond them), so this is exact, not a shortcut.
        """
        return self._allows(user, permission, prefix.startswith)

    def _allows(self, user: User, permission: str, within: Callable[[str], bool]) -> bool:
        if user.is_root:
            return True
        for name in user.roles:
            role = self.roles.get(name)
            if role is None:
                continue
            for prefix, granted in role.perms:
                if (granted == permission or granted == READWRITE) and within(prefix):
                    return True
        return False


class AuthError(Exception):
    """A well-formed auth command that cannot apply (unknown user...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def load(txn: ReadTxn) -> AuthView:
    """The auth state a store holds (ValueError if a record is malformed:
    a snapshot restore then changes nothing)."""
    try:
        return _load(txn)
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise ValueError(f"the auth table holds a malformed record: {exc!r}") from None


def _load(txn: ReadTxn) -> AuthView:
    enabled, revision, key = False, 0, b""
    users: dict[str, User] = {}
    roles: dict[str, Role] = {}
    for raw_key, raw_value in txn.scan(TABLE):
        value = msgpack.unpackb(raw_value, raw=False)
        if raw_key == _ENABLED:
            enabled = bool(value)
        elif raw_key == _REVISION:
            revision = value
        elif raw_key == _SIGNING_KEY:
            key = value
        elif raw_key.startswith(_USER):
            name = raw_key[len(_USER):].decode()
            users[name] = User(name, tuple(value["roles"]), MappingProxyType(value["password"]), value["revision"])
        elif raw_key.startswith(_ROLE):
            name = raw_key[len(_ROLE):].decode()
            roles[name] = Role(name, tuple((p, m) for p, m in value["perms"]))
    return AuthView(enabled, revision, key, MappingProxyType(users), MappingProxyType(roles))


class AuthMachine:
    """Applies auth commands to the "auth" table and keeps :attr:`view` in
    step with it (the HTTP layer reads the view, never the table)."""

    def __init__(self) -> None:
        self.view = AuthView()

    def load(self, txn: ReadTxn) -> None:
        self.view = load(txn)

    def handlers(self, txn_of: Callable[[], WriteTxn]) -> dict[str, Callable[[dict[str, Any]], Result]]:
        """op -> handler for KVStateMachine._handlers; ``txn_of`` gives the
        open batch's write transaction."""
        return {op: (lambda command, op=op: self.apply(txn_of(), op, command)) for op in AUTH_OPS}

    def apply(self, txn: WriteTxn, op: str, command: dict[str, Any]) -> Result:
        try:
            changed = _APPLY[op](_Change(txn, self.view), command)
        except AuthError as exc:
            return {
                "ok": False,
                "auth_revision": self.view.revision,
                "error": {"code": exc.code, "message": exc.message},
            }
        if changed is not None:
            self.view = changed
        return {"ok": True, "auth_revision": self.view.revision}


class _Change:
    """One command's edit of the table and the view it leads to."""

    def __init__(self, txn: WriteTxn, view: AuthView) -> None:
        self.txn = txn
        self.view = view
        self.revision = view.revision + 1
        self.users = dict(view.users)
        self.roles = dict(view.roles)
        self.enabled = view.enabled
        self.signing_key = view.signing_key

    def user(self, command: dict[str, Any], field_name: str = "name") -> User:
        name = _name(command, field_name)
        user = self.users.get(name)
        if user is None:
            raise AuthError("user_not_found", f"user {name!r} does not exist")
        return user

    def role(self, name: str) -> Role:
        role = self.roles.get(name)
        if role is None:
            raise AuthError("role_not_found", f"role {name!r} does not exist")
        return role

    def put_user(self, name: str, roles: tuple[str, ...], password: Mapping[str, Any]) -> None:
        user = User(name, tuple(sorted(set(roles))), MappingProxyType(dict(password)), self.revision)
        self.users[name] = user
        record = {"password": dict(sorted(password.items())), "revision": user.revision, "roles": list(user.roles)}
        self.txn.put(TABLE, _USER + name.encode(), _pack(record))

    def drop_user(self, name: str) -> None:
        del self.users[name]
        self.txn.delete(TABLE, _USER + name.encode())

    def put_role(self, name: str, perms: dict[str, str]) -> None:
        role = Role(name, tuple(sorted(perms.items())))
        self.roles[name] = role
        self.txn.put(TABLE, _ROLE + name.encode(), _pack({"perms": [list(p) for p in role.perms]}))

    def drop_role(self, name: str) -> None:
        del self.roles[name]
        self.txn.delete(TABLE, _ROLE + name.encode())

    def done(self) -> AuthView:
        self.txn.put(TABLE, _ENABLED, _pack(self.enabled))
        self.txn.put(TABLE, _REVISION, _pack(self.revision))
        if self.signing_key:
            self.txn.put(TABLE, _SIGNING_KEY, _pack(self.signing_key))
        return AuthView(
            self.enabled, self.revision, self.signing_key, MappingProxyType(self.users), MappingProxyType(self.roles)
        )


def _auth_enable(change: _Change, command: dict[str, Any]) -> AuthView | None:
    key = command.get("signing_key")
    if type(key) is not bytes or len(key) < 32:
        raise InvalidCommand("'signing_key' must be at least 32 bytes")
    if change.view.enabled:
        return None  # already on: keep the key, so live tokens stay valid
    root = change.users.get(ROOT)
    if root is None:
        raise AuthError(
            "root_user_required",
            "auth cannot be enabled without a user named 'root' (it becomes the administrator): "
            "add it first with `raftkv user add root`",
        )
    if not root.is_root:
        change.put_user(ROOT, (*root.roles, ROOT), root.password)
    change.enabled = True
    change.signing_key = key
    return change.done()


def _auth_disable(change: _Change, command: dict[str, Any]) -> AuthView | None:
    if not change.view.enabled:
        return None
    change.enabled = False
    return change.done()


def _user_add(change: _Change, command: dict[str, Any]) -> AuthView | None:
    name = _name(command)
    password = _password(command)
    if name in change.users:
        raise AuthError("user_exists", f"user {name!r} already exists")
    change.put_user(name, (), password)
    return change.done()


def _user_delete(change: _Change, command: dict[str, Any]) -> AuthView | None:
    user = change.user(command)
    if user.name == ROOT and change.enabled:
        raise AuthError("root_user_required", "user 'root' cannot be deleted while auth is enabled")
    change.drop_user(user.name)
    return change.done()


def _user_passwd(change: _Change, command: dict[str, Any]) -> AuthView | None:
    password = _password(command)
    user = change.user(command)
    change.put_user(user.name, user.roles, password)
    return change.done()


def _user_grant(change: _Change, command: dict[str, Any]) -> AuthView | None:
    user = change.user(command)
    role = _name(command, "role")
    if role != ROOT:
        change.role(role)
    if role in user.roles:
        return None
    change.put_user(user.name, (*user.roles, role), user.password)
    return change.done()


def _user_revoke(change: _Change, command: dict[str, Any]) -> AuthView | None:
    user = change.user(command)
    role = _name(command, "role")
    if role not in user.roles:
        raise AuthError("role_not_granted", f"user {user.name!r} does not have role {role!r}")
    if user.name == ROOT and role == ROOT and change.enabled:
        raise AuthError("root_user_required", "user 'root' cannot lose the root role while auth is enabled")
    change.put_user(user.name, tuple(r for r in user.roles if r != role), user.password)
    return change.done()


def _role_add(change: _Change, command: dict[str, Any]) -> AuthView | None:
    name = _name(command)
    if name == ROOT or name in change.roles:
        raise AuthError("role_exists", f"role {name!r} already exists" + (" (built in)" if name == ROOT else ""))
    change.put_role(name, {})
    return change.done()


def _role_delete(change: _Change, command: dict[str, Any]) -> AuthView | None:
    name = _name(command)
    if name == ROOT:
        raise AuthError("root_role", "the root role is built in and cannot be deleted")
    change.role(name)
    change.drop_role(name)
    for user in list(change.users.values()):
        if name in user.roles:  # its tokens named permissions it no longer has
            change.put_user(user.name, tuple(r for r in user.roles if r != name), user.password)
    return change.done()


def _role_grant(change: _Change, command: dict[str, Any]) -> AuthView | None:
    name = _name(command)
    prefix = _prefix(command)
    permission = command.get("permission")
    if permission not in PERMISSIONS:
        raise InvalidCommand(f"'permission' must be one of {list(PERMISSIONS)}, got {permission!r}")
    if name == ROOT:
        raise AuthError("root_role", "the root role already has every permission")
    perms = dict(change.role(name).perms)
    if perms.get(prefix) == permission:
        return None
    perms[prefix] = permission  # a grant on the same prefix replaces the old one, as in etcd
    change.put_role(name, perms)
    return change.done()


def _role_revoke(change: _Change, command: dict[str, Any]) -> AuthView | None:
    name = _name(command)
    prefix = _prefix(command)
    if name == ROOT:
        raise AuthError("root_role", "the root role's permissions cannot be changed")
    perms = dict(change.role(name).perms)
    if prefix not in perms:
        raise AuthError("permission_not_granted", f"role {name!r} has no permission on prefix {prefix!r}")
    del perms[prefix]
    change.put_role(name, perms)
    return change.done()


_APPLY: dict[str, Callable[[_Change, dict[str, Any]], AuthView | None]] = {
    "auth_enable": _auth_enable,
    "auth_disable": _auth_disable,
    "user_add": _user_add,
    "user_delete": _user_delete,
    "user_passwd": _user_passwd,
    "user_grant": _user_grant,
    "user_revoke": _user_revoke,
    "role_add": _role_add,
    "role_delete": _role_delete,
    "role_grant": _role_grant,
    "role_revoke": _role_revoke,
}
assert set(_APPLY) == AUTH_OPS


MAX_NAME_CHARS = 128


def _name(command: dict[str, Any], field_name: str = "name") -> str:
    name = command.get(field_name)
    # Printable only: names show up in tables, logs and error messages.
    if type(name) is not str or not name or len(name) > MAX_NAME_CHARS or not name.isprintable():
        raise InvalidCommand(
            f"{field_name!r} must be a printable string of 1 to {MAX_NAME_CHARS} characters, got {name!r}"
        )
    return name


def _prefix(command: dict[str, Any]) -> str:
    prefix = command.get("prefix")
    if type(prefix) is not str:
        raise InvalidCommand(f"'prefix' must be a string, got {prefix!r}")
    return prefix


def _password(command: dict[str, Any]) -> dict[str, Any]:
    password = command.get("password")
    if type(password) is not dict or set(password) != set(PASSWORD_FIELDS):
        raise InvalidCommand(f"'password' must be a map of exactly {list(PASSWORD_FIELDS)}")
    return password


def _pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


# Builders: the one place that spells each auth command's shape.


def auth_enable(signing_key: bytes) -> dict[str, Any]:
    return {"op": "auth_enable", "signing_key": signing_key}


def auth_disable() -> dict[str, Any]:
    return {"op": "auth_disable"}


def user_add(name: str, password: Mapping[str, Any]) -> dict[str, Any]:
    return {"op": "user_add", "name": name, "password": dict(password)}


def user_delete(name: str) -> dict[str, Any]:
    return {"op": "user_delete", "name": name}


def user_passwd(name: str, password: Mapping[str, Any]) -> dict[str, Any]:
    return {"op": "user_passwd", "name": name, "password": dict(password)}


def user_grant(name: str, role: str) -> dict[str, Any]:
    return {"op": "user_grant", "name": name, "role": role}


def user_revoke(name: str, role: str) -> dict[str, Any]:
    return {"op": "user_revoke", "name": name, "role": role}


def role_add(name: str) -> dict[str, Any]:
    return {"op": "role_add", "name": name}


def role_delete(name: str) -> dict[str, Any]:
    return {"op": "role_delete", "name": name}


def role_grant(name: str, prefix: str, permission: str) -> dict[str, Any]:
    return {"op": "role_grant", "name": name, "prefix": prefix, "permission": permission}


def role_revoke(name: str, prefix: str) -> dict[str, Any]:
    return {"op": "role_revoke", "name": name, "prefix": prefix}


def iter_users(view: AuthView) -> Iterator[User]:
    return (view.users[name] for name in sorted(view.users))
