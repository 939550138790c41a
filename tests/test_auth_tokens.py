"""Password hashing and signed tokens (raftkv/auth/): no cluster needed."""

from __future__ import annotations

import pytest

from raftkv.auth import passwords, tokens

KEY = b"k" * 32


def test_password_hash_verifies_only_the_password() -> None:
    record = passwords.hash_password("s3cret")
    assert set(record) == {"hash", "kdf", "n", "p", "r", "salt"}
    assert passwords.verify_password("s3cret", record)
    assert not passwords.verify_password("s3creT", record)
    assert passwords.hash_password("s3cret")["salt"] != record["salt"]
    # A record asking for absurd parameters is refused, not run.
    assert not passwords.verify_password("s3cret", {**record, "n": 2**30})


def test_token_round_trip_and_expiry() -> None:
    token = tokens.issue(KEY, "alice", 7, now=1000.0, ttl=60)
    claims = tokens.verify(KEY, token, now=1059.0)
    assert (claims.user, claims.revision, claims.expires) == ("alice", 7, 1060)
    with pytest.raises(tokens.TokenError) as exc:
        tokens.verify(KEY, token, now=1060.0)
    assert exc.value.code == "token_expired"


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),  # signature
        lambda t: "rkv2" + t[4:],
        lambda t: t.replace(".", "", 1),
        lambda t: "rkv1.!!.!!",
        lambda t: "é" * 10,
        lambda t: "x" * 5000,
    ],
)
def test_bad_tokens_are_refused(mangle) -> None:  # type: ignore[no-untyped-def]
    token = tokens.issue(KEY, "alice", 7, now=1000.0, ttl=60)
    with pytest.raises(tokens.TokenError) as exc:
        tokens.verify(KEY, mangle(token), now=1001.0)
    assert exc.value.code == "invalid_token"


def test_another_key_does_not_verify() -> None:
    token = tokens.issue(KEY, "alice", 7, now=1000.0, ttl=60)
    with pytest.raises(tokens.TokenError):
        tokens.verify(b"o" * 32, token, now=1001.0)
    with pytest.raises(tokens.TokenError):
        tokens.verify(b"", token, now=1001.0)
