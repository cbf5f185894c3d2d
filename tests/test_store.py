"""The job repository's guards, on each real database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from relayq.schemas.jobs import JobStatus
from relayq.store import Database
from relayq.store.attempts import AttemptRecord, list_attempts
from relayq.store.claims import claim_job, renew_leases
from relayq.store.jobs import (
    IdempotencyConflict,
    NewJob,
    cancel_job,
    create_job,
    get_job,
    mark_enqueued,
)
from relayq.store.keys import create_key, find_active_key, revoke_key
from relayq.store.models import Job
from relayq.store.outcomes import Outcome, finish_job
from relayq.store.stranded import Stranded, find_stranded, release_lapsed
from tests.jobs import mock_job
from tests.services import run

Scenario = Callable[[AsyncSession], Awaitable[None]]


@pytest.fixture
def in_session(private_database_url: str) -> Callable[[Scenario], None]:
    """Scenarios on a database of their own: their made-up clocks would otherwise
    meet the shared stack's reconciler (which releases "lapsed" leases)."""

    @asynccontextmanager
    async def session() -> AsyncIterator[AsyncSession]:
        database = Database(private_database_url)
        try:
            async with database.session() as opened:
                yield opened
        finally:
            await database.aclose()

    async def scenario(body: Scenario) -> None:
        async with session() as opened:
            await body(opened)

    return lambda body: run(scenario(body))


async def new_job(session: AsyncSession, *, now: float = 1000.0) -> str:
    key = await create_key(session, name="store")
    job, created = await create_job(session, job=mock_job(key.id), now=now)
    assert created
    return job.id


def attempt(status: str = "succeeded") -> AttemptRecord:
    return AttemptRecord(provider="mock", upstream_model="mock", status=status, latency_ms=1.0)


def test_a_job_is_claimed_once_while_its_lease_lives(
    in_session: Callable[[Scenario], None],
) -> None:
    async def body(session: AsyncSession) -> None:
        job_id = await new_job(session)
        first = await claim_job(session, job_id=job_id, now=1001.0, lease_seconds=10)
        second = await claim_job(session, job_id=job_id, now=1005.0, lease_seconds=10)
        assert first is not None
        assert first.run == 1
        assert second is None
        taken_over = await claim_job(session, job_id=job_id, now=1012.0, lease_seconds=10)
        assert taken_over is not None
        assert taken_over.run == 2

    in_session(body)


def test_only_the_current_claim_writes_the_outcome(in_session: Callable[[Scenario], None]) -> None:
    async def body(session: AsyncSession) -> None:
        job_id = await new_job(session)
        stale = await claim_job(session, job_id=job_id, now=1001.0, lease_seconds=1)
        current = await claim_job(session, job_id=job_id, now=1003.0, lease_seconds=10)
        assert stale is not None
        assert current is not None
        done = Outcome(status=JobStatus.SUCCEEDED, response={"r": 1})
        assert await finish_job(session, claim=current, outcome=done, attempt=attempt(), now=1004.0)
        assert not await finish_job(
            session, claim=stale, outcome=done, attempt=attempt(), now=1005.0
        )
        assert not await finish_job(
            session, claim=current, outcome=done, attempt=attempt(), now=1006.0
        )
        assert await claim_job(session, job_id=job_id, now=2000.0, lease_seconds=1) is None
        attempts = await list_attempts(session, job_id=job_id)
        assert [a.run for a in attempts] == [2, 1, 2]

    in_session(body)


def test_a_cancelled_job_is_never_claimed_or_finished(
    in_session: Callable[[Scenario], None],
) -> None:
    async def body(session: AsyncSession) -> None:
        job_id = await new_job(session)
        claim = await claim_job(session, job_id=job_id, now=1001.0, lease_seconds=10)
        assert claim is not None
        job = await _job(session, job_id)
        assert await cancel_job(session, job_id=job_id, key_id=job.key_id, now=1002.0)
        assert not await cancel_job(session, job_id=job_id, key_id=job.key_id, now=1003.0)
        done = Outcome(status=JobStatus.SUCCEEDED)
        assert not await finish_job(session, claim=claim, outcome=done, attempt=None, now=1004.0)
        assert await claim_job(session, job_id=job_id, now=9999.0, lease_seconds=1) is None

    in_session(body)


async def _job(session: AsyncSession, job_id: str) -> Job:
    row = (await session.execute(select(Job).where(Job.id == job_id))).scalar_one()
    await session.refresh(row)
    return row


def test_lapsed_leases_return_to_the_queue_unconfirmed(
    in_session: Callable[[Scenario], None],
) -> None:
    async def body(session: AsyncSession) -> None:
        job_id = await new_job(session, now=1000.0)
        await mark_enqueued(session, job_ids=[job_id], now=1000.5)
        assert await claim_job(session, job_id=job_id, now=1001.0, lease_seconds=5)
        assert await release_lapsed(session, now=1003.0, limit=10) == 0
        assert await release_lapsed(session, now=1007.0, limit=10) == 1
        stranded = await find_stranded(
            session, created_before=1007.0, enqueued_before=0.0, limit=10
        )
        assert job_id in [s.job_id for s in stranded]

    in_session(body)


def test_stranded_jobs_are_those_without_a_confirmed_message(
    in_session: Callable[[Scenario], None],
) -> None:
    async def body(session: AsyncSession) -> None:
        confirmed = await new_job(session, now=500.0)
        unconfirmed = await new_job(session, now=500.0)
        recent = await new_job(session, now=900.0)
        await mark_enqueued(session, job_ids=[confirmed], now=501.0)
        stranded = await find_stranded(
            session, created_before=800.0, enqueued_before=0.0, limit=100
        )
        found = {s.job_id for s in stranded}
        assert unconfirmed in found
        assert confirmed not in found
        assert recent not in found

    in_session(body)


def test_idempotency_conflict_on_a_different_body(in_session: Callable[[Scenario], None]) -> None:
    async def body(session: AsyncSession) -> None:
        key = await create_key(session, name="idem")

        def spec(request_hash: str) -> NewJob:
            return mock_job(key.id, request={}, idempotency_key="i-1", request_hash=request_hash)

        first, created = await create_job(session, job=spec("a"), now=1.0)
        again, created_again = await create_job(session, job=spec("a"), now=2.0)
        assert created
        assert not created_again
        assert again.id == first.id
        with pytest.raises(IdempotencyConflict):
            await create_job(session, job=spec("b"), now=3.0)
        assert await get_job(session, job_id=first.id, key_id="key_other") is None

    in_session(body)


def test_keys_are_stored_hashed_and_can_be_revoked(in_session: Callable[[Scenario], None]) -> None:
    async def body(session: AsyncSession) -> None:
        created = await create_key(session, name="k")
        found = await find_active_key(session, secret=created.secret)
        assert found is not None
        assert created.secret not in (found.key_hash, found.hint, found.name)
        assert len(found.key_hash) == 64
        assert await revoke_key(session, key_id=created.id)
        assert await find_active_key(session, secret=created.secret) is None
        assert not await revoke_key(session, key_id=created.id)

    in_session(body)


def test_confirmed_jobs_are_republished_after_the_redelivery_window(
    in_session: Callable[[Scenario], None],
) -> None:
    """A flushed broker loses confirmed messages too; they go out again, once a window."""

    async def body(session: AsyncSession) -> None:
        job_id = await new_job(session, now=100.0)
        await mark_enqueued(session, job_ids=[job_id], now=101.0)

        def found(stranded: list[Stranded]) -> bool:
            return job_id in {s.job_id for s in stranded}

        assert not found(
            await find_stranded(session, created_before=5000.0, enqueued_before=101.0, limit=10)
        )
        assert found(
            await find_stranded(session, created_before=5000.0, enqueued_before=102.0, limit=10)
        )
        await mark_enqueued(session, job_ids=[job_id], now=200.0)
        assert not found(
            await find_stranded(session, created_before=5000.0, enqueued_before=150.0, limit=10)
        )

    in_session(body)


def test_a_lease_is_renewed_only_by_the_claim_holding_it(
    in_session: Callable[[Scenario], None],
) -> None:
    async def body(session: AsyncSession) -> None:
        job_id = await new_job(session)
        stale = await claim_job(session, job_id=job_id, now=1001.0, lease_seconds=1)
        current = await claim_job(session, job_id=job_id, now=1003.0, lease_seconds=1)
        assert stale is not None
        assert current is not None
        await renew_leases(session, claims=[stale], until=9999.0)
        assert (await _job(session, job_id)).lease_expires_at == 1004.0
        await renew_leases(session, claims=[current], until=2000.0)
        assert (await _job(session, job_id)).lease_expires_at == 2000.0

    in_session(body)
