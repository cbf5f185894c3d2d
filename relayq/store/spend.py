"""The budget ledger: reservations taken, settled at real cost, or refunded.

A key with a budget has one ``budget_spend`` row per window (a UTC day or
month). A job *reserves* its worst case with one conditional ``UPDATE`` of
that row in the transaction that stores the job: what is reserved plus what
was spent plus the new amount must stay within each limit, so two API
processes cannot both take the last of a budget (the row's lock orders
them, and the second one's condition is read again after the first commits).
The job keeps ``budget_window`` (and what it reserved) until it ends; the
transaction that ends it *settles* it: ``budget_window`` is cleared by a
statement guarded on its old value (so a job settles once, whichever path
gets there first) and the row moves the reservation to ``spent_*`` at the
job's real cost (nothing, for a job cancelled, expired or failed without
usage: a refund). The reconciler's sweep settles any ended job that still
holds a reservation (an end written by a path that does not settle, or a
process that died between the two), so the ledger's ``reserved_*`` returns
to exactly what its unfinished jobs hold.

Rows are touched in ``(key_id, window)`` order within a transaction, so two
transactions never wait on each other's rows in opposite orders.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, and_, bindparam, select, true, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from relayq.budgets.reservations import (
    BudgetLimits,
    OverBudget,
    Reservation,
    Standing,
    used_up,
)
from relayq.budgets.windows import window_of
from relayq.schemas.jobs import TERMINAL_STATUSES
from relayq.store.models import BudgetSpend, Job

__all__ = [
    "CostOf",
    "Held",
    "HeldRow",
    "held_of",
    "refund_unrun",
    "refuse_if_used_up",
    "reserve",
    "settle",
    "settle_ended",
    "standing",
    "used_tokens",
]

_spend = cast(Table, BudgetSpend.__table__)
_jobs = cast(Table, Job.__table__)
_ENDED = [status.value for status in TERMINAL_STATUSES]
_SLACK = 1e-9
"""Dollars compared with this much slack: sums of float prices are not exact."""


async def standing(session: AsyncSession, *, key_id: str, window: str) -> Standing:
    """What ``key_id``'s budget window holds (zeros for a window with nothing booked)."""
    row = (
        await session.execute(
            select(
                _spend.c.reserved_usd,
                _spend.c.reserved_tokens,
                _spend.c.spent_usd,
                _spend.c.spent_tokens,
            ).where(_spend.c.key_id == key_id, _spend.c.window == window)
        )
    ).first()
    if row is None:
        return Standing()
    return Standing(
        reserved_usd=row.reserved_usd,
        reserved_tokens=row.reserved_tokens,
        spent_usd=row.spent_usd,
        spent_tokens=row.spent_tokens,
    )


def _fits(reservation: Reservation) -> ColumnElement[bool]:
    limits = reservation.limits
    conditions: list[ColumnElement[bool]] = [
        _spend.c.key_id == reservation.key_id,
        _spend.c.window == reservation.window,
    ]
    if limits.usd is not None:
        conditions.append(
            _spend.c.reserved_usd + _spend.c.spent_usd + reservation.usd <= limits.usd + _SLACK
        )
    if limits.tokens is not None:
        conditions.append(
            _spend.c.reserved_tokens + _spend.c.spent_tokens + reservation.tokens <= limits.tokens
        )
    return and_(*conditions)


async def _take(connection: AsyncConnection, reservation: Reservation) -> bool:
    result = await connection.execute(
        update(_spend)
        .where(_fits(reservation))
        .values(
            reserved_usd=_spend.c.reserved_usd + reservation.usd,
            reserved_tokens=_spend.c.reserved_tokens + reservation.tokens,
        )
    )
    return bool(result.rowcount)


async def _open_window(connection: AsyncConnection, *, key_id: str, window: str) -> None:
    """The window's row, created empty unless another transaction did (no error either way)."""
    values = {
        "key_id": key_id,
        "window": window,
        "reserved_usd": 0.0,
        "reserved_tokens": 0,
        "spent_usd": 0.0,
        "spent_tokens": 0,
    }
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(_spend).values(values).on_conflict_do_nothing()
    await connection.execute(statement)


async def reserve(session: AsyncSession, reservation: Reservation) -> Standing | None:
    """Take ``reservation`` from its key's budget in the session's transaction.

    Returns None when it was taken, else the window's standing (nothing taken:
    the caller refuses the job). One statement when the window's row exists.
    """
    connection = await session.connection()
    if await _take(connection, reservation):
        return None
    await _open_window(connection, key_id=reservation.key_id, window=reservation.window)
    if await _take(connection, reservation):
        return None
    return await standing(session, key_id=reservation.key_id, window=reservation.window)


@dataclass(frozen=True, slots=True)
class Held:
    """An ended job's reservation, to be settled at ``cost_usd`` and ``tokens``."""

    job_id: str
    key_id: str
    window: str
    reserved_usd: float
    reserved_tokens: int
    cost_usd: float | None
    """What the job cost (None: not priced, or never called; nothing is booked)."""
    tokens: int


def used_tokens(usage: Mapping[str, Any] | None) -> int:
    """The tokens an OpenAI usage object counts (0 without one)."""
    if not usage:
        return 0
    total = usage.get("total_tokens")
    if isinstance(total, int) and total > 0:
        return total
    parts = (usage.get("prompt_tokens"), usage.get("completion_tokens"))
    return sum(part for part in parts if isinstance(part, int) and part > 0)


async def settle(session: AsyncSession, held: Iterable[Held]) -> list[str]:
    """Settle ``held`` in the session's transaction; the ids settled now.

    Each job's ``budget_window`` is cleared only if it still holds the
    window it reserved in (and its cost stored): a job another path settled
    meanwhile is skipped, so nothing is booked twice.
    """
    connection = await session.connection()
    settled: list[str] = []
    totals: dict[tuple[str, str], list[float]] = {}
    for one in sorted(held, key=lambda h: (h.key_id, h.window, h.job_id)):
        values: dict[str, Any] = {"budget_window": None}
        if one.cost_usd is not None:
            values["cost_usd"] = one.cost_usd
        result = await connection.execute(
            update(_jobs)
            .where(_jobs.c.id == one.job_id, _jobs.c.budget_window == one.window)
            .values(values)
        )
        if not result.rowcount:
            continue
        settled.append(one.job_id)
        total = totals.setdefault((one.key_id, one.window), [0.0, 0, 0.0, 0])
        total[0] += one.reserved_usd
        total[1] += one.reserved_tokens
        total[2] += one.cost_usd or 0.0
        total[3] += one.tokens
    for (key_id, window), (reserved_usd, reserved_tokens, spent_usd, spent_tokens) in sorted(
        totals.items()
    ):
        await connection.execute(
            update(_spend)
            .where(_spend.c.key_id == key_id, _spend.c.window == window)
            .values(
                reserved_usd=_spend.c.reserved_usd - reserved_usd,
                reserved_tokens=_spend.c.reserved_tokens - int(reserved_tokens),
                spent_usd=_spend.c.spent_usd + spent_usd,
                spent_tokens=_spend.c.spent_tokens + int(spent_tokens),
            )
        )
    return settled


HeldRow = Any
"""A row of :func:`held_of`'s query: a job's id, key, window, reservation, usage, cost,
route, deployment and batch."""
CostOf = Callable[[HeldRow], float | None]


def _stored_cost(row: HeldRow) -> float | None:
    return cast(float | None, row.cost_usd)


def held_of(row: HeldRow, cost_of: CostOf = _stored_cost) -> Held:
    """``row``'s reservation to settle, at the cost ``cost_of`` gives (its stored one)."""
    return Held(
        job_id=row.id,
        key_id=row.key_id,
        window=row.budget_window,
        reserved_usd=row.reserved_usd or 0.0,
        reserved_tokens=row.reserved_tokens or 0,
        cost_usd=cost_of(row),
        tokens=used_tokens(row.usage),
    )


_HELD_COLUMNS = (
    _jobs.c.id,
    _jobs.c.key_id,
    _jobs.c.budget_window,
    _jobs.c.reserved_usd,
    _jobs.c.reserved_tokens,
    _jobs.c.usage,
    _jobs.c.cost_usd,
    _jobs.c.route,
    _jobs.c.provider,
    _jobs.c.upstream_model,
    _jobs.c.deployment_index,
    _jobs.c.batch_id,
)


async def settle_ended(
    session: AsyncSession,
    *,
    job_ids: Sequence[str] | None = None,
    batch_id: str | None = None,
    limit: int | None = None,
    cost_of: CostOf = _stored_cost,
) -> list[str]:
    """Settle the ended jobs that still hold a reservation: among ``job_ids``, of
    ``batch_id``, or (neither) any, at most ``limit``; in the session's transaction.

    One query when none holds one. ``cost_of`` prices a job (default: its
    stored ``cost_usd``; None books nothing: a refund).
    """
    where: ColumnElement[bool] = true()
    if job_ids is not None:
        if not job_ids:
            return []
        where = _jobs.c.id.in_(bindparam("ids", list(job_ids), expanding=True))
    if batch_id is not None:
        where = and_(where, _jobs.c.batch_id == batch_id)
    query = select(*_HELD_COLUMNS).where(
        where, _jobs.c.budget_window.is_not(None), _jobs.c.status.in_(_ENDED)
    )
    if limit is not None:
        query = query.order_by(_jobs.c.budget_window).limit(limit)
    rows = (await session.execute(query)).all()
    if not rows:
        return []
    return await settle(session, [held_of(row, cost_of) for row in rows])


async def refund_unrun(session: AsyncSession, *, batch_id: str) -> int:
    """Refund the reservations of ``batch_id``'s requests that ended without a call
    (cancelled or expired while queued), in bulk and in the session's transaction.

    A batch's requests reserve in one window; one ``UPDATE … RETURNING`` per window
    clears them, however many there are. Requests that ran settle as any job does.
    Returns how many were refunded.
    """
    connection = await session.connection()
    windows = (
        await connection.execute(
            select(_jobs.c.key_id, _jobs.c.budget_window)
            .where(_jobs.c.batch_id == batch_id, _jobs.c.budget_window.is_not(None))
            .distinct()
        )
    ).all()
    refunded = 0
    for key_id, window in sorted(windows):
        rows = (
            await connection.execute(
                update(_jobs)
                .where(
                    _jobs.c.batch_id == batch_id,
                    _jobs.c.budget_window == window,
                    _jobs.c.status.in_(_ENDED),
                    _jobs.c.usage.is_(None),
                    _jobs.c.cost_usd.is_(None),
                )
                .values(budget_window=None)
                .returning(_jobs.c.reserved_usd, _jobs.c.reserved_tokens)
            )
        ).all()
        if not rows:
            continue
        refunded += len(rows)
        await connection.execute(
            update(_spend)
            .where(_spend.c.key_id == key_id, _spend.c.window == window)
            .values(
                reserved_usd=_spend.c.reserved_usd - sum(row[0] or 0.0 for row in rows),
                reserved_tokens=_spend.c.reserved_tokens - sum(row[1] or 0 for row in rows),
            )
        )
    return refunded


async def refuse_if_used_up(
    session: AsyncSession, *, key_id: str, limits: BudgetLimits, now: float
) -> None:
    """Raise :class:`OverBudget` when nothing is left of ``key_id``'s budget in the window
    of ``now`` (a batch is refused at once; its worst case is reserved when it is read)."""
    window = window_of(limits.period, now)
    held = await standing(session, key_id=key_id, window=window)
    if used_up(limits, held):
        raise OverBudget(Reservation(key_id, window, 0.0, 0, limits), held)
