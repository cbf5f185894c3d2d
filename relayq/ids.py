"""Identifiers: time-ordered, random, URL-safe, with a type prefix.

Ids sort by creation time (48-bit milliseconds, then 80 random bits, in
Crockford base32 like a ULID), so ``ORDER BY id`` is creation order and
cursor pagination needs no second column.
"""

from __future__ import annotations

import secrets
import time

__all__ = ["new_id"]

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def new_id(prefix: str, *, now: float | None = None) -> str:
    """A new id such as ``job_01jd6x0m3q8r5t7v9w2y4z6a8c``."""
    millis = int((time.time() if now is None else now) * 1000)
    value = (millis << 80) | secrets.randbits(80)
    chars = []
    for _ in range(26):
        value, digit = divmod(value, 32)
        chars.append(_ALPHABET[digit])
    return f"{prefix}_{''.join(reversed(chars))}"
