"""Spans of time written as OpenAI's batches write them: ``24h``, also ``90s`` and ``30m``.

A key's lifetime is a span too, in days as well (``30d``): :data:`Lifetime`.

A job's and a batch's ``completion_window`` are one. The pattern alone let
any number of digits through: 400 nines read as a float are infinity, and a
batch whose deadline was infinity was stored, then failed to be shown, as a
500. A span is at most a year, which any real window is far under.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

__all__ = ["MAX_LIFETIME_SECONDS", "MAX_SPAN_SECONDS", "Lifetime", "Span", "span_seconds"]

MAX_SPAN_SECONDS = 365 * 24 * 3600
MAX_LIFETIME_SECONDS = 10 * MAX_SPAN_SECONDS

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def span_seconds(span: str) -> float:
    """The seconds ``span`` stands for (it has been validated as a :data:`Span` or a
    :data:`Lifetime`)."""
    return float(span[:-1]) * _UNITS[span[-1]]


def _at_most_a_year(span: str) -> str:
    if not span_seconds(span) <= MAX_SPAN_SECONDS:
        raise ValueError(f"{span[:40]!r} is more than a year (8760h); give a shorter span")
    return span


Span = Annotated[str, Field(pattern=r"^\d+(\.\d+)?(s|m|h)$"), AfterValidator(_at_most_a_year)]
"""A span such as ``24h``, ``30m`` or ``90s``, at most a year."""


def _at_most_ten_years(span: str) -> str:
    if not span_seconds(span) <= MAX_LIFETIME_SECONDS:
        raise ValueError(f"{span[:40]!r} is more than ten years (3650d); give a shorter span")
    return span


Lifetime = Annotated[
    str, Field(pattern=r"^\d+(\.\d+)?(s|m|h|d)$"), AfterValidator(_at_most_ten_years)
]
"""How long a key lasts: ``30d``, ``12h``, ``90m``..., at most ten years."""
