"""Run-job messages of concurrent requests go out together, and each caller learns its fate."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import redis

from relayq.job_publisher import JobPublisher
from relayq.queueing import Enqueuer
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


def _messages(url: str, queue: str) -> int:
    """Messages waiting on ``queue`` over its priority lists (kombu's ``queue:N`` names)."""
    client = redis.Redis.from_url(url)
    try:
        names = [queue, *(f"{queue}:{n}" for n in range(1, 10))]
        return sum(int(client.llen(name)) for name in names)
    finally:
        client.close()


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
    assert _messages(broker_url, "llm.mock") == 100
    # One thread hop for the first job, then the rest together in a few.
    assert publisher.hops < 10


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
