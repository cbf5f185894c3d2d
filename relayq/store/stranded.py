"""Stranded jobs: queued with no message on the broker, or running with no worker.

The reconciler finds the queued ones and sends each a message again (a
duplicate is harmless: the claim skips it). A running job whose lease lapsed,
or whose worker process is known dead, is handed back to the queue first,
its cut run recorded as an ``interrupted`` attempt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from relayq.schemas.jobs import JobStatus
from relayq.store.attempts import add_attempts
from relayq.store.models import Job

__all__ = [
    "Stranded",
    "find_stranded",
    "release_lapsed",
    "release_owned",
]

_jobs = cast(Table, Job.__table__)


@dataclass(frozen=True, kw_only=True)
class Stranded:
    """A queued job with no known message on the broker."""

    job_id: str
    provider: str
    priority: int


async def find_stranded(
    session: AsyncSession, *, created_before: float, enqueued_before: float, limit: int
) -> list[Stranded]:
    """Queued jobs that may have no message on the broker, oldest first.

    Those whose message the broker never confirmed (created before
    ``created_before``), and those confirmed before ``enqueued_before``: a
    broker that was flushed, or a delivery dropped without running the job,
    loses such a message, and a duplicate is harmless (the claim skips it).
    """
    unconfirmed = (
        Job.enqueued_at.is_(None)
        & (Job.created_at < created_before)
        # A job waiting out a retry or a rate limit is sent when its wait ends.
        & (Job.not_before.is_(None) | (Job.not_before < created_before))
    )
    query = (
        select(Job.id, Job.provider, Job.priority)
        .where(
            Job.status == JobStatus.QUEUED.value,
            Job.held.is_(False),  # a held batch request waits for the batch scheduler
            unconfirmed | (Job.enqueued_at < enqueued_before),
        )
        .order_by(Job.id)
        .limit(limit)
    )
    rows = (await session.execute(query)).all()
    return [Stranded(job_id=r.id, provider=r.provider, priority=r.priority) for r in rows]


_RELEASED = (
    _jobs.c.id,
    _jobs.c.run,
    _jobs.c.provider,
    _jobs.c.upstream_model,
    _jobs.c.priority,
    _jobs.c.started_at,
)


_HAND_BACK = {
    "status": JobStatus.QUEUED.value,
    "enqueued_at": None,
    "lease_expires_at": None,
    "owner": None,
    # The cut run most likely called its provider: it counts against the job's budget.
    "attempts": _jobs.c.attempts + 1,
}


async def _record_interrupted(session: AsyncSession, rows: Sequence[Any], now: float) -> None:
    """An ``interrupted`` attempt for each released run: a crash leaves a record, not none."""
    if not rows:
        return
    error = {"code": "interrupted", "message": "the worker running this call stopped first"}
    await add_attempts(
        session,
        rows=[
            {
                "job_id": row.id,
                "run": row.run,
                "provider": row.provider,
                "upstream_model": row.upstream_model,
                "status": "interrupted",
                "latency_ms": max(0.0, (now - (row.started_at or now)) * 1000),
                "error": error,
                "created_at": now,
            }
            for row in rows
        ],
    )


async def release_lapsed(session: AsyncSession, *, now: float, limit: int) -> int:
    """Put running jobs whose lease lapsed back in the queue (their worker died)."""
    lapsed = (
        select(_jobs.c.id)
        .where(_jobs.c.status == JobStatus.RUNNING.value, _jobs.c.lease_expires_at < now)
        .limit(limit)
        .scalar_subquery()
    )
    connection = await session.connection()
    rows = (
        await connection.execute(
            update(_jobs)
            .where(
                _jobs.c.id.in_(lapsed),
                _jobs.c.status == JobStatus.RUNNING.value,
                _jobs.c.lease_expires_at < now,
            )
            .values(**_HAND_BACK)
            .returning(*_RELEASED)
        )
    ).all()
    await _record_interrupted(session, rows, now)
    await session.commit()
    return len(rows)


async def release_owned(session: AsyncSession, *, owner: str, now: float) -> list[Stranded]:
    """Hand back every job a dead worker process (``owner``) held: queued again at once,
    each cut run recorded as ``interrupted``; the jobs, to publish again."""
    connection = await session.connection()
    rows = (
        await connection.execute(
            update(_jobs)
            .where(_jobs.c.owner == owner, _jobs.c.status == JobStatus.RUNNING.value)
            .values(**_HAND_BACK)
            .returning(*_RELEASED)
        )
    ).all()
    await _record_interrupted(session, rows, now)
    await session.commit()
    return [Stranded(job_id=r.id, provider=r.provider, priority=r.priority) for r in rows]
