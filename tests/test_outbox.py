"""The outbox: messages published, then their rows marked, in one place.

Run-job messages of concurrent requests go out together and each caller learns
its fate; what the broker took is marked ``enqueued_at`` in one statement, what
it refused is not (the reconciler sends it later). Real broker, real database.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager

import pytest
import redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from relayq.config.settings import Settings
from relayq.queueing.broker import ENVELOPE_SIZE, RUN_JOB_TASK, RUN_MANY_TASK, Enqueuer
from relayq.queueing.outbox import JobMessage, Outbox
from relayq.store import Database
from relayq.store.jobs import create_job, mark_enqueued
from relayq.store.keys import create_key
from relayq.store.models import Job
from tests.in_process import queued_messages
from tests.jobs import mock_job
from tests.services import free_port

_DB = 12  # shared with test_adapters_pipeline's stacks, which are gone by then


@pytest.fixture
def broker_url(redis_server: str) -> Iterator[str]:
    url = f"{redis_server}/{_DB}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@asynccontextmanager
async def outbox_of(broker: str, database_url: str) -> AsyncIterator[tuple[Outbox, Database]]:
    database = Database(database_url)
    enqueuer = Enqueuer(settings=Settings(redis_url=broker))
    outbox = Outbox(database=database, enqueuer=enqueuer)
    try:
        yield outbox, database
    finally:
        await outbox.aclose()
        enqueuer.close()
        await database.aclose()


async def stored_jobs(database: Database, count: int) -> list[str]:
    async with database.session() as session:
        key = await create_key(session, name="outbox")
        jobs = [(await create_job(session, job=mock_job(key.id), now=1.0))[0] for _ in range(count)]
    return [job.id for job in jobs]


async def marked(database: Database, job_ids: list[str]) -> list[bool]:
    async with database.session() as session:
        rows = dict((await session.execute(select(Job.id, Job.enqueued_at))).all())
    return [rows[job_id] is not None for job_id in job_ids]


def test_concurrent_jobs_are_published_in_few_hops_and_marked(
    broker_url: str, private_database_url: str
) -> None:
    async def scenario() -> tuple[list[str], list[bool], list[bool], int]:
        async with outbox_of(broker_url, private_database_url) as (outbox, database):
            ids = await stored_jobs(database, 100)
            taken = await asyncio.gather(
                *(outbox.publish_job(JobMessage(job_id, "mock", 5)) for job_id in ids)
            )
            hops = outbox.hops
            await outbox.aclose()  # the marks on their way
            return ids, list(taken), await marked(database, ids), hops

    ids, taken, marks, hops = asyncio.run(scenario())
    assert taken == [True] * 100
    assert marks == [True] * 100
    messages = queued_messages(broker_url, "llm.mock")
    # A few thread hops, each batch in envelopes of at most ENVELOPE_SIZE jobs.
    assert hops < 10
    assert len(messages) < 10
    assert all(len(jobs) <= ENVELOPE_SIZE for _, jobs in messages)
    assert sorted(job for _, jobs in messages for job in jobs) == sorted(ids)


def test_a_job_alone_is_a_task_of_its_own(broker_url: str, private_database_url: str) -> None:
    """At low load Flower shows a task per job: no envelope for one."""

    async def scenario() -> tuple[str, bool]:
        async with outbox_of(broker_url, private_database_url) as (outbox, database):
            [job_id] = await stored_jobs(database, 1)
            return job_id, await outbox.publish_job(JobMessage(job_id, "mock", 5))

    job_id, taken = asyncio.run(scenario())
    assert taken
    assert queued_messages(broker_url, "llm.mock") == [(RUN_JOB_TASK, [job_id])]


def test_a_broker_that_is_down_takes_nothing_and_nothing_is_marked(
    private_database_url: str,
) -> None:
    down = f"redis://127.0.0.1:{free_port()}/0"

    async def scenario() -> tuple[list[bool], list[str], list[bool]]:
        async with outbox_of(down, private_database_url) as (outbox, database):
            ids = await stored_jobs(database, 5)
            taken = await asyncio.gather(
                *(outbox.publish_job(JobMessage(job_id, "mock", 5)) for job_id in ids)
            )
            sent = await outbox.send_jobs([JobMessage(job_id, "mock", 5) for job_id in ids])
            await outbox.aclose()
            return list(taken), sent, await marked(database, ids)

    taken, sent, marks = asyncio.run(scenario())
    assert taken == [False] * 5
    assert sent == []
    assert marks == [False] * 5


def test_messages_due_now_and_later_are_sent_and_marked_together(
    broker_url: str, private_database_url: str
) -> None:
    """A retry's countdown goes as a task of its own; the others in an envelope; all of
    them marked."""

    async def scenario() -> tuple[list[str], list[str], list[bool]]:
        async with outbox_of(broker_url, private_database_url) as (outbox, database):
            ids = await stored_jobs(database, 3)
            messages = [
                JobMessage(ids[0], "mock", 5),
                JobMessage(ids[1], "mock", 5, countdown=30),
                JobMessage(ids[2], "mock", 5),
            ]
            return ids, await outbox.send_jobs(messages), await marked(database, ids)

    ids, sent, marks = asyncio.run(scenario())
    assert sent == ids
    assert marks == [True] * 3
    # Due now: one envelope of the two; the countdown's a task of its own (with its eta,
    # which the worker that takes it holds it to).
    assert sorted(queued_messages(broker_url, "llm.mock")) == [
        (RUN_JOB_TASK, [ids[1]]),
        (RUN_MANY_TASK, [ids[0], ids[2]]),
    ]


def test_what_the_broker_took_before_it_refused_is_marked_and_the_rest_is_not(
    private_database_url: str,
) -> None:
    """``publish`` stops at the first refusal; only the items before it are marked."""

    def publish(items: Sequence[str]) -> list[str]:
        return list(items[:2])  # the broker went away after two

    async def mark(session: AsyncSession, job_ids: list[str], now: float) -> None:
        await mark_enqueued(session, job_ids=job_ids, now=now)

    async def scenario() -> tuple[list[str], list[str], list[bool]]:
        async with outbox_of("redis://127.0.0.1:1/0", private_database_url) as (outbox, db):
            ids = await stored_jobs(db, 4)
            sent = await outbox.send(ids, publish=publish, mark=mark, what="jobs")
            return ids, sent, await marked(db, ids)

    ids, sent, marks = asyncio.run(scenario())
    assert sent == ids[:2]
    assert marks == [True, True, False, False]
