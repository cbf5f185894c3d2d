"""The purge: rows past their retention period deleted, a bounded chunk per table at a time.

Each function deletes at most ``limit`` rows from each table it touches, so a
pass stays short whatever the backlog (the next pass goes on where it left
off). Children go before their parents: delivery attempts, then deliveries
and attempts, then jobs, then batches; a parent is deleted only once none of
its children is left, and only while it is still what the purge chose it for
(a job ended, a batch ended), checked again in the ``DELETE`` itself. A
batch's requests go with their batch, never while it is live. The usage
ledger (``usage_days``) is kept; a budget window goes once it is two periods
old and holds no reservation.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, delete, exists, func, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from relayq.schemas.batches import FINAL_BATCH_STATUSES, BatchStatus
from relayq.schemas.jobs import TERMINAL_STATUSES
from relayq.store.models import (
    Attempt,
    AuditEntry,
    Batch,
    BudgetSpend,
    File,
    Job,
    WebhookAttempt,
    WebhookDelivery,
)

__all__ = [
    "PurgedJobs",
    "purge_audit",
    "purge_budget_windows",
    "purge_files",
    "purge_jobs",
]

_TERMINAL = [status.value for status in TERMINAL_STATUSES]
_FINAL = [status.value for status in FINAL_BATCH_STATUSES]


@dataclass(frozen=True, kw_only=True)
class PurgedJobs:
    """Rows one call of :func:`purge_jobs` deleted, by table."""

    jobs: int = 0
    attempts: int = 0
    deliveries: int = 0
    delivery_attempts: int = 0
    batches: int = 0


def _batch_ended() -> ColumnElement[float | None]:
    return func.coalesce(Batch.completed_at, Batch.failed_at, Batch.expired_at, Batch.cancelled_at)


def _batch_purgeable(before: float) -> ColumnElement[bool]:
    return and_(Batch.status.in_(_FINAL), _batch_ended() < before)


def _job_purgeable(
    *, jobs_before: float | None, batches_before: float | None
) -> ColumnElement[bool] | None:
    """Jobs that may go: ended, holding no budget reservation (the reconciler's sweep
    settles it first), and either of their own and ended before ``jobs_before``, or
    requests of a batch that ended before ``batches_before``."""
    kinds: list[ColumnElement[bool]] = []
    if jobs_before is not None:
        kinds.append(and_(Job.batch_id.is_(None), Job.finished_at < jobs_before))
    if batches_before is not None:
        ended = select(Batch.id).where(_batch_purgeable(batches_before))
        kinds.append(Job.batch_id.in_(ended))
    if not kinds:
        return None
    return and_(
        Job.status.in_(_TERMINAL),
        Job.finished_at.is_not(None),
        Job.budget_window.is_(None),
        or_(*kinds),
    )


async def _ids(session: AsyncSession, query: Select[Any]) -> list[Any]:
    return list((await session.execute(query)).scalars())


async def _delete_in(
    session: AsyncSession, column: InstrumentedAttribute[Any], ids: Sequence[Any]
) -> int:
    """Delete the rows of ``column``'s table whose ``column`` is one of ``ids``."""
    if not ids:
        return 0
    result = await session.execute(
        delete(column.class_).where(column.in_(ids)).execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def purge_jobs(
    session: AsyncSession,
    *,
    jobs_before: float | None,
    batches_before: float | None,
    limit: int,
) -> PurgedJobs:
    """Delete up to ``limit`` rows per table of jobs and batches past their period.

    ``jobs_before``: jobs of their own that ended before it go; ``batches_before``:
    batches that ended before it go, with their requests. None keeps that kind.
    The caller's session is committed here.
    """
    job_filter = _job_purgeable(jobs_before=jobs_before, batches_before=batches_before)
    job_ids: list[Any] = []
    if job_filter is not None:
        # Oldest first, so the same jobs come back until their children are gone.
        query = select(Job.id).where(job_filter).order_by(Job.finished_at).limit(limit)
        job_ids = await _ids(session, query)
    batch_ids: list[Any] = []
    if batches_before is not None:
        query = select(Batch.id).where(_batch_purgeable(batches_before)).order_by(Batch.id)
        batch_ids = await _ids(session, query.limit(limit))
    if not job_ids and not batch_ids:
        return PurgedJobs()
    children = await _purge_children(session, job_ids=job_ids, batch_ids=batch_ids, limit=limit)
    jobs = batches = 0
    if job_filter is not None and job_ids:
        jobs = await _delete_childless(
            session,
            Job,
            Job.id.in_(job_ids),
            job_filter,  # still ended: checked again as it is deleted
            ~exists().where(Attempt.job_id == Job.id),
            ~exists().where(WebhookDelivery.job_id == Job.id),
        )
    if batches_before is not None and batch_ids:
        batches = await _delete_childless(
            session,
            Batch,
            Batch.id.in_(batch_ids),
            _batch_purgeable(batches_before),
            ~exists().where(Job.batch_id == Batch.id),
            ~exists().where(WebhookDelivery.batch_id == Batch.id),
        )
    await session.commit()
    return PurgedJobs(
        jobs=jobs,
        attempts=children.attempts,
        deliveries=children.deliveries,
        delivery_attempts=children.delivery_attempts,
        batches=batches,
    )


async def _purge_children(
    session: AsyncSession, *, job_ids: list[Any], batch_ids: list[Any], limit: int
) -> PurgedJobs:
    """Up to ``limit`` each of the chosen jobs' and batches' delivery attempts, deliveries
    (once their attempts are gone) and attempts."""
    of_chosen = or_(WebhookDelivery.job_id.in_(job_ids), WebhookDelivery.batch_id.in_(batch_ids))
    delivery_attempts = await _delete_in(
        session,
        WebhookAttempt.id,
        await _ids(
            session,
            select(WebhookAttempt.id)
            .join(WebhookDelivery, WebhookAttempt.delivery_id == WebhookDelivery.id)
            .where(of_chosen)
            .order_by(WebhookAttempt.id)
            .limit(limit),
        ),
    )
    has_attempts = exists().where(WebhookAttempt.delivery_id == WebhookDelivery.id)
    deliveries = await _delete_in(
        session,
        WebhookDelivery.id,
        await _ids(
            session, select(WebhookDelivery.id).where(of_chosen, ~has_attempts).limit(limit)
        ),
    )
    attempts = await _delete_in(
        session,
        Attempt.id,
        await _ids(
            session,
            select(Attempt.id).where(Attempt.job_id.in_(job_ids)).order_by(Attempt.id).limit(limit),
        ),
    )
    return PurgedJobs(attempts=attempts, deliveries=deliveries, delivery_attempts=delivery_attempts)


async def _delete_childless(
    session: AsyncSession, table: type[Job] | type[Batch], *conditions: ColumnElement[bool]
) -> int:
    """Delete the rows of ``table`` that match ``conditions`` (chosen, still what made
    them purgeable, and no child left); how many went."""
    result = await session.execute(
        delete(table).where(*conditions).execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def purge_files(session: AsyncSession, *, now: float, limit: int) -> list[str]:
    """Delete up to ``limit`` rows of files expired or deleted; their ids, whose bytes the
    caller then deletes from the file storage (after the rows, so no row outlives its
    bytes). The input file of a batch still validating is kept until it is read."""
    being_read = exists().where(
        Batch.input_file_id == File.id, Batch.status == BatchStatus.VALIDATING.value
    )
    gone = or_(File.expires_at <= now, File.deleted_at.is_not(None))
    ids = [
        str(file_id)
        for file_id in await _ids(
            session, select(File.id).where(gone, ~being_read).order_by(File.id).limit(limit)
        )
    ]
    await _delete_in(session, File.id, ids)
    await session.commit()
    return ids


async def purge_audit(session: AsyncSession, *, before: float, limit: int) -> int:
    """Delete up to ``limit`` audit entries older than ``before``, oldest first."""
    query = select(AuditEntry.id).where(AuditEntry.at < before).order_by(AuditEntry.id)
    purged = await _delete_in(session, AuditEntry.id, await _ids(session, query.limit(limit)))
    await session.commit()
    return purged


async def purge_budget_windows(session: AsyncSession, *, now: float, limit: int) -> int:
    """Delete up to ``limit`` budget windows two periods old or more that hold no
    reservation (an unfinished job's reservation keeps its window)."""
    today = datetime.datetime.fromtimestamp(now, tz=datetime.UTC).date()
    oldest_day = (today - datetime.timedelta(days=2)).isoformat()
    month = today.year * 12 + today.month - 1 - 2
    oldest_month = f"{month // 12:04d}-{month % 12 + 1:02d}"
    window = BudgetSpend.window
    old = or_(
        and_(func.length(window) == 10, window < oldest_day),
        and_(func.length(window) == 7, window < oldest_month),
    )
    unreserved = and_(BudgetSpend.reserved_usd == 0, BudgetSpend.reserved_tokens == 0)
    query = select(BudgetSpend.key_id, BudgetSpend.window).where(old, unreserved).limit(limit)
    rows = [tuple(row) for row in (await session.execute(query)).all()]
    if not rows:
        return 0
    result = await session.execute(
        delete(BudgetSpend)
        .where(tuple_(BudgetSpend.key_id, BudgetSpend.window).in_(rows), old, unreserved)
        .execution_options(synchronize_session=False)
    )
    await session.commit()
    return int(result.rowcount)  # type: ignore[attr-defined]
