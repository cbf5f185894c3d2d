"""Plain jobs of concurrent requests are stored together, on each real database."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from sqlalchemy import func, select
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.exc import IntegrityError

from relayq.intake.inserts import JobInserts
from relayq.store import Database
from relayq.store.jobs import create_jobs, get_job
from relayq.store.keys import create_key
from relayq.store.models import Job
from tests.jobs import mock_job
from tests.services import run

Scenario = Callable[[Database, str], Awaitable[None]]


def scenario(database_url: str, body: Scenario) -> None:
    async def main() -> None:
        database = Database(database_url)
        try:
            async with database.session() as session:
                key = await create_key(session, name="inserts")
            await body(database, key.id)
        finally:
            await database.aclose()

    run(main())


async def stored(database: Database) -> int:
    async with database.session() as session:
        return int(await session.scalar(select(func.count()).select_from(Job)) or 0)


def test_concurrent_jobs_are_stored_in_few_transactions(private_database_url: str) -> None:
    async def body(database: Database, key_id: str) -> None:
        inserts = JobInserts(database)

        jobs = await asyncio.gather(
            *(inserts.insert(mock_job(key_id, metadata={"n": str(n)})) for n in range(100))
        )

        assert [job.metadata_ for job in jobs] == [{"n": str(n)} for n in range(100)]
        assert len({job.id for job in jobs}) == 100
        assert {job.status for job in jobs} == {"queued"}
        assert await stored(database) == 100
        assert inserts.transactions < 10
        async with database.session() as session:
            again = await get_job(session, job_id=jobs[42].id, key_id=key_id)
        assert again is not None
        assert again.metadata_ == {"n": "42"}

    scenario(private_database_url, body)


def test_a_failing_batch_fails_each_of_its_callers_and_stores_none(
    private_database_url: str,
) -> None:
    async def body(database: Database, key_id: str) -> None:
        inserts = JobInserts(database)
        await inserts.insert(mock_job(key_id, id="job_first"))

        # Queued together, so one batch; its second row repeats the first's id.
        outcomes = await asyncio.gather(
            inserts.insert(mock_job(key_id, id="job_a")),
            inserts.insert(mock_job(key_id, id="job_a")),
            inserts.insert(mock_job(key_id, id="job_b")),
            return_exceptions=True,
        )

        assert [type(outcome) for outcome in outcomes] == [IntegrityError] * 3
        assert await stored(database) == 1
        assert isinstance(await inserts.insert(mock_job(key_id, id="job_b")), Job)
        assert await stored(database) == 2

    scenario(private_database_url, body)


def test_jobs_that_need_a_lookup_are_refused(private_database_url: str) -> None:
    async def body(database: Database, key_id: str) -> None:
        async with database.session() as session:
            for special in (
                mock_job(key_id, idempotency_key="k", request_hash="h"),
                mock_job(key_id, cached={"response": {}, "usage": {}}),
            ):
                with pytest.raises(ValueError, match="plain queued jobs"):
                    await create_jobs(session, jobs=[mock_job(key_id), special], now=1.0)
        assert await stored(database) == 0

    scenario(private_database_url, body)


def test_the_rows_returned_read_as_the_rows_stored(private_database_url: str) -> None:
    """insert_jobs answers rows built without the ORM's constructor (relayq.store.jobs'
    _read_only_row): each column reads as SQL then holds it, and as Job(**values) would."""

    async def body(database: Database, key_id: str) -> None:
        new = mock_job(key_id, metadata={"team": "a"}, webhook={"url": "https://x.test/h"})
        async with database.session() as session:
            (returned,) = await create_jobs(session, jobs=[new], now=1234.5)
        async with database.session() as session:
            again = await get_job(session, job_id=returned.id, key_id=key_id)
        assert again is not None

        columns = [attr.key for attr in sa_inspect(Job).column_attrs]
        assert len(columns) > 30
        assert {c: getattr(returned, c) for c in columns} == {c: getattr(again, c) for c in columns}
        assert sa_inspect(returned).transient
        assert returned.status == "queued"
        assert returned.created_at == 1234.5
        assert returned.finished_at is None

    scenario(private_database_url, body)
