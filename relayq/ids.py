"""Identifiers: time-ordered, random, URL-safe, with a type prefix.

Ids sort by creation time (48-bit milliseconds, then 80 random bits, in
Crockford base32 like a ULID), so ``ORDER BY id`` is creation order and
cursor pagination needs no second column.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

__all__ = ["id_sequence", "new_id"]

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def new_id(prefix: str, *, now: float | None = None) -> str:
    """A new id such as ``job_01jd6x0m3q8r5t7v9w2y4z6a8c``."""
    millis = int((time.time() if now is None else now) * 1000)
    return _encode(prefix, (millis << 80) | secrets.randbits(80))


def id_sequence(prefix: str, *, now: float | None = None) -> Iterator[str]:
    """New ids of one moment, ascending (a batch's requests, in line order).

    They share the millisecond and count up from a random start below
    2**79, so the sequence never carries into the time part.
    """
    millis = int((time.time() if now is None else now) * 1000)
    value = (millis << 80) | secrets.randbits(79)
    while True:
        yield _encode(prefix, value)
        value += 1


_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]
"""Every two-character group, by its 10-bit value: 13 lookups encode an id."""


def _encode(prefix: str, value: int) -> str:
    groups = [_PAIRS[(value >> shift) & 0x3FF] for shift in range(120, -1, -10)]
    return f"{prefix}_{''.join(groups)}"
