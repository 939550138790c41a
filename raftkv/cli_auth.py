"""`raftkv user ...`, `raftkv role ...`, `raftkv auth enable|disable|status`.

Users, roles and the auth switch (docs/auth.md). Endpoints and credentials
as for the other client commands: --endpoints or RAFTKV_ENDPOINTS, --user
NAME[:PASSWORD] or RAFTKV_USER and RAFTKV_PASSWORD (root's, once auth is
on). Exit codes as theirs: 0 ok; 1 refused as inapplicable (409: exists,
root required) or not found; 2 usage or malformed; 3 unavailable.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

import orjson

from raftkv.cli_client import EXIT_OK, UsageError, _common_options, _run
from raftkv.client import Client
from raftkv.client.auth_admin import AuthAdmin

ENABLE_EPILOG = """\
example (the first user must be root):
  raftkv user add root --password ROOTPW
  raftkv role add app && raftkv role grant app --prefix app/ --readwrite
  raftkv user add alice --password ALICEPW && raftkv user grant alice app
  raftkv auth enable
  raftkv put app/x 1 --user alice:ALICEPW   (or RAFTKV_USER=alice RAFTKV_PASSWORD=ALICEPW)
  raftkv user list --user root:ROOTPW
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    common = _common_options()
    _register_user(subparsers, common)
    _register_role(subparsers, common)
    _register_auth(subparsers, common)


def _action(actions: argparse._SubParsersAction, common: argparse.ArgumentParser, name: str, handler: Any, help_text: str) -> argparse.ArgumentParser:
    p = actions.add_parser(name, parents=[common], help=help_text, description=help_text)
    p.set_defaults(func=lambda args: _run(args, handler), parser=p)
    return p


def _register_user(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "user", help="add, delete, change or list users", description="Users (docs/auth.md).", epilog=ENABLE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = _action(actions, common, "add", _user_add, "add a user (with no roles)")
    add.add_argument("name")
    add.add_argument("--password", help="the new user's password (default: asked for on the terminal)")
    delete = _action(actions, common, "delete", _user_delete, "delete a user (not root while auth is on)")
    delete.add_argument("name")
    passwd = _action(actions, common, "passwd", _user_passwd, "set a user's password (its tokens stop working)")
    passwd.add_argument("name")
    passwd.add_argument("--password", help="the new password (default: asked for on the terminal)")
    grant = _action(actions, common, "grant", _user_grant, "give USER the role ROLE (root: the administrator role)")
    grant.add_argument("name", metavar="USER")
    grant.add_argument("role", metavar="ROLE")
    revoke = _action(actions, common, "revoke", _user_revoke, "take the role ROLE from USER")
    revoke.add_argument("name", metavar="USER")
    revoke.add_argument("role", metavar="ROLE")
    ls = _action(actions, common, "list", _user_list, "print each user and its roles")
    ls.add_argument("--json", action="store_true", help="print the API's JSON")


def _register_role(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "role", help="add, delete, grant, revoke or list roles (permissions on key prefixes)",
        description="Roles: each holds read, write or readwrite permissions on key prefixes (docs/auth.md).",
        epilog=ENABLE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    _action(actions, common, "add", _role_add, "add a role (with no permissions)").add_argument("name")
    _action(actions, common, "delete", _role_delete, "delete a role (its users lose it)").add_argument("name")
    grant = _action(actions, common, "grant", _role_grant, "grant ROLE a permission on the keys under --prefix")
    grant.add_argument("name", metavar="ROLE")
    grant.add_argument("--prefix", required=True, help='keys starting with this ("" is every key)')
    mode = grant.add_mutually_exclusive_group(required=True)
    for flag in ("read", "write", "readwrite"):
        mode.add_argument(f"--{flag}", dest="permission", action="store_const", const=flag, help=f"{flag} permission")
    revoke = _action(actions, common, "revoke", _role_revoke, "take ROLE's permission on --prefix away")
    revoke.add_argument("name", metavar="ROLE")
    revoke.add_argument("--prefix", required=True, help="the granted prefix, exactly")
    ls = _action(actions, common, "list", _role_list, "print each role and its permissions")
    ls.add_argument("--json", action="store_true", help="print the API's JSON")


def _register_auth(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "auth", help="enable or disable authentication",
        description=(
            "Turn auth on or off. Enabling needs a user named root (it gets the root role); from then on "
            "every request but health checks, /metrics and /v1/status needs a token (docs/auth.md)."
        ),
        epilog=ENABLE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    _action(actions, common, "enable", _auth_enable, "turn auth on (needs a user named root)")
    _action(actions, common, "disable", _auth_disable, "turn auth off (as root)")
    _action(actions, common, "status", _auth_status, "print whether auth is on")


def _new_password(args: argparse.Namespace) -> str:
    if args.password is not None:
        return str(args.password)
    if not sys.stdin.isatty():
        raise UsageError("give --password (no terminal to ask on)")
    first = getpass.getpass(f"new password for {args.name}: ")
    if getpass.getpass("again: ") != first:
        raise UsageError("the passwords differ")
    return first


def _done(text: str) -> int:
    print(text)
    return EXIT_OK


def _user_add(args: argparse.Namespace, client: Client) -> int:
    AuthAdmin(client).user_add(args.name, _new_password(args))
    return _done(f"user {args.name} added")


def _user_delete(args: argparse.Namespace, client: Client) -> int:
    AuthAdmin(client).user_delete(args.name)
    return _done(f"user {args.name} deleted")


def _user_passwd(args: argparse.Namespace, client: Client) -> int:
    AuthAdmin(client).user_passwd(args.name, _new_password(args))
    return _done(f"password of {args.name} changed")


def _user_grant(args: argparse.Namespace, client: Client) -> int:
    AuthAdmin(client).user_grant(args.name, args.role)
    return _done(f"role {args.role} granted to {args.name}")


def _user_revoke(args: argparse.Namespace, client: Client) -> int:
    AuthAdmin(client).user_revoke(args.name, args.role)
    return _done(f"role {args.role} revoked from {args.name}")


def _user_list(args: argparse.Namespace, client: Client) -> int:
    users = AuthAdmin(client).users()
    if args.json:
        return _done(orjson.dumps({"users": users}).decode())
    for user in users:
        print(f"{user['name']}\t{','.join(user['roles'])}")
    return EXIT_OK


def _role_add(args: argparse.Namespace, client: Client) -> int:
    AuthAdmin(client).role_add(args.name)
    return _done(f"role {args.name} added")


def _role_delete(args: argparse.Namespace, client: Client) -> int:
    AuthAdmin(client).role_delete(args.name)
    return _done(f"role {args.name} deleted")


def _role_grant(args: argparse.Namespace, client: Client) -> int:
    AuthAdmin(client).role_grant(args.name, args.prefix, args.permission)
    return _done(f"role {args.name}: {args.permission} on prefix {args.prefix!r}")


def _role_revoke(args: argparse.Namespace, client: Client) -> int:
    AuthAdmin(client).role_revoke(args.name, args.prefix)
    return _done(f"role {args.name}: permission on prefix {args.prefix!r} revoked")


def _role_list(args: argparse.Namespace, client: Client) -> int:
    roles = AuthAdmin(client).roles()
    if args.json:
        return _done(orjson.dumps({"roles": roles}).decode())
    for role in roles:
        perms = ",".join(f"{p['permission']}:{p['prefix']!r}" for p in role["permissions"])
        print(f"{role['name']}\t{perms}")
    return EXIT_OK


def _auth_enable(args: argparse.Namespace, client: Client) -> int:
    AuthAdmin(client).enable()
    return _done("auth enabled")


def _auth_disable(args: argparse.Namespace, client: Client) -> int:
    AuthAdmin(client).disable()
    return _done("auth disabled")


def _auth_status(args: argparse.Namespace, client: Client) -> int:
    status = AuthAdmin(client).status()
    return _done(f"auth {'enabled' if status['enabled'] else 'disabled'} (auth revision {status['auth_revision']})")
