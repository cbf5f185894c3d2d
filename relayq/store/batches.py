"""Batch rows and their requests (jobs with ``batch_id``): every change is one guarded statement.

A batch's status moves only from the status a step expects, so two workers
(or a redelivered message) cannot take the same step twice. Request counts
are counted from the jobs, never kept as counters, so they are exact
however many workers finish requests at once; so are a batch's usage and
cost, summed from its requests.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from relayq.schemas.batches import (
    ACTIVE_BATCH_STATUSES,
    BatchStatus,
    BatchUsage,
    InputTokensDetails,
    OutputTokensDetails,
    RequestCounts,
)
from relayq.schemas.jobs import JobStatus
from relayq.store.jobs import IdempotencyConflict
from relayq.store.models import Batch, Job
from relayq.store.spend import refund_unrun

__all__ = [
    "BatchTotals",
    "RequestResult",
    "Tally",
    "active_batches",
    "add_batch",
    "batch_totals",
    "begin_finalizing",
    "cancel_batch",
    "counts_of",
    "expire_requests",
    "fail_batch",
    "find_by_idempotency_key",
    "finish_batch",
    "get_batch",
    "get_batch_by_id",
    "insert_requests",
    "list_batches",
    "mark_batch_enqueued",
    "release_requests",
    "request_results",
    "start_batch",
    "tallies",
    "unconfirmed_validations",
]

_JOBS = cast(Table, Job.__table__)
_QUEUED = JobStatus.QUEUED.value
_RUNNING = JobStatus.RUNNING.value


@dataclass(frozen=True)
class Tally:
    """How many of a batch's requests on one provider are in one state."""

    batch_id: str
    provider: str
    status: str
    held: bool
    count: int


@dataclass(frozen=True)
class RequestResult:
    """What a batch's output or error file says of one request."""

    job_id: str
    custom_id: str
    status: str
    response: dict[str, Any] | None
    error: dict[str, Any] | None


async def get_batch(session: AsyncSession, *, batch_id: str, key_id: str) -> Batch | None:
    query = select(Batch).where(Batch.id == batch_id, Batch.key_id == key_id)
    return (await session.execute(query)).scalar_one_or_none()


async def add_batch(session: AsyncSession, batch: Batch) -> tuple[Batch, bool]:
    """Insert ``batch``; with an idempotency key already used, the earlier batch instead.

    Returns the row and whether it was created. Raises
    :class:`~relayq.store.jobs.IdempotencyConflict` when the key was used
    for another body.
    """
    if batch.idempotency_key is not None:
        existing = await find_by_idempotency_key(session, batch)
        if existing is not None:
            return existing, False
    session.add(batch)
    try:
        await session.commit()
    except IntegrityError:
        # Another request with the same key won the race.
        await session.rollback()
        existing = await find_by_idempotency_key(session, batch)
        if existing is None:
            raise
        return existing, False
    return batch, True


async def find_by_idempotency_key(session: AsyncSession, batch: Batch) -> Batch | None:
    """The key's batch made with ``batch``'s idempotency key; raises on another body."""
    query = select(Batch).where(
        Batch.key_id == batch.key_id, Batch.idempotency_key == batch.idempotency_key
    )
    existing = (await session.execute(query)).scalar_one_or_none()
    if existing is not None and existing.request_hash != batch.request_hash:
        raise IdempotencyConflict(
            existing.id, kind="batch", idempotency_key=batch.idempotency_key or ""
        )
    return existing


async def get_batch_by_id(session: AsyncSession, *, batch_id: str) -> Batch | None:
    query = select(Batch).where(Batch.id == batch_id).execution_options(populate_existing=True)
    return (await session.execute(query)).scalar_one_or_none()


async def list_batches(
    session: AsyncSession,
    *,
    key_id: str,
    limit: int,
    after: str | None = None,
    endpoint: str | None = None,
) -> tuple[list[Batch], bool]:
    """A page of the key's batches (those calling ``endpoint``, if given), newest first,
    after the cursor ``after``."""
    query = select(Batch).where(Batch.key_id == key_id)
    if endpoint is not None:
        query = query.where(Batch.endpoint == endpoint)
    if after is not None:
        query = query.where(Batch.id < after)
    rows = list((await session.execute(query.order_by(Batch.id.desc()).limit(limit + 1))).scalars())
    return rows[:limit], len(rows) > limit


async def tallies(session: AsyncSession, *, batch_ids: Sequence[str]) -> list[Tally]:
    """The batches' requests counted by provider, status and held (one index-only scan)."""
    if not batch_ids:
        return []
    query = (
        select(Job.batch_id, Job.provider, Job.status, Job.held, func.count())
        .where(Job.batch_id.in_(batch_ids))
        .group_by(Job.batch_id, Job.provider, Job.status, Job.held)
    )
    return [
        Tally(batch_id=str(b), provider=p, status=s, held=bool(h), count=int(n))
        for b, p, s, h, n in (await session.execute(query)).all()
    ]


def counts_of(batch: Batch, found: Iterable[Tally]) -> RequestCounts:
    """``request_counts``: ``completed`` succeeded, ``failed`` failed or expired."""
    completed = failed = 0
    for tally in found:
        if tally.status == JobStatus.SUCCEEDED.value:
            completed += tally.count
        elif tally.status in (JobStatus.FAILED.value, JobStatus.EXPIRED.value):
            failed += tally.count
    return RequestCounts(total=batch.total, completed=completed, failed=failed)


@dataclass(frozen=True)
class BatchTotals:
    """What a batch object shows of its requests: their counts, usage and cost."""

    counts: RequestCounts
    usage: BatchUsage
    cost_usd: float | None


_USAGE = Job.usage
_SUMS = (
    func.sum(_USAGE["prompt_tokens"].as_integer()),
    func.sum(_USAGE[("prompt_tokens_details", "cached_tokens")].as_integer()),
    func.sum(_USAGE["completion_tokens"].as_integer()),
    func.sum(_USAGE[("completion_tokens_details", "reasoning_tokens")].as_integer()),
    func.sum(Job.cost_usd),
)


async def batch_totals(
    session: AsyncSession, *, batches: Sequence[Batch]
) -> dict[str, BatchTotals]:
    """The batches' request counts, usage and cost, in one grouped query.

    Unlike :func:`tallies` (the scheduler's, an index-only scan) it reads the
    rows' usage: a batch read costs a pass over its rows.
    """
    if not batches:
        return {}
    query = (
        select(Job.batch_id, Job.status, func.count(), *_SUMS)
        .where(Job.batch_id.in_([b.id for b in batches]))
        .group_by(Job.batch_id, Job.status)
    )
    found: dict[str, list[Any]] = {}
    for batch_id, status, count, *sums in (await session.execute(query)).all():
        found.setdefault(str(batch_id), []).append((status, int(count), sums))
    return {b.id: _totals(b, found.get(b.id, [])) for b in batches}


def _totals(batch: Batch, groups: list[Any]) -> BatchTotals:
    tallied = [
        Tally(batch_id=batch.id, provider="", status=status, held=False, count=count)
        for status, count, _ in groups
    ]
    tokens = [0, 0, 0, 0]
    cost: float | None = None
    for _, _, sums in groups:
        for index in range(4):
            tokens[index] += int(sums[index] or 0)
        if sums[4] is not None:
            cost = (cost or 0.0) + float(sums[4])
    prompt, cached, completion, reasoning = tokens
    usage = BatchUsage(
        input_tokens=prompt,
        input_tokens_details=InputTokensDetails(cached_tokens=cached),
        output_tokens=completion,
        output_tokens_details=OutputTokensDetails(reasoning_tokens=reasoning),
        total_tokens=prompt + completion,
    )
    cost = None if cost is None else round(cost, 10)  # as each job's is stored
    return BatchTotals(counts=counts_of(batch, tallied), usage=usage, cost_usd=cost)


async def _move(
    session: AsyncSession, batch_id: str, source: Iterable[BatchStatus], **values: Any
) -> bool:
    result = await session.execute(
        update(Batch)
        .where(Batch.id == batch_id, Batch.status.in_([s.value for s in source]))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def start_batch(session: AsyncSession, *, batch_id: str, now: float) -> bool:
    """validating → in_progress, in the caller's transaction (it inserts the requests)."""
    return await _move(
        session,
        batch_id,
        [BatchStatus.VALIDATING],
        status=BatchStatus.IN_PROGRESS.value,
        in_progress_at=now,
    )


async def insert_requests(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Insert a chunk of a batch's jobs (values by column name), in one executemany.

    A Core insert on the table: the ORM's bulk path costs more per row than
    the statement itself, and these rows need none of what it adds.
    """
    if rows:
        await session.execute(insert(_JOBS), list(rows))


async def fail_batch(
    session: AsyncSession, *, batch_id: str, errors: dict[str, Any], now: float
) -> bool:
    """validating → failed with the validation's errors (the caller commits)."""
    return await _move(
        session,
        batch_id,
        [BatchStatus.VALIDATING],
        status=BatchStatus.FAILED.value,
        errors=errors,
        failed_at=now,
    )


async def cancel_batch(session: AsyncSession, *, batch_id: str, key_id: str, now: float) -> bool:
    """Start cancelling: queued requests end now, running ones finish. False if already over."""
    query = select(Batch.id).where(Batch.id == batch_id, Batch.key_id == key_id)
    if (await session.execute(query)).scalar_one_or_none() is None:
        return False
    moved = await _move(
        session,
        batch_id,
        [BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS],
        status=BatchStatus.CANCELLING.value,
        cancelling_at=now,
    )
    if moved:
        await session.execute(
            update(Job)
            .where(Job.batch_id == batch_id, Job.status == _QUEUED)
            .values(status=JobStatus.CANCELLED.value, finished_at=now, held=False)
            .execution_options(synchronize_session=False)
        )
        await refund_unrun(session, batch_id=batch_id)
    await session.commit()
    return moved


async def expire_requests(session: AsyncSession, *, batch_id: str, now: float) -> int:
    """The batch's window passed: its queued requests expire (running ones finish)."""
    error = {
        "code": "batch_expired",
        "message": "This request could not be executed before the completion window expired.",
    }
    result = await session.execute(
        update(Job)
        .where(Job.batch_id == batch_id, Job.status == _QUEUED)
        .values(status=JobStatus.EXPIRED.value, finished_at=now, held=False, error=error)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount:  # type: ignore[attr-defined]
        await refund_unrun(session, batch_id=batch_id)
    await session.commit()
    return int(result.rowcount)  # type: ignore[attr-defined]


async def release_requests(
    session: AsyncSession, *, batch_id: str, provider: str, limit: int, now: float
) -> list[tuple[str, str, str, int]]:
    """Take up to ``limit`` held requests off hold, oldest first.

    Returns ``(job_id, provider, upstream_model, priority)`` of those this
    call released (a concurrent scheduler's are not returned twice).
    """
    query = (
        select(Job.id)
        .where(
            Job.batch_id == batch_id,
            Job.status == _QUEUED,
            Job.held.is_(True),
            Job.provider == provider,
        )
        .order_by(Job.id)
        .limit(limit)
    )
    ids = list((await session.execute(query)).scalars())
    if not ids:
        return []
    result = await session.execute(
        update(Job)
        .where(Job.id.in_(ids), Job.held.is_(True), Job.status == _QUEUED)
        # not_before: the reconciler counts its grace for an unconfirmed message from now.
        .values(held=False, not_before=now)
        .returning(Job.id, Job.provider, Job.upstream_model, Job.priority)
        .execution_options(synchronize_session=False)
    )
    released = [(r.id, r.provider, r.upstream_model, r.priority) for r in result.all()]
    await session.commit()
    return released


async def active_batches(session: AsyncSession) -> list[Batch]:
    """Batches the scheduler moves on: in progress, cancelling or finalizing."""
    statuses = [s.value for s in ACTIVE_BATCH_STATUSES]
    query = select(Batch).where(Batch.status.in_(statuses)).order_by(Batch.id)
    return list((await session.execute(query.execution_options(populate_existing=True))).scalars())


async def begin_finalizing(session: AsyncSession, *, batch_id: str, now: float) -> bool:
    moved = await _move(
        session,
        batch_id,
        [BatchStatus.IN_PROGRESS, BatchStatus.CANCELLING],
        status=BatchStatus.FINALIZING.value,
        finalizing_at=now,
    )
    await session.commit()
    return moved


async def request_results(
    session: AsyncSession, *, batch_id: str, after: str, limit: int
) -> list[RequestResult]:
    """A page of the batch's finished requests in line order, after job id ``after``."""
    query = (
        select(Job.id, Job.custom_id, Job.status, Job.response, Job.error)
        .where(Job.batch_id == batch_id, Job.id > after)
        .order_by(Job.id)
        .limit(limit)
    )
    return [
        RequestResult(
            job_id=r.id,
            custom_id=r.custom_id or "",
            status=r.status,
            response=r.response,
            error=r.error,
        )
        for r in (await session.execute(query)).all()
    ]


async def finish_batch(
    session: AsyncSession,
    *,
    batch_id: str,
    status: BatchStatus,
    output_file_id: str | None,
    error_file_id: str | None,
    now: float,
) -> bool:
    """finalizing → completed / expired / cancelled (the caller commits)."""
    stamp = {
        BatchStatus.COMPLETED: "completed_at",
        BatchStatus.EXPIRED: "expired_at",
        BatchStatus.CANCELLED: "cancelled_at",
    }[status]
    return await _move(
        session,
        batch_id,
        [BatchStatus.FINALIZING],
        status=status.value,
        output_file_id=output_file_id,
        error_file_id=error_file_id,
        **{stamp: now},
    )


async def unconfirmed_validations(
    session: AsyncSession, *, created_before: float, enqueued_before: float
) -> list[str]:
    """Validating batches whose validation message may be lost (never confirmed, or long ago)."""
    query = select(Batch.id).where(
        Batch.status == BatchStatus.VALIDATING.value,
        (Batch.enqueued_at.is_(None) & (Batch.created_at < created_before))
        | (Batch.enqueued_at < enqueued_before),
    )
    return list((await session.execute(query)).scalars())


async def mark_batch_enqueued(session: AsyncSession, *, batch_id: str, now: float) -> None:
    await session.execute(
        update(Batch)
        .where(Batch.id == batch_id, Batch.status == BatchStatus.VALIDATING.value)
        .values(enqueued_at=now)
        .execution_options(synchronize_session=False)
    )
    await session.commit()
