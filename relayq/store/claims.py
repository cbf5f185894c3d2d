"""Claims: a worker's hold on a running job, taken, renewed and given back.

A claim succeeds only for a queued job or one whose lease lapsed, and each
claim adds one to the job's ``run``: the fencing token under which its
outcome is written (see :mod:`relayq.store.outcomes`). So a message
delivered twice runs the job once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, bindparam, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from relayq.schemas.jobs import JobStatus
from relayq.store.models import Job

__all__ = [
    "Claim",
    "claim_job",
    "claim_jobs",
    "release_claim",
    "renew_leases",
]

_jobs = cast(Table, Job.__table__)


@dataclass(frozen=True, kw_only=True)
class Claim:
    """A worker's hold on a running job."""

    job_id: str
    key_id: str
    run: int
    provider: str
    upstream_model: str
    request: dict[str, Any]
    cache_key: str | None = None
    cache_ttl: float | None = None
    route: str = ""
    priority: int = 5
    attempts: int = 0
    """Provider calls already made for the job (before this run's)."""
    deployment_index: int = 0
    deployment_attempts: int = 0
    first_deployment: int = 0
    expires_at: float | None = None
    not_before: float | None = None
    batch_id: str | None = None
    """A batch's request: no deltas, no per-key count (the batch is the unit)."""
    reply_to: str | None = None
    """Where the caller waiting on the job reads its deltas and end
    (see :mod:`relayq.direct.replies`)."""
    created_at: float | None = None
    """When the job was accepted (epoch seconds): its queue wait and age in its log line."""
    claimed_at: float | None = None
    """When this run claimed it (epoch seconds)."""
    kind: str = "chat"
    """What the job asks its provider for: ``chat`` or ``embeddings``."""


# The hot path's statements are built once (Core, on the tables): SQLAlchemy then
# reuses their compiled form and cache key, where an ORM statement built per call
# costs its construction, its cache key and the ORM's bulk-update machinery.
_CLAIM = (
    update(_jobs)
    .where(
        _jobs.c.id.in_(bindparam("job_ids", expanding=True)),
        (_jobs.c.status == JobStatus.QUEUED.value)
        | (
            (_jobs.c.status == JobStatus.RUNNING.value)
            & (_jobs.c.lease_expires_at < bindparam("now"))
        ),
    )
    .values(
        status=JobStatus.RUNNING.value,
        run=_jobs.c.run + 1,
        lease_expires_at=bindparam("lease_until"),
        started_at=bindparam("now"),
        owner=bindparam("owner"),
    )
    .returning(
        _jobs.c.id,
        _jobs.c.key_id,
        _jobs.c.run,
        _jobs.c.provider,
        _jobs.c.upstream_model,
        _jobs.c.request,
        _jobs.c.cache_key,
        _jobs.c.cache_ttl,
        _jobs.c.route,
        _jobs.c.priority,
        _jobs.c.attempts,
        _jobs.c.deployment_index,
        _jobs.c.deployment_attempts,
        _jobs.c.first_deployment,
        _jobs.c.expires_at,
        _jobs.c.not_before,
        _jobs.c.batch_id,
        _jobs.c.reply_to,
        _jobs.c.created_at,
        _jobs.c.started_at,
        _jobs.c.kind,
    )
)


async def claim_jobs(
    session: AsyncSession,
    *,
    job_ids: Sequence[str],
    now: float,
    lease_seconds: float,
    owner: str | None = None,
) -> dict[str, Claim]:
    """Take ``job_ids`` for running in one statement: the claims of those that were ours.

    A queued job is claimed; so is a running one whose lease lapsed (its
    worker died). A finished or cancelled job, or one held by a live lease,
    is left alone, which makes a redelivered message harmless.
    """
    if not job_ids:
        return {}
    # On the session's connection: a Core statement needs none of the ORM's execution path.
    connection = await session.connection()
    result = await connection.execute(
        _CLAIM,
        {
            "job_ids": list(dict.fromkeys(job_ids)),
            "now": now,
            "lease_until": now + lease_seconds,
            "owner": owner,
        },
    )
    rows = result.all()
    await session.commit()
    return {row.id: _claim(row) for row in rows}


def _claim(row: Any) -> Claim:
    return Claim(
        job_id=row.id,
        key_id=row.key_id,
        run=row.run,
        provider=row.provider,
        upstream_model=row.upstream_model,
        request=row.request,
        cache_key=row.cache_key,
        cache_ttl=row.cache_ttl,
        route=row.route,
        priority=row.priority,
        attempts=row.attempts,
        deployment_index=row.deployment_index,
        deployment_attempts=row.deployment_attempts,
        first_deployment=row.first_deployment,
        expires_at=row.expires_at,
        not_before=row.not_before,
        batch_id=row.batch_id,
        reply_to=row.reply_to,
        created_at=row.created_at,
        claimed_at=row.started_at,
        kind=row.kind,
    )


async def claim_job(
    session: AsyncSession,
    *,
    job_id: str,
    now: float,
    lease_seconds: float,
    owner: str | None = None,
) -> Claim | None:
    """Take one job for running (see :func:`claim_jobs`), or None if it is not ours to run."""
    claims = await claim_jobs(
        session, job_ids=[job_id], now=now, lease_seconds=lease_seconds, owner=owner
    )
    return claims.get(job_id)


async def renew_leases(session: AsyncSession, *, claims: Sequence[Claim], until: float) -> None:
    """Extend the leases of jobs this worker is running, in one statement."""
    if not claims:
        return
    held = tuple_(Job.id, Job.run).in_([(c.job_id, c.run) for c in claims])
    await session.execute(
        update(Job)
        .where(held, Job.status == JobStatus.RUNNING.value)
        .values(lease_expires_at=until)
        .execution_options(synchronize_session=False)
    )
    await session.commit()


async def release_claim(session: AsyncSession, *, claim: Claim) -> bool:
    """Hand a claimed job back to the queue (its worker cannot go on with it now).

    No message is confirmed for it (``enqueued_at`` cleared): the reconciler
    sends one after its grace period, once the broker takes it.
    """
    result = await session.execute(
        update(Job)
        .where(Job.id == claim.job_id, Job.run == claim.run, Job.status == JobStatus.RUNNING.value)
        .values(status=JobStatus.QUEUED.value, enqueued_at=None, lease_expires_at=None, owner=None)
        .execution_options(synchronize_session=False)
    )
    await session.commit()
    return bool(result.rowcount)  # type: ignore[attr-defined]
