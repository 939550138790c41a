"""Strict parsing of the numbers and keys a request carries in its head.

Python's int() and float() accept far more than a decimal number: other
scripts' digits ("٣", "²" as isdigit), "_" separators, spaces, "nan",
"inf", and numbers of any size. Every header and query parameter that holds
a number is parsed here instead, so each one accepts exactly ASCII digits in
a bounded range and anything else is a 400 that names the field.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote_to_bytes

from raftkv.server.responses import ApiError

UINT63_MAX = 2**63 - 1  # the largest revision or count a 64-bit signed field holds
# 19 digits hold every value up to UINT63_MAX; refusing longer text first
# keeps a 5,000-digit header from costing a quadratic int() conversion.
_MAX_DIGITS = 19
# Seconds: a plain decimal of at most 32 characters, nothing else (no sign,
# exponent, "nan" or "inf"); the range check follows.
_SECONDS = re.compile(r"[0-9]{1,10}(\.[0-9]{1,20})?\Z")


def bad_argument(field: str, expected: str, got: str) -> ApiError:
    shown = got if len(got) <= 40 else got[:40] + "..."
    return ApiError(400, "invalid_argument", f"{field} must be {expected}, got {shown!r}")


def parse_uint(text: str, field: str, minimum: int = 0, maximum: int = UINT63_MAX) -> int:
    """``text`` as an integer in [minimum, maximum]: ASCII digits only."""
    expected = f"an integer from {minimum} to {maximum} (ASCII digits)"
    if not text or len(text) > _MAX_DIGITS or not (text.isascii() and text.isdigit()):
        raise bad_argument(field, expected, text)
    number = int(text)
    if not minimum <= number <= maximum:
        raise bad_argument(field, expected, text)
    return number


def parse_seconds(text: str, field: str, minimum: float, maximum: float) -> float:
    """``text`` as a decimal number of seconds in [minimum, maximum]."""
    expected = f"a number of seconds from {minimum:g} to {maximum:g} like 2 or 0.5"
    if not _SECONDS.match(text):
        raise bad_argument(field, expected, text)
    seconds = float(text)
    if not minimum <= seconds <= maximum:
        raise bad_argument(field, expected, text)
    return seconds


def decode_path(raw_path: str) -> str:
    """The percent-decoded ``raw_path`` (no query string), as strict UTF-8.

    aiohttp's decoded path leaves a byte that is not UTF-8 as its literal
    escape ("%FF"), which would make /v1/kv/bad%FF an alias of
    /v1/kv/bad%25FF; decoding the raw bytes ourselves refuses it instead.
    """
    if "%" not in raw_path:  # the common case: nothing to decode
        return raw_path
    try:
        return unquote_to_bytes(raw_path).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(
            400,
            "invalid_argument",
            f"the path is not valid UTF-8 after percent-decoding (byte {exc.start}); "
            "keys are UTF-8 strings: percent-encode their UTF-8 bytes",
        ) from None


def decode_query(raw_query: str) -> list[tuple[str, str]]:
    """The name=value pairs of a raw query string, decoded as strict UTF-8.

    aiohttp's decoded query turns bytes that are not UTF-8 into U+FFFD,
    which would alias a real U+FFFD; they are refused here instead.
    """
    try:
        return parse_qsl(raw_query, keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        raise ApiError(
            400,
            "invalid_argument",
            "the query string is not valid UTF-8 after percent-decoding",
        ) from None
