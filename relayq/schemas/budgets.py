"""A key's budget as its owner reads it (``GET /v1/budget``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

__all__ = ["Amounts", "BudgetPublic"]


class Amounts(BaseModel):
    """Dollars and tokens; None where the budget sets no limit of that kind."""

    usd: float | None = None
    tokens: int | None = None


class BudgetPublic(BaseModel):
    """The key's budget in the current window: what reserved and spent leave of it."""

    object: Literal["budget"] = "budget"
    period: Literal["day", "month"] | None = Field(
        description="How long the budget lasts (UTC); null: the key has no budget."
    )
    window: str | None = Field(
        description="The current window: `2026-12-05` for a day, `2026-12` for a month."
    )
    limits: Amounts = Field(description="The budget per period.")
    reserved: Amounts = Field(
        description="The worst case of the key's unfinished jobs, held until they end."
    )
    spent: Amounts = Field(description="The real cost of the window's finished jobs.")
    remaining: Amounts = Field(
        description="What a new job may still reserve: limits less reserved and spent "
        "(never below zero)."
    )
