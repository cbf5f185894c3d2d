"""The usage ledger: tokens and cost per key, UTC day, model and batch.

Each worker tick that records outcomes books their usage here in the same
transaction (:func:`book_usage`, called by
:func:`relayq.store.outcomes.finish_jobs`): one upsert for the tick, its rows
one per (key, day, model, batch) group, so the ledger is exact whatever
crashes and costs no statement per job. It outlives the jobs themselves.

A job is booked when its outcome carries usage: every succeeded job, and a
failed one whose provider reported usage. A cached answer made no provider
call and is not booked (it costs nothing).

:func:`usage_buckets` reads the ledger back, grouped as the caller asks;
:func:`job_usage_buckets` reads the same figures from the jobs themselves,
for filters the ledger cannot answer (a job's metadata): those cover only
the jobs not yet purged.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, bindparam, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from relayq.schemas.jobs import JobStatus
from relayq.store.models import Job, UsageDay

__all__ = [
    "GROUPS",
    "Booking",
    "Bucket",
    "UsageQuery",
    "book_usage",
    "day_of",
    "job_usage_buckets",
    "usage_buckets",
]

_usage = cast(Table, UsageDay.__table__)
_jobs = cast(Table, Job.__table__)

GROUPS = ("key_id", "model", "day", "batch_id")
"""What usage can be grouped by."""

_DAY = 86_400.0


def _start_of(day: str) -> float:
    return float(calendar.timegm(time.strptime(day, "%Y-%m-%d")))


def day_of(timestamp: float) -> str:
    """The UTC day of a Unix time, as the ledger keys it (``2026-12-05``)."""
    return time.strftime("%Y-%m-%d", time.gmtime(timestamp))


def _tokens(usage: Mapping[str, Any], name: str, detail: str | None = None) -> int:
    value = usage.get(name)
    if detail is not None:
        value = value.get(detail) if isinstance(value, Mapping) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


@dataclass(frozen=True, kw_only=True)
class Booking:
    """One job's outcome, as the ledger books it."""

    key_id: str
    model: str
    """The route the job asked for."""
    batch_id: str | None
    usage: Mapping[str, Any] | None
    cost_usd: float | None


_SUMS = ("requests", "prompt_tokens", "completion_tokens", "cached_tokens", "cost_usd")


def _book_statement(dialect: Any) -> Any:
    """The ledger's upsert in ``dialect``, built once: a tick's rows go with it as one
    executemany, with no statement built or compiled per tick."""
    statement = dialect.insert(_usage).values(
        {column.name: bindparam(column.name) for column in _usage.columns}
    )
    added = statement.excluded
    return statement.on_conflict_do_update(
        index_elements=[_usage.c.key_id, _usage.c.day, _usage.c.model, _usage.c.batch_id],
        set_={name: _usage.c[name] + added[name] for name in _SUMS},
    )


_BOOK = {False: _book_statement(sqlite), True: _book_statement(postgresql)}
"""The upsert, by whether the database is PostgreSQL (else SQLite)."""


async def book_usage(
    connection: AsyncConnection, *, bookings: Iterable[Booking], now: float
) -> None:
    """Add ``bookings`` with usage to the ledger's rows for ``now``'s UTC day: one
    statement, a row per group (in key order, so concurrent ticks lock alike)."""
    day = day_of(now)
    groups: dict[tuple[str, str, str], list[float]] = {}
    for booking in bookings:
        usage = booking.usage
        if not usage:
            continue
        sums = groups.setdefault((booking.key_id, booking.model, booking.batch_id or ""), [0] * 5)
        sums[0] += 1
        sums[1] += _tokens(usage, "prompt_tokens")
        sums[2] += _tokens(usage, "completion_tokens")
        sums[3] += _tokens(usage, "prompt_tokens_details", "cached_tokens")
        sums[4] += booking.cost_usd or 0.0
    if not groups:
        return
    rows = [
        {
            "key_id": key_id,
            "day": day,
            "model": model,
            "batch_id": batch_id,
            "requests": int(sums[0]),
            "prompt_tokens": int(sums[1]),
            "completion_tokens": int(sums[2]),
            "cached_tokens": int(sums[3]),
            "cost_usd": sums[4],
        }
        for (key_id, model, batch_id), sums in sorted(groups.items())
    ]
    await connection.execute(_BOOK[connection.dialect.name == "postgresql"], rows)


@dataclass(frozen=True, kw_only=True)
class UsageQuery:
    """Which usage to add up, and by what."""

    start_day: str
    end_day: str
    """Both included, ``YYYY-MM-DD`` (UTC)."""
    group_by: Sequence[str]
    """Some of :data:`GROUPS`."""
    key_id: str | None = None
    """None: every key's."""
    model: str | None = None
    batch_id: str | None = None
    """``""``: jobs outside batches only."""
    metadata: Mapping[str, str] | None = None


@dataclass(frozen=True, kw_only=True)
class Bucket:
    """The usage of one group (its grouped-by values in ``group``)."""

    group: dict[str, str]
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cost_usd: float


async def usage_buckets(session: AsyncSession, *, query: UsageQuery) -> list[Bucket]:
    """``query``'s usage from the ledger, a bucket per group, in the groups' order."""
    columns = {name: _usage.c[name] for name in GROUPS}
    sums = [
        func.sum(_usage.c.requests),
        func.sum(_usage.c.prompt_tokens),
        func.sum(_usage.c.completion_tokens),
        func.sum(_usage.c.cached_tokens),
        func.sum(_usage.c.cost_usd),
    ]
    where: list[ColumnElement[bool]] = [
        _usage.c.day >= query.start_day,
        _usage.c.day <= query.end_day,
    ]
    if query.key_id is not None:
        where.append(_usage.c.key_id == query.key_id)
    if query.model is not None:
        where.append(_usage.c.model == query.model)
    if query.batch_id is not None:
        where.append(_usage.c.batch_id == query.batch_id)
    return await _buckets(session, columns, sums, where, query.group_by)


def _job_day(session: AsyncSession) -> ColumnElement[str]:
    """A job's UTC finishing day, as the ledger writes it, in SQL."""
    if session.get_bind().dialect.name == "postgresql":
        stamp = func.to_timestamp(_jobs.c.finished_at).op("AT TIME ZONE")("UTC")
        return func.to_char(stamp, "YYYY-MM-DD")
    return func.strftime("%Y-%m-%d", _jobs.c.finished_at, "unixepoch")


async def job_usage_buckets(session: AsyncSession, *, query: UsageQuery) -> list[Bucket]:
    """``query``'s usage from the jobs table (the ledger has no metadata): the jobs the
    ledger booked in ``query``'s days, of those still stored."""
    usage = _jobs.c.usage
    prompt = usage["prompt_tokens"].as_integer()
    columns: dict[str, ColumnElement[Any]] = {
        "key_id": _jobs.c.key_id,
        "model": _jobs.c.route,
        "day": _job_day(session),
        "batch_id": func.coalesce(_jobs.c.batch_id, ""),
    }
    sums = [
        func.count(),
        func.sum(func.coalesce(prompt, 0)),
        func.sum(func.coalesce(usage["completion_tokens"].as_integer(), 0)),
        func.sum(func.coalesce(usage[("prompt_tokens_details", "cached_tokens")].as_integer(), 0)),
        func.sum(func.coalesce(_jobs.c.cost_usd, 0.0)),
    ]
    where: list[ColumnElement[bool]] = [
        _jobs.c.finished_at >= _start_of(query.start_day),
        _jobs.c.finished_at < _start_of(query.end_day) + _DAY,
        _jobs.c.status.in_([JobStatus.SUCCEEDED.value, JobStatus.FAILED.value]),
        _jobs.c.cached.is_(False),
        prompt.is_not(None),
    ]
    if query.key_id is not None:
        where.append(_jobs.c.key_id == query.key_id)
    if query.model is not None:
        where.append(_jobs.c.route == query.model)
    if query.batch_id == "":
        where.append(_jobs.c.batch_id.is_(None))
    elif query.batch_id is not None:
        where.append(_jobs.c.batch_id == query.batch_id)
    for name, value in (query.metadata or {}).items():
        where.append(_jobs.c["metadata"][name].as_string() == value)
    return await _buckets(session, columns, sums, where, query.group_by)


async def _buckets(
    session: AsyncSession,
    columns: Mapping[str, ColumnElement[Any]],
    sums: list[Any],
    where: list[ColumnElement[bool]],
    group_by: Sequence[str],
) -> list[Bucket]:
    grouped = [columns[name].label(name) for name in group_by]
    statement = select(*grouped, *sums).where(*where)
    if grouped:
        keys = [columns[name] for name in group_by]
        statement = statement.group_by(*keys).order_by(*keys)
    buckets = []
    for row in (await session.execute(statement)).all():
        values = tuple(row)
        requests = int(values[len(grouped)] or 0)
        if not requests:
            continue  # no group at all: the sums of nothing
        tokens = [int(v or 0) for v in values[len(grouped) + 1 : len(grouped) + 4]]
        buckets.append(
            Bucket(
                group={name: str(values[i]) for i, name in enumerate(group_by)},
                requests=requests,
                prompt_tokens=tokens[0],
                completion_tokens=tokens[1],
                cached_tokens=tokens[2],
                cost_usd=float(values[-1] or 0.0),
            )
        )
    return buckets
