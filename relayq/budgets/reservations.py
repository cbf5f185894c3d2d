"""A key's budget, what one job (or one batch) takes from it, and the refusal.

The amounts are checked and taken by one conditional ``UPDATE`` of the key's
``budget_spend`` row (:mod:`relayq.store.spend`): what is reserved plus what
was spent plus the new worst case must stay within each limit.
"""

from __future__ import annotations

from dataclasses import dataclass

from relayq.budgets.windows import Period

__all__ = ["BudgetLimits", "OverBudget", "Reservation", "Standing", "dollars", "used_up"]


def dollars(amount: float) -> str:
    """``amount`` as a price: cents from a cent up (``$5.00``), else to the millionth of a
    dollar (``$0.000256``), so a small budget never reads as ``$0.00``."""
    if amount >= 0.01 or amount == 0:
        return f"${amount:,.2f}"
    return f"${amount:.6f}"


@dataclass(frozen=True, slots=True)
class BudgetLimits:
    """A key's budget per period; a limit of None is not enforced."""

    period: Period
    usd: float | None
    tokens: int | None

    @classmethod
    def of(cls, period: str | None, usd: float | None, tokens: int | None) -> BudgetLimits | None:
        """The budget of a key's columns; None when it has none (no period, or no limit)."""
        if period is None or (usd is None and tokens is None):
            return None
        return cls(period=Period(period), usd=usd, tokens=tokens)

    def describe(self) -> str:
        """``$5.00 per day and 100000 tokens per day``."""
        parts = []
        if self.usd is not None:
            parts.append(f"{dollars(self.usd)} per {self.period.value}")
        if self.tokens is not None:
            parts.append(f"{self.tokens} tokens per {self.period.value}")
        return " and ".join(parts)


@dataclass(frozen=True, slots=True)
class Standing:
    """A key's budget window as the ledger holds it."""

    reserved_usd: float = 0.0
    reserved_tokens: int = 0
    spent_usd: float = 0.0
    spent_tokens: int = 0


def used_up(limits: BudgetLimits, standing: Standing) -> bool:
    """Whether nothing is left of ``limits`` in the window ``standing`` describes."""
    usd_gone = limits.usd is not None and standing.reserved_usd + standing.spent_usd >= limits.usd
    tokens_gone = (
        limits.tokens is not None
        and standing.reserved_tokens + standing.spent_tokens >= limits.tokens
    )
    return usd_gone or tokens_gone


@dataclass(frozen=True, slots=True)
class Reservation:
    """The worst case one job (or the jobs of one batch) takes from ``key_id``'s
    budget in ``window``, checked against ``limits``."""

    key_id: str
    window: str
    usd: float
    tokens: int
    limits: BudgetLimits


class OverBudget(Exception):
    """The reservation does not fit in what is left of the key's budget: nothing was taken."""

    def __init__(self, reservation: Reservation, standing: Standing) -> None:
        self.reservation = reservation
        self.standing = standing
        super().__init__(self.describe())

    def describe(self) -> str:
        r, s = self.reservation, self.standing
        if r.usd == 0 and r.tokens == 0:
            return (
                f"This key's budget of {r.limits.describe()} is used up for window "
                f"{r.window}: {dollars(s.reserved_usd)} ({s.reserved_tokens} tokens) is reserved "
                f"by unfinished jobs and {dollars(s.spent_usd)} ({s.spent_tokens} tokens) is "
                "spent. Wait for the next window, or ask for a larger budget."
            )
        return (
            f"This request would exceed the key's budget of {r.limits.describe()} "
            f"(window {r.window}): it may cost up to {dollars(r.usd)} and {r.tokens} tokens, "
            f"and {dollars(s.reserved_usd)} ({s.reserved_tokens} tokens) is reserved by "
            f"unfinished jobs while {dollars(s.spent_usd)} ({s.spent_tokens} tokens) is spent. "
            "Set max_tokens lower, wait for the next window, or ask for a larger budget."
        )
