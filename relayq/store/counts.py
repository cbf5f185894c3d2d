"""Counts of unfinished jobs: per deployment, per status and provider, per key.

The reconciler repairs the in-flight counters of routing and of per-key
limits in Redis from these; the ``relayq_jobs`` gauge reads them.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from relayq.schemas.jobs import JobStatus
from relayq.store.models import Job

__all__ = [
    "count_active",
    "count_active_by_key",
    "count_queued_and_running",
    "unfinished_of",
    "unfinished_of_key",
]

_ACTIVE = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)


async def count_active(session: AsyncSession) -> dict[tuple[str, str], int]:
    """Unfinished jobs per deployment (provider, upstream model)."""
    query = (
        select(Job.provider, Job.upstream_model, func.count())
        .where(Job.status.in_(_ACTIVE), Job.held.is_(False))
        .group_by(Job.provider, Job.upstream_model)
    )
    rows = (await session.execute(query)).all()
    return {(provider, model): int(count) for provider, model, count in rows}


async def count_queued_and_running(session: AsyncSession) -> dict[tuple[str, str], int]:
    """Queued and running jobs per (status, provider): the ``relayq_jobs`` gauge."""
    query = (
        select(Job.status, Job.provider, func.count())
        .where(Job.status.in_([JobStatus.QUEUED.value, JobStatus.RUNNING.value]))
        .group_by(Job.status, Job.provider)
    )
    rows = (await session.execute(query)).all()
    return {(status, provider): int(count) for status, provider, count in rows}


async def count_active_by_key(session: AsyncSession) -> dict[str, int]:
    """Unfinished jobs per API key (a batch's requests are not counted: see
    :attr:`relayq.store.claims.Claim.batch_id`)."""
    query = (
        select(Job.key_id, func.count())
        .where(Job.status.in_(_ACTIVE), Job.batch_id.is_(None))
        .group_by(Job.key_id)
    )
    return {key_id: int(count) for key_id, count in (await session.execute(query)).all()}


async def unfinished_of(session: AsyncSession, *, job_ids: Sequence[str]) -> set[str]:
    """Which of ``job_ids`` are stored and unfinished."""
    if not job_ids:
        return set()
    query = select(Job.id).where(Job.id.in_(job_ids), Job.status.in_(_ACTIVE))
    return set((await session.scalars(query)).all())


async def unfinished_of_key(
    session: AsyncSession, *, key_id: str, after: str | None, limit: int
) -> list[tuple[str, float]]:
    """Up to ``limit`` unfinished jobs of ``key_id`` outside batches, by id from
    past ``after`` (None: the first): ``(id, created_at)``."""
    query = (
        select(Job.id, Job.created_at)
        .where(Job.key_id == key_id, Job.status.in_(_ACTIVE), Job.batch_id.is_(None))
        .order_by(Job.id)
        .limit(limit)
    )
    if after is not None:
        query = query.where(Job.id > after)
    return [(job_id, created) for job_id, created in (await session.execute(query)).all()]
