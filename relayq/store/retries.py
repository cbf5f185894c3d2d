"""Job transitions for resilience: wait and retry, fall back, expire.

Each is one conditional statement guarded like the outcome write (the claim's
``run`` and ``running`` status), recorded with the attempt in one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from relayq.schemas.jobs import JobStatus
from relayq.store.attempts import AttemptRecord, attempt_row
from relayq.store.claims import Claim
from relayq.store.models import Job
from relayq.store.planning import plan_deliveries
from relayq.store.spend import settle_ended

__all__ = ["Expired", "Placement", "expire_claimed", "expire_due", "requeue_job"]


@dataclass(frozen=True, kw_only=True)
class Placement:
    """Where a requeued job goes next: the same deployment, or another one."""

    provider: str
    upstream_model: str
    deployment_index: int
    deployment_attempts: int


@dataclass(frozen=True, kw_only=True)
class Expired:
    job_id: str
    key_id: str


async def requeue_job(
    session: AsyncSession,
    *,
    claim: Claim,
    placement: Placement,
    not_before: float,
    attempt: AttemptRecord | None,
    now: float,
) -> bool:
    """Put the job back in the queue (after an attempt, or to wait its turn).

    The job is ``queued`` with no confirmed message; its caller publishes
    the message with a countdown and marks it, and the reconciler sends it
    if that fails, once ``not_before`` has passed.
    """
    if attempt is not None:
        session.add(attempt_row(claim=claim, attempt=attempt, now=now))
    result = await session.execute(
        update(Job)
        .where(Job.id == claim.job_id, Job.run == claim.run, Job.status == JobStatus.RUNNING.value)
        .values(
            status=JobStatus.QUEUED.value,
            lease_expires_at=None,
            enqueued_at=None,
            not_before=not_before,
            provider=placement.provider,
            upstream_model=placement.upstream_model,
            deployment_index=placement.deployment_index,
            deployment_attempts=placement.deployment_attempts,
            attempts=Job.attempts + (1 if attempt is not None else 0),
        )
        .execution_options(synchronize_session=False)
    )
    await session.commit()
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def expire_claimed(session: AsyncSession, *, claim: Claim, now: float) -> bool:
    """A claimed job found past its deadline: ``expired`` instead of running."""
    ended = (
        await session.execute(
            update(Job)
            .where(
                Job.id == claim.job_id,
                Job.run == claim.run,
                Job.status == JobStatus.RUNNING.value,
            )
            .values(status=JobStatus.EXPIRED.value, finished_at=now, lease_expires_at=None)
            .returning(Job.budget_window)
            .execution_options(synchronize_session=False)
        )
    ).all()
    expired = bool(ended)
    if expired:
        await plan_deliveries(session, job_id=claim.job_id, now=now)
        if ended[0].budget_window is not None:
            await settle_ended(session, job_ids=[claim.job_id])  # its reservation back
    await session.commit()
    return expired


async def expire_due(session: AsyncSession, *, now: float, limit: int) -> list[Expired]:
    """Queued jobs past their deadline become ``expired``, with their webhooks planned."""
    due = list(
        (
            await session.execute(
                select(Job.id, Job.key_id)
                # A batch's requests expire with their batch, all at once (the scheduler).
                .where(
                    Job.status == JobStatus.QUEUED.value,
                    Job.expires_at < now,
                    Job.batch_id.is_(None),
                )
                .limit(limit)
            )
        ).all()
    )
    expired: list[Expired] = []
    for job_id, key_id in due:
        result = await session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.QUEUED.value)
            .values(status=JobStatus.EXPIRED.value, finished_at=now)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount:  # type: ignore[attr-defined]
            await plan_deliveries(session, job_id=job_id, now=now)
            expired.append(Expired(job_id=job_id, key_id=key_id))
    await settle_ended(session, job_ids=[job.job_id for job in expired])  # refunds
    await session.commit()
    return expired
