"""What a job cost: its usage at the price of the deployment that served it.

Prices are the operator's, per deployment in the routing file (``price`` on a
deployment, in US dollars per million tokens): relayq ships no price list,
since vendors change theirs and negotiate others. A deployment without one
costs nothing that relayq can count, and its jobs show no cost.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ModelPrice", "job_cost"]

_PER = 1_000_000


class ModelPrice(BaseModel):
    """A deployment's price, in US dollars per million tokens."""

    model_config = ConfigDict(extra="forbid")

    input: float = Field(ge=0)
    """Prompt tokens."""
    output: float = Field(ge=0)
    """Completion tokens."""
    cached_input: float | None = Field(default=None, ge=0)
    """Prompt tokens the vendor served from its prompt cache (``usage.prompt_tokens_details.
    cached_tokens``); unset, they cost ``input``."""
    batch_discount: float = Field(default=0.0, ge=0, lt=1)
    """The share taken off a batch request's cost (OpenAI's Batch API: 0.5)."""


def job_cost(price: ModelPrice, usage: Mapping[str, Any] | None, *, batch: bool) -> float | None:
    """The cost of ``usage`` (OpenAI's usage object) at ``price``; None without usage."""
    if not usage:
        return None
    prompt = _count(usage.get("prompt_tokens"))
    completion = _count(usage.get("completion_tokens"))
    details = usage.get("prompt_tokens_details")
    cached = _count(details.get("cached_tokens")) if isinstance(details, Mapping) else 0
    cached = min(cached, prompt)
    cached_rate = price.input if price.cached_input is None else price.cached_input
    cost = (
        (prompt - cached) * price.input + cached * cached_rate + completion * price.output
    ) / _PER
    return cost * (1 - price.batch_discount) if batch else cost


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
