"""What ``GET /v1/usage`` answers: a key's tokens and cost, grouped."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

__all__ = ["UsageBucket", "UsageReport"]


class UsageBucket(BaseModel):
    """The usage of one group, or of all of them (``total``). A bucket carries the
    fields it is grouped by and no others; ``batch_id`` is null for jobs outside batches."""

    object: Literal["usage.bucket"] = "usage.bucket"
    day: str | None = None
    """UTC, ``YYYY-MM-DD``: the day the jobs finished."""
    model: str | None = None
    """The model the jobs asked for (a route's name)."""
    key_id: str | None = None
    batch_id: str | None = None
    requests: int
    """Jobs that reported usage: every succeeded one, and any failed one with usage."""
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    """Of ``input_tokens``, those the vendors served from their prompt caches."""
    total_tokens: int
    cost_usd: float
    """At the prices of the deployments that served them; jobs without a price add 0."""


class UsageReport(BaseModel):
    object: Literal["list"] = "list"
    data: list[UsageBucket]
    """A bucket per group, ordered by the grouped-by fields."""
    total: UsageBucket
    """All of ``data`` added up."""
