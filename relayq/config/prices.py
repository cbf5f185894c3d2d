"""What a job cost: its usage at the price of the deployment that served it.

A deployment's price is found in this order, the first that gives one wins:

1. the deployment's own ``price`` in the routing file;
2. the routing file's top-level ``prices`` table, by the deployment's upstream
   model;
3. :data:`DEFAULT_PRICES`, a small table of well-known vendor models, by the
   same name.

A table is looked up by the upstream model's name, exactly, or without a
dated or numbered suffix (``gpt-4o-mini-2024-07-18`` and
``claude-3-5-haiku-20241022`` find ``gpt-4o-mini`` and ``claude-3-5-haiku``;
neither ``gpt-4.1-nano`` nor ``claude-opus-4-5`` finds ``gpt-4.1`` or
``claude-opus-4``), and with any vendor namespace
before a ``/`` dropped (``openai/gpt-4o``). Of the names that match, the
longest wins. A deployment no table prices shows no cost.

Vendors change their prices, and negotiate others: the defaults are what
their public pages said on the day noted beside each, in US dollars per
million tokens, and the routing file overrides any of them. None carries a
batch discount: relayq runs a batch's requests against the vendors' ordinary
endpoints, at their ordinary prices, not through the vendors' own batch APIs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["DEFAULT_PRICES", "ModelPrice", "job_cost", "price_of_model"]

_PER = 1_000_000


class ModelPrice(BaseModel):
    """A model's price, in US dollars per million tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: float = Field(ge=0)
    """Prompt tokens."""
    output: float = Field(ge=0)
    """Completion tokens."""
    cached_input: float | None = Field(default=None, ge=0)
    """Prompt tokens the vendor served from its prompt cache (``usage.prompt_tokens_details.
    cached_tokens``); unset, they cost ``input``."""
    batch_discount: float = Field(default=0.0, ge=0, lt=1)
    """The share taken off a batch request's cost (OpenAI's Batch API: 0.5)."""


def _price(input: float, output: float, cached_input: float | None = None) -> ModelPrice:
    return ModelPrice(input=input, output=output, cached_input=cached_input)


DEFAULT_PRICES: Mapping[str, ModelPrice] = {
    # OpenAI, https://platform.openai.com/docs/pricing (Standard tier), read 2026-12-05
    # through the copies of that page quoted on tokenmath.io and deploybase.ai (the page
    # itself renders its tables in script); cached inputs as OpenAI announced them.
    "gpt-4o": _price(2.50, 10.00, 1.25),
    "gpt-4o-mini": _price(0.15, 0.60, 0.075),
    "gpt-4.1": _price(2.00, 8.00, 0.50),
    "gpt-4.1-mini": _price(0.40, 1.60, 0.10),
    "gpt-4.1-nano": _price(0.10, 0.40, 0.025),
    "o3-mini": _price(1.10, 4.40, 0.55),
    # Anthropic, https://docs.anthropic.com/en/docs/about-claude/pricing, read 2026-12-05:
    # "cache hits & refreshes" as cached input. Cache writes (1.25x input) cost input here.
    "claude-sonnet-4": _price(3.00, 15.00, 0.30),
    "claude-3-7-sonnet": _price(3.00, 15.00, 0.30),
    "claude-3-5-haiku": _price(0.80, 4.00, 0.08),
    "claude-opus-4": _price(15.00, 75.00, 1.50),
    # Google, https://ai.google.dev/gemini-api/docs/pricing (paid tier, text), read
    # 2026-12-05 as quoted by morphllm.com/gemini-api-pricing; Google deprecates 2.0 Flash.
    "gemini-2.0-flash": _price(0.10, 0.40, 0.025),
    # xAI, https://docs.x.ai/docs/models, read 2026-12-05 (the page as archived 2025-06-02).
    "grok-3": _price(3.00, 15.00, 0.75),
    "grok-3-mini": _price(0.30, 0.50, 0.075),
    # Cohere, https://cohere.com/pricing, as of the 08-2024 models (not re-read 2026-12-05:
    # check before relying on it). The ``command-r`` alias serves command-r-08-2024.
    "command-r": _price(0.15, 0.60),
    "command-r-plus": _price(2.50, 10.00),
}
"""Prices of well-known vendor models by name; the routing file's ``prices`` and a
deployment's ``price`` override them."""

_SUFFIX = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8}|\d{3,4}|\d{2}-\d{4}|latest)")
"""What may follow a priced name: a date or snapshot (``-2024-07-18``, ``-20241022``,
``-0613``, ``-001``, ``-08-2024``) or ``-latest``; never a word (``-mini``, ``-nano``)
nor a minor version (``claude-opus-4-5`` is not ``claude-opus-4``)."""


def price_of_model(model: str, table: Mapping[str, ModelPrice]) -> ModelPrice | None:
    """``model``'s price in ``table``: its own name's, or the longest name it starts with
    followed by a dated suffix; the vendor namespace before a ``/`` is ignored."""
    names = [model] if "/" not in model else [model, model.rsplit("/", 1)[1]]
    best: str | None = None
    for name in names:
        if name in table:
            return table[name]
        for priced in table:
            if (
                name.startswith(priced)
                and _SUFFIX.fullmatch(name, len(priced)) is not None
                and (best is None or len(priced) > len(best))
            ):
                best = priced
    return None if best is None else table[best]


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
