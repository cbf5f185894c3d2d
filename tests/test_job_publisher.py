"""Run-job messages of concurrent requests go out together, and each caller learns its fate."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from relayq.job_publisher import JobPublisher
from relayq.queueing import ENVELOPE_SIZE, RUN_JOB_TASK, RUN_MANY_TASK, Enqueuer
from relayq.settings import Settings
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


def _messages(url: str, queue: str) -> list[tuple[str, list[Any]]]:
    """Messages waiting on ``queue`` over its priority lists (kombu's ``queue:N`` names),
    as (task name, job ids or direct jobs)."""
    client = redis.Redis.from_url(url)
    try:
        names = [queue, *(f"{queue}:{n}" for n in range(1, 10))]
        raw = [m for name in names for m in client.lrange(name, 0, -1)]
    finally:
        client.close()
    found = []
    for message in raw:
        envelope = json.loads(message)
        args, _, _ = json.loads(base64.b64decode(envelope["body"]))
        task = envelope["headers"]["task"]
        found.append((task, args[0] if task == RUN_MANY_TASK else [args[0]]))
    return found


def test_concurrent_jobs_are_published_in_few_hops(broker_url: str) -> None:
    enqueuer = Enqueuer(settings=Settings(redis_url=broker_url))
    publisher = JobPublisher(enqueuer)

    async def scenario() -> list[bool]:
        return await asyncio.gather(
            *(publisher.publish(job_id=f"job_{n}", provider="mock", priority=5) for n in range(100))
        )

    try:
        taken = asyncio.run(scenario())
    finally:
        enqueuer.close()
    assert taken == [True] * 100
    messages = _messages(broker_url, "llm.mock")
    # A few thread hops, each batch in envelopes of at most ENVELOPE_SIZE jobs.
    assert publisher.hops < 10
    assert len(messages) < 10
    assert all(len(jobs) <= ENVELOPE_SIZE for _, jobs in messages)
    assert sorted(job for _, jobs in messages for job in jobs) == sorted(
        f"job_{n}" for n in range(100)
    )


def test_a_job_alone_is_a_task_of_its_own(broker_url: str) -> None:
    """At low load Flower shows a task per job: no envelope for one."""
    enqueuer = Enqueuer(settings=Settings(redis_url=broker_url))
    publisher = JobPublisher(enqueuer)
    try:
        assert asyncio.run(publisher.publish(job_id="job_alone", provider="mock", priority=5))
    finally:
        enqueuer.close()
    assert _messages(broker_url, "llm.mock") == [(RUN_JOB_TASK, ["job_alone"])]


def test_a_broker_that_is_down_takes_nothing_and_says_so() -> None:
    enqueuer = Enqueuer(settings=Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    publisher = JobPublisher(enqueuer)

    async def scenario() -> list[bool]:
        return await asyncio.gather(
            *(publisher.publish(job_id=f"job_{n}", provider="mock", priority=5) for n in range(5))
        )

    try:
        assert asyncio.run(scenario()) == [False] * 5
    finally:
        enqueuer.close()
