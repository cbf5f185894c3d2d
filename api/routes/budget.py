"""``/v1/budget``: the caller's key's budget in the current window."""

from __future__ import annotations

import time

from fastapi import APIRouter

from api.deps import ReadCaller, SessionDep, key_budget
from api.errors import ERROR_RESPONSES
from relayq.budgets.windows import window_of
from relayq.schemas.budgets import Amounts, BudgetPublic
from relayq.store.spend import standing

__all__ = ["router"]

router = APIRouter(prefix="/v1/budget", tags=["budget"], responses=ERROR_RESPONSES)


@router.get("", response_model=BudgetPublic)
async def retrieve(key: ReadCaller, session: SessionDep) -> BudgetPublic:
    """The key's budget: its period and limits, and what its jobs reserved and spent in
    the current window. A key without a budget answers with every field null."""
    budget = key_budget(key)
    if budget is None:
        empty = Amounts()
        return BudgetPublic(
            period=None, window=None, limits=empty, reserved=empty, spent=empty, remaining=empty
        )
    window = window_of(budget.period, time.time())
    held = await standing(session, key_id=key.id, window=window)
    usd_left = None if budget.usd is None else budget.usd - held.reserved_usd - held.spent_usd
    tokens_left = (
        None if budget.tokens is None else budget.tokens - held.reserved_tokens - held.spent_tokens
    )
    return BudgetPublic(
        period=budget.period.value,
        window=window,
        limits=Amounts(usd=budget.usd, tokens=budget.tokens),
        reserved=Amounts(usd=held.reserved_usd, tokens=held.reserved_tokens),
        spent=Amounts(usd=held.spent_usd, tokens=held.spent_tokens),
        remaining=Amounts(
            usd=None if usd_left is None else max(0.0, usd_left),
            tokens=None if tokens_left is None else max(0, tokens_left),
        ),
    )
