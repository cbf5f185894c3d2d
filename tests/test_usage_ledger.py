"""The usage ledger, booked in the outcomes' transaction, on each real database: one
statement a tick, rows per key, day, model and batch, only for outcomes written."""

from __future__ import annotations

import calendar
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import event, select

from relayq.schemas.jobs import JobStatus
from relayq.store import Database
from relayq.store.attempts import AttemptRecord
from relayq.store.claims import Claim, claim_job
from relayq.store.jobs import create_job
from relayq.store.keys import create_key
from relayq.store.models import Job, UsageDay
from relayq.store.outcomes import Finish, Outcome, finish_jobs
from relayq.store.usage import Bucket, UsageQuery, job_usage_buckets, usage_buckets
from tests.jobs import mock_job
from tests.services import run

DAY = "2026-12-05"
NOON = calendar.timegm((2026, 12, 5, 12, 0, 0)) * 1.0


@pytest.fixture
def database(private_database_url: str) -> Iterator[Database]:
    opened = Database(private_database_url)
    yield opened
    run(opened.aclose())


def _usage(prompt: int, completion: int, cached: int = 0) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if cached:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    return usage


def _attempt() -> AttemptRecord:
    return AttemptRecord(provider="mock", upstream_model="mock", status="succeeded", latency_ms=1)


async def _claimed(database: Database, key_id: str, **fields: Any) -> Claim:
    async with database.session() as session:
        job, _ = await create_job(session, job=mock_job(key_id, **fields), now=NOON - 60)
        claim = await claim_job(session, job_id=job.id, now=NOON - 50, lease_seconds=3600)
    assert claim is not None
    return claim


def _finish(
    claim: Claim, status: JobStatus, usage: dict[str, Any] | None, cost: float | None
) -> Finish:
    outcome = Outcome(status=status, usage=usage, cost_usd=cost)
    return Finish(claim=claim, outcome=outcome, attempt=_attempt())


def test_a_tick_books_its_outcomes_with_usage_in_one_statement(database: Database) -> None:
    async def scenario() -> None:
        async with database.session() as session:
            one = (await create_key(session, name="one")).id
            two = (await create_key(session, name="two")).id
        fine = await _claimed(database, one, metadata={"team": "a"})
        cached = await _claimed(database, one, metadata={"team": "a"})
        failed = await _claimed(database, one, metadata={"team": "b"})
        cancelled = await _claimed(database, one)
        other = await _claimed(database, two, model="alias", route="priced")
        stale = await _claimed(database, two)
        async with database.session() as session:  # taken over: the stale run writes nothing
            assert await claim_job(session, job_id=stale.job_id, now=NOON + 4000, lease_seconds=1)

        statements: list[str] = []

        def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            if "usage_days" in statement:
                statements.append(statement)

        event.listen(database.engine.sync_engine, "before_cursor_execute", seen)
        async with database.session() as session:
            finished = await finish_jobs(
                session,
                finishes=[
                    _finish(fine, JobStatus.SUCCEEDED, _usage(10, 20), 0.5),
                    _finish(cached, JobStatus.SUCCEEDED, _usage(30, 5, cached=25), None),
                    _finish(failed, JobStatus.FAILED, _usage(7, 1), 0.25),
                    _finish(cancelled, JobStatus.CANCELLED, None, None),
                    _finish(other, JobStatus.SUCCEEDED, _usage(4, 4), 1.0),
                    _finish(stale, JobStatus.SUCCEEDED, _usage(100, 100), 9.0),
                ],
                now=NOON,
            )
        event.remove(database.engine.sync_engine, "before_cursor_execute", seen)
        assert [bool(f) for f in finished] == [True, True, True, True, True, False]
        assert len(statements) == 1

        async with database.session() as session:
            rows = (await session.scalars(select(UsageDay).order_by(UsageDay.key_id))).all()
            booked = {
                (r.key_id, r.day, r.model, r.batch_id): (
                    r.requests,
                    r.prompt_tokens,
                    r.completion_tokens,
                    r.cached_tokens,
                    r.cost_usd,
                )
                for r in rows
            }
            # The failed job with usage counts; the cancelled one and the stale run do not.
            assert booked == {
                (one, DAY, "mock", ""): (3, 47, 26, 25, 0.75),
                (two, DAY, "priced", ""): (1, 4, 4, 0, 1.0),
            }
            costs = {r.id: r.cost_usd for r in await session.execute(select(Job.id, Job.cost_usd))}
            assert costs[fine.job_id] == 0.5
            assert costs[cached.job_id] is None
            assert costs[cancelled.job_id] is None
            assert costs[stale.job_id] is None

            # Read back from the ledger, and from the jobs for a metadata filter.
            query = UsageQuery(start_day=DAY, end_day=DAY, group_by=["model"], key_id=one)
            ledger = await usage_buckets(session, query=query)
            assert ledger == [
                Bucket(
                    group={"model": "mock"},
                    requests=3,
                    prompt_tokens=47,
                    completion_tokens=26,
                    cached_tokens=25,
                    cost_usd=0.75,
                )
            ]
            query = UsageQuery(
                start_day=DAY, end_day=DAY, group_by=["day"], key_id=one, metadata={"team": "a"}
            )
            from_jobs = await job_usage_buckets(session, query=query)
            assert from_jobs == [
                Bucket(
                    group={"day": DAY},
                    requests=2,
                    prompt_tokens=40,
                    completion_tokens=25,
                    cached_tokens=25,
                    cost_usd=0.5,
                )
            ]

        # A later tick adds to the same day's row; a batch's request has a row of its own.
        again = await _claimed(database, one)
        batched = replace(await _claimed(database, one), batch_id="batch_1")
        async with database.session() as session:
            await finish_jobs(
                session,
                finishes=[
                    _finish(again, JobStatus.SUCCEEDED, _usage(1, 2), 0.125),
                    _finish(batched, JobStatus.SUCCEEDED, _usage(5, 5), 0.01),
                ],
                now=NOON + 1,
            )
            row = await session.get(UsageDay, (one, DAY, "mock", ""))
            assert row is not None
            assert (row.requests, row.prompt_tokens, row.completion_tokens) == (4, 48, 28)
            assert row.cost_usd == pytest.approx(0.875)
            batch_row = await session.get(UsageDay, (one, DAY, "mock", "batch_1"))
            assert batch_row is not None
            assert (batch_row.requests, batch_row.prompt_tokens) == (1, 5)

    run(scenario())
