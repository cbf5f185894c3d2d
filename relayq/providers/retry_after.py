"""How long a rate-limited upstream asks us to wait, read from its headers.

A 429's wait drives a provider-wide cooldown, so reading it right matters more
than the few lines it takes. Vendors say it three ways:

- ``Retry-After`` (RFC 9110): delta-seconds (``"7"``) or an HTTP-date;
- ``retry-after-ms``: milliseconds, sent by OpenAI and Azure;
- OpenAI's ``x-ratelimit-reset-requests`` / ``x-ratelimit-reset-tokens``:
  Go-style durations (``"1s"``, ``"6m0s"``, ``"20ms"``), the time until each
  limit has room again.

Everything here is pure: headers in, seconds out, the clock injected.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

__all__ = ["parse_duration", "parse_retry_after", "retry_after_seconds"]

_RESET_HEADERS = ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens")
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def _as_seconds(text: str) -> float | None:
    """A non-negative decimal number, or None when ``text`` is not one."""
    try:
        value = float(text)
    except ValueError:
        return None
    if not math.isfinite(value):
        return None
    return max(value, 0.0)


def parse_retry_after(value: str, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delta-seconds or an HTTP-date.

    A date in the past means "now" (0). Returns None for a value that is
    neither, so a garbled header is ignored rather than trusted.
    """
    value = value.strip()
    seconds = _as_seconds(value)
    if seconds is not None:
        return seconds
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now or datetime.now(UTC)
    return max((when - current).total_seconds(), 0.0)


def parse_duration(value: str) -> float | None:
    """Seconds in a Go-style duration such as ``"6m0s"``, ``"1.5s"`` or ``"20ms"``.

    A bare number counts as seconds. Returns None when ``value`` is not a
    duration.
    """
    value = value.strip()
    seconds = _as_seconds(value)
    if seconds is not None:
        return seconds
    parts = _DURATION_PART.findall(value)
    if not parts or "".join(number + unit for number, unit in parts) != value:
        return None
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


def retry_after_seconds(headers: Mapping[str, str], *, now: datetime | None = None) -> float | None:
    """How long ``headers`` ask the caller to wait before trying again, or None.

    ``retry-after-ms`` and ``Retry-After`` are the vendor's explicit answer and
    win when present. Otherwise the longest of the ``x-ratelimit-reset-*``
    durations, since a retry must wait until every exhausted limit has room.
    Header names match case-insensitively.
    """
    headers = {name.lower(): value for name, value in headers.items()}
    if (millis := headers.get("retry-after-ms")) is not None:
        seconds = _as_seconds(millis.strip())
        if seconds is not None:
            return seconds / 1000
    if (retry_after := headers.get("retry-after")) is not None:
        seconds = parse_retry_after(retry_after, now=now)
        if seconds is not None:
            return seconds
    resets = [parse_duration(headers[name]) for name in _RESET_HEADERS if name in headers]
    known = [seconds for seconds in resets if seconds is not None]
    return max(known) if known else None
