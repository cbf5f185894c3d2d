"""Outcomes: a run's end, written only by the claim that still holds the job.

The outcome (with its cost), the run's attempt, the webhook deliveries it
plans and its line in the usage ledger are one transaction: an outcome is
never stored without them. The guard is the
claim's ``run`` (the fencing token) and the ``running`` status, so a worker
whose lease lapsed and whose job was claimed again writes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, bindparam, exists, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from relayq.schemas.jobs import TERMINAL_STATUSES, JobStatus
from relayq.store.attempts import AttemptRecord, add_attempts, attempt_values
from relayq.store.claims import Claim
from relayq.store.models import Job, WebhookEndpoint
from relayq.store.planning import plan_deliveries
from relayq.store.spend import Held, settle, used_tokens
from relayq.store.usage import Booking, book_usage

__all__ = [
    "Finish",
    "Finished",
    "Outcome",
    "finish_job",
    "finish_jobs",
]

_jobs = cast(Table, Job.__table__)
_endpoints = cast(Table, WebhookEndpoint.__table__)


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """What a run ended with: the job's new status and what goes with it."""

    status: JobStatus
    response: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    usage: dict[str, Any] | None = None
    cost_usd: float | None = None
    """What ``usage`` cost at the deployment's price (None: no usage, or no price)."""


@dataclass(frozen=True, kw_only=True)
class Finish:
    """One run's end, to be recorded: the claim that ran, its outcome and its call."""

    claim: Claim
    outcome: Outcome
    attempt: AttemptRecord | None


@dataclass(frozen=True)
class Finished:
    """What :func:`finish_job` did: whether it wrote the outcome, and the deliveries planned."""

    written: bool
    deliveries: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return self.written


# Built once (Core, on the tables), as the claim is (see relayq.store.claims).
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
        cost_usd=bindparam("cost_usd"),
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
    _jobs.c.key_id,
    _jobs.c.budget_window,
    _jobs.c.reserved_usd,
    _jobs.c.reserved_tokens,
    _HAS_ENDPOINT,
).where(_jobs.c.id.in_(bindparam("job_ids", expanding=True)))


async def finish_jobs(
    session: AsyncSession, *, finishes: Sequence[Finish], now: float
) -> list[Finished]:
    """Record the attempts and write the outcomes of ``finishes`` in one transaction.

    Each attempt is recorded either way (the provider call happened); each
    outcome only if its claim still holds the job. Returns, per finish and in
    order, whether its outcome was written and the webhook deliveries planned
    with it.
    """
    attempts = [
        attempt_values(claim=f.claim, attempt=f.attempt, now=now)
        for f in finishes
        if f.attempt is not None
    ]
    if attempts:
        await add_attempts(session, rows=attempts)
    connection = await session.connection()
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
                "cost_usd": f.outcome.cost_usd,
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
    await _book(connection, finishes, results, now=now)
    await _settle_budgets(session, finishes, results, rows)
    await session.commit()
    return results


async def _book(
    connection: AsyncConnection,
    finishes: Sequence[Finish],
    results: Sequence[Finished],
    *,
    now: float,
) -> None:
    """The usage ledger hears of the outcomes written (:mod:`relayq.store.usage`)."""
    await book_usage(
        connection,
        bookings=[
            Booking(
                key_id=f.claim.key_id,
                model=f.claim.route,
                batch_id=f.claim.batch_id,
                usage=f.outcome.usage,
                cost_usd=f.outcome.cost_usd,
            )
            for f, result in zip(finishes, results, strict=True)
            if result.written
        ],
        now=now,
    )


async def _settle_budgets(
    session: AsyncSession,
    finishes: Sequence[Finish],
    results: Sequence[Finished],
    rows: dict[str, Any],
) -> None:
    """Book the real cost of the jobs that ended holding a budget reservation (none: no
    statement), in the outcome's transaction (:mod:`relayq.store.spend`)."""
    held = [
        Held(
            job_id=row.id,
            key_id=row.key_id,
            window=row.budget_window,
            reserved_usd=row.reserved_usd or 0.0,
            reserved_tokens=row.reserved_tokens or 0,
            cost_usd=finish.outcome.cost_usd,
            tokens=used_tokens(finish.outcome.usage),
        )
        for finish, result in zip(finishes, results, strict=True)
        if result.written
        and finish.outcome.status in TERMINAL_STATUSES
        and (row := rows[finish.claim.job_id]).budget_window is not None
    ]
    if held:
        await settle(session, held)


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
