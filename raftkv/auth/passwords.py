"""Password hashing with scrypt (hashlib), a fresh salt per password.

scrypt is memory-hard: each guess costs 128 * r * n bytes (32 MiB here) as
well as CPU, which is what makes stolen hashes expensive to attack. The
parameters travel with each hash, so raising them later leaves existing
passwords valid. Hashing takes about 0.1 s of CPU: callers on the event loop
run it in a thread (see raftkv/server/auth_routes.py).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from typing import Any

KDF = "scrypt"
SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
HASH_BYTES = 32
# Enough for n up to 2**16 at r 8; a record asking for more is refused.
_MAX_MEMORY = 1 << 27
# scrypt takes any length; this bounds a request (and a Basic header's password).
MAX_PASSWORD_CHARS = 1024


def hash_password(password: str) -> dict[str, Any]:
    """The record a ``user_add`` / ``user_passwd`` command carries (auth_state.PASSWORD_FIELDS)."""
    salt = os.urandom(SALT_BYTES)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return {"hash": digest, "kdf": KDF, "n": SCRYPT_N, "p": SCRYPT_P, "r": SCRYPT_R, "salt": salt}


def verify_password(password: str, record: Mapping[str, Any]) -> bool:
    """Does ``password`` match ``record``? Constant time in the comparison."""
    if record.get("kdf") != KDF:
        return False
    try:
        digest = _scrypt(password, record["salt"], record["n"], record["r"], record["p"])
    except (ValueError, KeyError, TypeError):
        return False
    return hmac.compare_digest(digest, record["hash"])


# Checked when a user is unknown, so a wrong name takes as long as a wrong
# password and the answer time does not tell which names exist.
_DUMMY = {"hash": b"\0" * HASH_BYTES, "kdf": KDF, "n": SCRYPT_N, "p": SCRYPT_P, "r": SCRYPT_R, "salt": b"\0" * SALT_BYTES}


def burn_time_like_a_check(password: str) -> None:
    verify_password(password, _DUMMY)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8", "surrogatepass"), salt=salt, n=n, r=r, p=p, dklen=HASH_BYTES, maxmem=_MAX_MEMORY
    )
