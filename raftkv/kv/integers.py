"""The integer format used by ``add`` and ``number`` compares.

A value is a number when it is an optional ``-`` followed by ASCII digits
whose value fits in a signed 64-bit integer. Anything else (spaces, ``+``,
underscores, an empty value, more digits than int64 can hold) is not a
number, so every replica and every client agrees on what a number is.
"""

from __future__ import annotations

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

# 19 digits is enough for every int64; refusing longer input up front keeps a
# 1 MiB digit string from costing a quadratic int() conversion.
_MAX_DIGITS = 19


def parse_int64(value: bytes) -> int | None:
    """The integer ``value`` spells, or None when it is not a number."""
    digits = value[1:] if value[:1] == b"-" else value
    # bytes.isdigit() is ASCII-only, unlike int(), which also accepts
    # whitespace, "_" and a leading "+".
    if not digits or len(digits) > _MAX_DIGITS or not digits.isdigit():
        return None
    number = int(value)
    if number < INT64_MIN or number > INT64_MAX:
        return None
    return number


def in_int64_range(number: int) -> bool:
    return INT64_MIN <= number <= INT64_MAX


def format_int(number: int) -> bytes:
    return str(number).encode("ascii")
