"""Reading a rate-limited upstream's wait from its headers."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from relayq.providers.retry_after import parse_duration, parse_retry_after, retry_after_seconds

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("20ms", 0.02),
        ("1h2m3.5s", 3723.5),
        ("0.5s", 0.5),
        ("2m59.56s", 179.56),
        ("250us", 0.00025),
        ("3", 3.0),
        ("", None),
        ("soon", None),
        ("1x", None),
        ("1s later", None),
        ("-1s", None),
    ],
)
def test_parse_duration(value: str, seconds: float | None) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("1.5", 1.5),
        ("-3", 0.0),
        ("Sat, 01 Mar 2025 12:00:30 GMT", 30.0),
        ("Sat, 01 Mar 2025 11:59:00 GMT", 0.0),
        ("next tuesday", None),
        ("nan", None),
    ],
)
def test_parse_retry_after(value: str, seconds: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == seconds


def test_retry_after_wins_over_reset_headers() -> None:
    headers = {"Retry-After": "2", "x-ratelimit-reset-tokens": "1m"}
    assert retry_after_seconds(headers, now=NOW) == 2


def test_retry_after_ms_wins_over_retry_after() -> None:
    headers = {"retry-after-ms": "1500", "retry-after": "2"}
    assert retry_after_seconds(headers) == 1.5


def test_longest_reset_header_counts() -> None:
    headers = {"X-RateLimit-Reset-Requests": "1s", "X-RateLimit-Reset-Tokens": "6m0s"}
    assert retry_after_seconds(headers) == 360


def test_garbled_retry_after_falls_back_to_reset_headers() -> None:
    headers = {"Retry-After": "whenever", "x-ratelimit-reset-requests": "20ms"}
    assert retry_after_seconds(headers) == pytest.approx(0.02)


def test_no_hint_is_none() -> None:
    assert retry_after_seconds({}) is None
    assert retry_after_seconds({"x-ratelimit-reset-tokens": "later"}) is None
