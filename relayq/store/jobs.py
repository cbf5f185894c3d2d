"""Job rows: creating, reading, listing and cancelling them.

A job is created queued (or already succeeded, from the cache), or stored
running by the worker that got it in its message (the sync lane). Each later
change is one conditional statement: see :mod:`relayq.store.claims`,
:mod:`relayq.store.outcomes` and :mod:`relayq.store.stranded`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

from sqlalchemy import Table, insert, select, update
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.schema import ScalarElementColumnDefault

from relayq.budgets.reservations import OverBudget, Reservation
from relayq.ids import new_id
from relayq.schemas.jobs import JobStatus
from relayq.store.models import Job
from relayq.store.planning import plan_deliveries
from relayq.store.spend import reserve, settle_ended

__all__ = [
    "DirectRun",
    "IdempotencyConflict",
    "NewJob",
    "cancel_job",
    "create_job",
    "create_jobs",
    "get_job",
    "insert_jobs",
    "job_status",
    "list_jobs",
    "mark_enqueued",
    "new_row",
    "queued_view",
    "store_running",
]

_ACTIVE = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)
_jobs = cast(Table, Job.__table__)


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
    kind: str = "chat"
    """What the job asks its provider for (:class:`relayq.schemas.jobs.JobKind`)."""
    reservation: Reservation | None = None
    """The worst case the job takes from its key's budget as it is stored (None: the key
    has no budget); a job that does not fit is refused (:class:`OverBudget`)."""


@dataclass(frozen=True, kw_only=True)
class DirectRun:
    """A job that went to its worker in its message, before any row (the sync lane)."""

    job: NewJob
    created_at: float


async def create_job(session: AsyncSession, *, job: NewJob, now: float) -> tuple[Job, bool]:
    """Insert ``job``; with an idempotency key, return the earlier job instead.

    Returns the row and whether it was created. Raises
    :class:`IdempotencyConflict` when the key was used for another body, and
    :class:`OverBudget` when its reservation does not fit (nothing stored).
    """
    if job.idempotency_key is not None:
        existing = await _by_idempotency_key(session, job=job)
        if existing is not None:
            return existing, False
    if job.cached is not None and job.reservation is not None:
        job = dataclasses.replace(job, reservation=None)  # answered without a call: no cost
    if job.reservation is not None:
        refused = await reserve(session, job.reservation)
        if refused is not None:
            await session.rollback()
            raise OverBudget(job.reservation, refused)
    row = new_row(job, now=now)
    session.add(row)
    if job.cached is not None:
        row.status = JobStatus.SUCCEEDED.value
        row.cached = True
        row.response = job.cached.get("response")
        row.usage = job.cached.get("usage")
        row.cost_usd = 0.0  # no provider call: nothing spent
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
    """Insert queued ``jobs`` in one transaction (see :func:`insert_jobs`); raises the
    first :class:`OverBudget` if a reservation did not fit (the others are stored)."""
    stored = await insert_jobs(session, jobs=jobs, now=now)
    for one in stored:
        if isinstance(one, OverBudget):
            raise one
    return cast(list[Job], stored)


async def insert_jobs(
    session: AsyncSession, *, jobs: Sequence[NewJob], now: float
) -> list[Job | OverBudget]:
    """Insert queued ``jobs`` in one transaction (one multi-row ``INSERT``), in order.

    For jobs with neither an idempotency key nor a cached answer: those need
    :func:`create_job`'s lookups, and one failing row would fail the rest.
    A job with a reservation takes it first, in the same transaction; one that
    does not fit is not stored, and its place in the result is its
    :class:`OverBudget` (the others are stored all the same).
    """
    if any(job.idempotency_key is not None or job.cached is not None for job in jobs):
        raise ValueError("create_jobs takes plain queued jobs; use create_job for the others")
    refused = await _reserve_each(session, jobs)
    values = [
        {**_JOB_DEFAULTS, **_row_values(job, now=now)}
        for index, job in enumerate(jobs)
        if index not in refused
    ]
    # A bulk INSERT, not the unit of work: the rows are not tracked by the session,
    # whose flush cost more per row than the row's own insert.
    if values:
        await session.execute(insert(Job), values)
    await session.commit()
    stored = iter(values)
    return [
        refused[index] if index in refused else _read_only_row(next(stored))
        for index in range(len(jobs))
    ]


async def _reserve_each(session: AsyncSession, jobs: Sequence[NewJob]) -> dict[int, OverBudget]:
    """Take the reservations of ``jobs`` (in key and window order); those refused, by index."""
    refused: dict[int, OverBudget] = {}
    budgeted = [(index, job.reservation) for index, job in enumerate(jobs) if job.reservation]
    for index, reservation in sorted(budgeted, key=lambda b: (b[1].key_id, b[1].window, b[0])):
        standing = await reserve(session, reservation)
        if standing is not None:
            refused[index] = OverBudget(reservation, standing)
    return refused


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
        "kind": job.kind,
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
        **_reserved(job.reservation),
    }


def _reserved(reservation: Reservation | None) -> dict[str, Any]:
    if reservation is None:
        return {}
    return {
        "reserved_usd": reservation.usd,
        "reserved_tokens": reservation.tokens,
        "budget_window": reservation.window,
    }


def new_row(job: NewJob, *, now: float) -> Job:
    """``job`` as a queued row, not yet added to a session."""
    return Job(**_row_values(job, now=now))


def queued_view(job: NewJob, *, now: float) -> Job:
    """``job`` as :func:`new_row` makes it, for reading only: never to be added to a
    session (the sync lane's job, whose worker stores the row)."""
    return _read_only_row(_row_values(job, now=now))


_JOB_CLASS = Job.__mapper__.class_manager


def _read_only_row(values: dict[str, Any]) -> Job:
    """A ``Job`` holding ``values`` as ``Job(**values)`` would, for rows no session will
    track (stored by a bulk ``INSERT``, or by a worker): read, answered, never flushed.

    The ORM's constructor sets each attribute through its instrumentation, an event
    per column: 25 us a row (timeit, 26 columns), against 1.3 us to put the values
    in a new instance's dict, on every ``POST /v1/jobs``. Attributes read the same
    (``tests/test_job_inserts.py`` holds the rows returned to the rows stored).
    """
    row = cast(Job, _JOB_CLASS.new_instance())
    row.__dict__.update(values)
    return row


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


async def job_status(session: AsyncSession, *, job_id: str) -> JobStatus | None:
    """``job_id``'s status as stored; None if there is no such job."""
    found = (await session.execute(select(_jobs.c.status).where(_jobs.c.id == job_id))).scalar()
    return None if found is None else JobStatus(found)


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
    # RETURNING whether it holds a budget reservation: a job without one costs no query more.
    ended = (
        await session.execute(
            update(Job)
            .where(Job.id == job_id, Job.key_id == key_id, Job.status.in_(_ACTIVE))
            .values(status=JobStatus.CANCELLED.value, finished_at=now, lease_expires_at=None)
            .returning(Job.budget_window)
            .execution_options(synchronize_session=False)
        )
    ).all()
    cancelled = bool(ended)
    if cancelled:
        await plan_deliveries(session, job_id=job_id, now=now)
        if ended[0].budget_window is not None:
            await settle_ended(session, job_ids=[job_id])  # its reservation back
    await session.commit()
    return cancelled
