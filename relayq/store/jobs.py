"""Job repository: every state change of a job is one conditional statement.

The guards in the ``WHERE`` clauses are what make the pipeline safe under
at-least-once delivery: a claim succeeds only for a queued job or one whose
lease lapsed, and an outcome is written only by the claim that still holds
the job (``run`` is the fencing token).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

from sqlalchemy import Table, bindparam, exists, func, insert, select, tuple_, update
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.schema import ScalarElementColumnDefault

from relayq.ids import new_id
from relayq.schemas.jobs import JobStatus
from relayq.store.models import Attempt, Job, WebhookEndpoint
from relayq.store.planning import plan_deliveries

__all__ = [
    "AttemptRecord",
    "Claim",
    "DirectRun",
    "Finish",
    "Finished",
    "IdempotencyConflict",
    "NewJob",
    "Outcome",
    "Stranded",
    "attempt_row",
    "cancel_job",
    "claim_job",
    "claim_jobs",
    "count_active",
    "count_active_by_key",
    "count_queued_and_running",
    "create_job",
    "create_jobs",
    "find_stranded",
    "finish_job",
    "finish_jobs",
    "get_job",
    "list_attempts",
    "list_jobs",
    "mark_enqueued",
    "new_row",
    "release_claim",
    "release_lapsed",
    "release_owned",
    "renew_leases",
    "store_running",
    "unfinished_of",
    "unfinished_of_key",
]

_ACTIVE = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)


class IdempotencyConflict(Exception):
    """An idempotency key was reused with a different request body.

    ``existing``: the id of the job (or batch, as ``kind`` says) the key made first.
    """

    def __init__(
        self, existing: str, *, kind: Literal["job", "batch"], idempotency_key: str
    ) -> None:
        super().__init__(existing)
        self.existing = existing
        self.kind = kind
        self.idempotency_key = idempotency_key


@dataclass(frozen=True, kw_only=True)
class NewJob:
    key_id: str
    model: str
    route: str
    provider: str
    upstream_model: str
    request: dict[str, Any]
    priority: int
    metadata: dict[str, str]
    idempotency_key: str | None = None
    request_hash: str | None = None
    cache_key: str | None = None
    cache_ttl: float | None = None
    cached: dict[str, Any] | None = None
    """A cached ``{response, usage}``: the job is created already succeeded."""
    webhook: dict[str, Any] | None = None
    expires_at: float | None = None
    deployment_index: int = 0
    id: str | None = None
    """The job's id, when the caller chose it (the intake counts it first); else a new one."""
    reply_to: str | None = None
    """The reply stream of the API process waiting on the job (see :mod:`relayq.direct.replies`)."""


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


@dataclass(frozen=True, kw_only=True)
class Outcome:
    status: JobStatus
    response: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    usage: dict[str, Any] | None = None


@dataclass(frozen=True)
class Finished:
    """What :func:`finish_job` did: whether it wrote the outcome, and the deliveries planned."""

    written: bool
    deliveries: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return self.written


@dataclass(frozen=True, kw_only=True)
class AttemptRecord:
    provider: str
    upstream_model: str
    status: str
    latency_ms: float
    error: dict[str, Any] | None = None


@dataclass(frozen=True, kw_only=True)
class Stranded:
    """A queued job with no known message on the broker."""

    job_id: str
    provider: str
    priority: int


async def create_job(session: AsyncSession, *, job: NewJob, now: float) -> tuple[Job, bool]:
    """Insert ``job``; with an idempotency key, return the earlier job instead.

    Returns the row and whether it was created. Raises
    :class:`IdempotencyConflict` when the key was used for another body.
    """
    if job.idempotency_key is not None:
        existing = await _by_idempotency_key(session, job=job)
        if existing is not None:
            return existing, False
    row = new_row(job, now=now)
    session.add(row)
    if job.cached is not None:
        row.status = JobStatus.SUCCEEDED.value
        row.cached = True
        row.response = job.cached.get("response")
        row.usage = job.cached.get("usage")
        row.started_at = row.finished_at = now
        await session.flush()
        await plan_deliveries(session, job_id=row.id, now=now)
    try:
        await session.commit()
    except IntegrityError:
        # Another request with the same idempotency key won the race.
        await session.rollback()
        existing = await _by_idempotency_key(session, job=job)
        if existing is None:
            raise
        return existing, False
    return row, True


async def create_jobs(session: AsyncSession, *, jobs: Sequence[NewJob], now: float) -> list[Job]:
    """Insert queued ``jobs`` in one transaction (one multi-row ``INSERT``), in order.

    For jobs with neither an idempotency key nor a cached answer: those need
    :func:`create_job`'s lookups, and one failing row would fail the rest.
    """
    if any(job.idempotency_key is not None or job.cached is not None for job in jobs):
        raise ValueError("create_jobs takes plain queued jobs; use create_job for the others")
    values = [{**_JOB_DEFAULTS, **_row_values(job, now=now)} for job in jobs]
    # A bulk INSERT, not the unit of work: the rows are not tracked by the session,
    # whose flush cost more per row than the row's own insert.
    await session.execute(insert(Job), values)
    await session.commit()
    return [Job(**row) for row in values]


_JOB_DEFAULTS: dict[str, Any] = {
    attr.key: column.default.arg
    for attr in sa_inspect(Job).column_attrs
    for column in attr.columns[:1]
    if isinstance(column.default, ScalarElementColumnDefault)
}
"""The jobs table's scalar column defaults by attribute: a flush would have set them on
the rows it returns; a bulk insert does not touch the objects it is given."""


def _row_values(job: NewJob, *, now: float) -> dict[str, Any]:
    """``job``'s columns as a queued row, by attribute name."""
    return {
        "id": job.id or new_id("job", now=now),
        "key_id": job.key_id,
        "status": JobStatus.QUEUED.value,
        "model": job.model,
        "route": job.route,
        "provider": job.provider,
        "upstream_model": job.upstream_model,
        "request": job.request,
        "priority": job.priority,
        "metadata_": job.metadata,
        "idempotency_key": job.idempotency_key,
        "request_hash": job.request_hash,
        "cache_key": job.cache_key,
        "cache_ttl": job.cache_ttl,
        "run": 0,
        "created_at": now,
        "webhook": job.webhook,
        "reply_to": job.reply_to,
        "expires_at": job.expires_at,
        "deployment_index": job.deployment_index,
        "first_deployment": job.deployment_index,
    }


def new_row(job: NewJob, *, now: float) -> Job:
    """``job`` as a queued row, not yet added to a session."""
    return Job(**_row_values(job, now=now))


@dataclass(frozen=True, kw_only=True)
class DirectRun:
    """A job that went to its worker in its message, before any row (the sync lane)."""

    job: NewJob
    created_at: float


async def store_running(
    session: AsyncSession,
    *,
    runs: Sequence[DirectRun],
    now: float,
    lease_seconds: float,
    owner: str | None = None,
) -> set[str]:
    """Store ``runs``' jobs as running their first run, in one statement; the ids stored.

    A job whose row already exists (its message was delivered twice) is left
    as it is and not among the ids: that delivery is not the job's first run.
    """
    if not runs:
        return set()
    rows = []
    for direct in runs:
        values = _row_values(direct.job, now=direct.created_at)
        values["metadata"] = values.pop("metadata_")
        values.update(
            status=JobStatus.RUNNING.value,
            run=1,
            started_at=now,
            enqueued_at=direct.created_at,
            lease_expires_at=now + lease_seconds,
            owner=owner,
        )
        rows.append(values)
    connection = await session.connection()
    statement = _insert_new(connection.dialect.name).returning(_jobs.c.id)
    ids = set((await connection.execute(statement, rows)).scalars())
    await session.commit()
    return ids


def _insert_new(dialect: str) -> Any:
    """``INSERT`` into jobs that skips rows whose id is taken (both dialects say it alike)."""
    if dialect == "postgresql":
        return postgresql.insert(_jobs).on_conflict_do_nothing(index_elements=[_jobs.c.id])
    return sqlite.insert(_jobs).on_conflict_do_nothing(index_elements=[_jobs.c.id])


async def _by_idempotency_key(session: AsyncSession, *, job: NewJob) -> Job | None:
    query = select(Job).where(Job.key_id == job.key_id, Job.idempotency_key == job.idempotency_key)
    existing = (await session.execute(query)).scalar_one_or_none()
    if existing is not None and existing.request_hash != job.request_hash:
        raise IdempotencyConflict(
            existing.id, kind="job", idempotency_key=job.idempotency_key or ""
        )
    return existing


async def get_job(session: AsyncSession, *, job_id: str, key_id: str) -> Job | None:
    """The job ``job_id`` if it belongs to ``key_id``."""
    query = select(Job).where(Job.id == job_id, Job.key_id == key_id)
    return (await session.execute(query)).scalar_one_or_none()


async def list_attempts(session: AsyncSession, *, job_id: str) -> list[Attempt]:
    query = select(Attempt).where(Attempt.job_id == job_id).order_by(Attempt.id)
    return list((await session.execute(query)).scalars())


async def list_jobs(
    session: AsyncSession,
    *,
    key_id: str,
    limit: int,
    after: str | None = None,
    status: JobStatus | None = None,
    model: str | None = None,
    batch_id: str | None = None,
) -> tuple[list[Job], bool]:
    """A page of ``key_id``'s jobs, newest first, after the cursor ``after``."""
    query = select(Job).where(Job.key_id == key_id)
    if batch_id is not None:
        query = query.where(Job.batch_id == batch_id)
    if after is not None:
        query = query.where(Job.id < after)
    if status is not None:
        query = query.where(Job.status == status.value)
    if model is not None:
        query = query.where(Job.model == model)
    rows = list((await session.execute(query.order_by(Job.id.desc()).limit(limit + 1))).scalars())
    return rows[:limit], len(rows) > limit


async def mark_enqueued(session: AsyncSession, *, job_ids: Sequence[str], now: float) -> None:
    """Record that the broker accepted a message for each of ``job_ids`` (still queued)."""
    await session.execute(
        update(Job)
        .where(Job.id.in_(job_ids), Job.status == JobStatus.QUEUED.value)
        .values(enqueued_at=now)
        .execution_options(synchronize_session=False)
    )
    await session.commit()


async def cancel_job(session: AsyncSession, *, job_id: str, key_id: str, now: float) -> bool:
    """Cancel a queued or running job; False if it had already ended."""
    result = await session.execute(
        update(Job)
        .where(Job.id == job_id, Job.key_id == key_id, Job.status.in_(_ACTIVE))
        .values(status=JobStatus.CANCELLED.value, finished_at=now, lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )
    cancelled = bool(result.rowcount)  # type: ignore[attr-defined]
    if cancelled:
        await plan_deliveries(session, job_id=job_id, now=now)
    await session.commit()
    return cancelled


_jobs = cast(Table, Job.__table__)
_attempts = cast(Table, Attempt.__table__)

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
    )
)

_endpoints = cast(Table, WebhookEndpoint.__table__)
_HAS_ENDPOINT = (
    exists()
    .where(_endpoints.c.key_id == _jobs.c.key_id, _endpoints.c.enabled.is_(True))
    .label("has_endpoint")
)
_FINISH = (
    update(_jobs)
    .where(
        _jobs.c.id == bindparam("job_id"),
        _jobs.c.run == bindparam("job_run"),
        _jobs.c.status == JobStatus.RUNNING.value,
    )
    .values(
        status=bindparam("status"),
        response=bindparam("response", type_=_jobs.c.response.type),
        error=bindparam("error", type_=_jobs.c.error.type),
        usage=bindparam("usage", type_=_jobs.c.usage.type),
        finished_at=bindparam("now"),
        lease_expires_at=None,
        attempts=_jobs.c.attempts + bindparam("called"),
    )
)
# Which outcomes of a tick were written, read back in their transaction: a row
# whose run and finish time are the tick's. With whether each can have a webhook
# at all: most jobs have none, and then no further query is made. (The webhook
# itself, not ``IS NOT NULL``: a JSON column keeps Python's None as JSON null.)
_FINISHED = select(
    _jobs.c.id,
    _jobs.c.run,
    _jobs.c.finished_at,
    _jobs.c.webhook,
    _jobs.c.batch_id,
    _HAS_ENDPOINT,
).where(_jobs.c.id.in_(bindparam("job_ids", expanding=True)))
_ADD_ATTEMPT = insert(_attempts)


async def job_status(session: AsyncSession, *, job_id: str) -> JobStatus | None:
    """``job_id``'s status as stored; None if there is no such job."""
    found = (await session.execute(select(_jobs.c.status).where(_jobs.c.id == job_id))).scalar()
    return None if found is None else JobStatus(found)


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


@dataclass(frozen=True, kw_only=True)
class Finish:
    """One run's end, to be recorded: the claim that ran, its outcome and its call."""

    claim: Claim
    outcome: Outcome
    attempt: AttemptRecord | None


async def finish_jobs(
    session: AsyncSession, *, finishes: Sequence[Finish], now: float
) -> list[Finished]:
    """Record the attempts and write the outcomes of ``finishes`` in one transaction.

    Each attempt is recorded either way (the provider call happened); each
    outcome only if its claim still holds the job. Returns, per finish and in
    order, whether its outcome was written and the webhook deliveries planned
    with it.
    """
    connection = await session.connection()
    attempts = [
        attempt_values(claim=f.claim, attempt=f.attempt, now=now)
        for f in finishes
        if f.attempt is not None
    ]
    if attempts:
        await connection.execute(_ADD_ATTEMPT, attempts)
    # One statement for the tick (an executemany), then one read of what it wrote:
    # a statement per outcome cost a round trip to the database's thread each.
    await connection.execute(
        _FINISH,
        [
            {
                "job_id": f.claim.job_id,
                "job_run": f.claim.run,
                "status": f.outcome.status.value,
                "response": f.outcome.response,
                "error": f.outcome.error,
                "usage": f.outcome.usage,
                "now": now,
                "called": 1 if f.attempt is not None else 0,
            }
            for f in finishes
        ],
    )
    job_ids = list(dict.fromkeys(f.claim.job_id for f in finishes))
    rows = {row.id: row for row in await connection.execute(_FINISHED, {"job_ids": job_ids})}
    results: list[Finished] = []
    for finish in finishes:
        row = rows.get(finish.claim.job_id)
        written = row is not None and row.run == finish.claim.run and row.finished_at == now
        deliveries: list[str] = []
        if (
            row is not None
            and written
            and row.batch_id is None
            and (row.webhook is not None or row.has_endpoint)
        ):
            # In this transaction: an outcome is never stored without its webhooks.
            deliveries = await plan_deliveries(session, job_id=finish.claim.job_id, now=now)
        results.append(Finished(written, tuple(deliveries)))
    await session.commit()
    return results


async def finish_job(
    session: AsyncSession,
    *,
    claim: Claim,
    outcome: Outcome,
    attempt: AttemptRecord | None,
    now: float,
) -> Finished:
    """Record one run's end (see :func:`finish_jobs`)."""
    finish = Finish(claim=claim, outcome=outcome, attempt=attempt)
    return (await finish_jobs(session, finishes=[finish], now=now))[0]


def attempt_values(*, claim: Claim, attempt: AttemptRecord, now: float) -> dict[str, Any]:
    """An ``attempts`` row's columns."""
    return {
        "job_id": claim.job_id,
        "run": claim.run,
        "provider": attempt.provider,
        "upstream_model": attempt.upstream_model,
        "status": attempt.status,
        "latency_ms": attempt.latency_ms,
        "error": attempt.error,
        "created_at": now,
    }


def attempt_row(*, claim: Claim, attempt: AttemptRecord, now: float) -> Attempt:
    return Attempt(**attempt_values(claim=claim, attempt=attempt, now=now))


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
    connection = await session.connection()
    await connection.execute(
        _ADD_ATTEMPT,
        [
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
    """Unfinished jobs per API key (a batch's requests are not counted: see Claim.batch_id)."""
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
