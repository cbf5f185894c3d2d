"""Per-API-key request rate and concurrency on real Redis, with a fake clock."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

import relayq.resilience.key_limits
from relayq.resilience.key_limits import Decision, KeyLimit, KeyLimits, RunningJob
from tests.clock import FakeClock
from tests.services import run

Scenario = Callable[[Callable[[], KeyLimits], FakeClock], Awaitable[None]]


def scenario(redis_url: str, body: Scenario) -> None:
    """Run ``body`` with a factory of limiters sharing one prefix and one clock,
    each with its own Redis client, as separate API processes would."""

    async def main() -> None:
        prefix = f"test-{uuid.uuid4().hex[:8]}"
        clock = FakeClock(1_700_000_000.0)
        clients: list[aioredis.Redis] = []

        def limits() -> KeyLimits:
            clients.append(aioredis.Redis.from_url(redis_url))
            return KeyLimits(clients[-1], key_prefix=prefix, clock=clock)

        try:
            await body(limits, clock)
        finally:
            for client in clients:
                await client.aclose()

    run(main())


def test_requests_per_minute(redis_url: str) -> None:
    async def body(make: Callable[[], KeyLimits], clock: FakeClock) -> None:
        limits = make()
        jobs = (f"job_{n}" for n in itertools.count())
        decisions = [
            await limits.admit("k1", next(jobs), rpm=3, max_concurrent=None) for _ in range(4)
        ]

        assert decisions[:3] == [Decision(allowed=True)] * 3
        refused = decisions[3]
        assert (refused.allowed, refused.limit) == (False, KeyLimit.REQUESTS_PER_MINUTE)
        assert refused.retry_after == pytest.approx(20.0)
        assert (await limits.admit("k2", next(jobs), rpm=3, max_concurrent=None)).allowed
        clock.advance(20)
        assert (await limits.admit("k1", next(jobs), rpm=3, max_concurrent=None)).allowed
        assert not (await limits.admit("k1", next(jobs), rpm=3, max_concurrent=None)).allowed

    scenario(redis_url, body)


def test_concurrent_jobs_and_a_refusal_charges_nothing(redis_url: str) -> None:
    async def body(make: Callable[[], KeyLimits], clock: FakeClock) -> None:
        limits = make()
        assert (await limits.admit("k1", "job_1", rpm=3, max_concurrent=1)).allowed
        for n in range(5):
            refused = await limits.admit("k1", f"job_x{n}", rpm=3, max_concurrent=1)
            assert refused == Decision(allowed=False, limit=KeyLimit.MAX_CONCURRENT_JOBS)
        assert await limits.running(["k1", "k2"]) == [1, 0]

        await limits.job_finished("k1", "job_1")
        assert (await limits.admit("k1", "job_2", rpm=3, max_concurrent=1)).allowed
        await limits.job_finished("k1", "job_2")
        assert (await limits.admit("k1", "job_3", rpm=3, max_concurrent=1)).allowed  # 3rd request
        await limits.job_finished("k1", "job_3")
        decision = await limits.admit("k1", "job_4", rpm=3, max_concurrent=1)
        assert decision.limit is KeyLimit.REQUESTS_PER_MINUTE
        assert await limits.running(["k1"]) == [0]  # nor does a refusal count a job
        assert await limits.unchecked(since=clock.now + 1, limit=10) == []

    scenario(redis_url, body)


def test_an_admitted_job_s_message_is_added_in_the_same_step_and_a_refused_one_s_is_not(
    redis_url: str,
) -> None:
    """The sync lane's admission: the key's limits and the message's sending in one
    script. A refused call leaves nothing in the stream, and charges nothing."""

    async def body(make: Callable[[], KeyLimits], clock: FakeClock) -> None:
        limits = make()
        stream = f"lane-{uuid.uuid4().hex[:8]}"
        admitted = await limits.admit(
            "k1", "job_1", rpm=None, max_concurrent=1, then_add=(stream, b'{"n":1}')
        )
        refused = await limits.admit(
            "k1", "job_2", rpm=None, max_concurrent=1, then_add=(stream, b'{"n":2}')
        )
        client = aioredis.Redis.from_url(redis_url)
        try:
            entries: list[Any] = await client.xrange(stream) or []
            await client.delete(stream)
        finally:
            await client.aclose()

        assert admitted.allowed
        assert refused == Decision(allowed=False, limit=KeyLimit.MAX_CONCURRENT_JOBS)
        assert [fields for _, fields in entries] == [{b"m": b'{"n":1}'}]
        assert await limits.running(["k1"]) == [1]

    scenario(redis_url, body)


def test_concurrent_admissions_in_two_processes_respect_the_limit(redis_url: str) -> None:
    async def body(make: Callable[[], KeyLimits], clock: FakeClock) -> None:
        one, two = make(), make()

        decisions = await asyncio.gather(
            *(
                limiter.admit("k1", f"job_{n}", rpm=None, max_concurrent=5)
                for n, limiter in enumerate([one, two] * 100)
            )
        )

        assert sum(d.allowed for d in decisions) == 5
        assert await two.running(["k1"]) == [5]

    scenario(redis_url, body)


def test_a_job_counts_once_however_often_it_is_added_or_released(redis_url: str) -> None:
    async def body(make: Callable[[], KeyLimits], clock: FakeClock) -> None:
        limits = make()
        assert (await limits.admit("k1", "job_1", rpm=None, max_concurrent=None)).allowed
        # A repair that raced the intake, and one that saw job_2 twice.
        await limits.jobs_started("k1", [("job_1", clock.now), ("job_2", clock.now)])
        await limits.jobs_started("k1", [("job_2", clock.now)])
        await limits.jobs_started("k1", [])
        assert await limits.running(["k1"]) == [2]
        assert not (await limits.admit("k1", "job_3", rpm=None, max_concurrent=2)).allowed

        for _ in range(3):  # the worker, the API's cancel and a repair may all release
            await limits.job_finished("k1", "job_1")
            await limits.jobs_finished(
                [RunningJob("k1", "job_2"), RunningJob("k1", "job_2"), RunningJob("k1", "job_x")]
            )
        await limits.jobs_finished([])
        assert await limits.running(["k1"]) == [0]
        assert (await limits.admit("k1", "job_3", rpm=None, max_concurrent=1)).allowed
        assert await limits.running(["k1"]) == [1]

    scenario(redis_url, body)


def test_unchecked_jobs_are_the_oldest_not_checked_since(redis_url: str) -> None:
    async def body(make: Callable[[], KeyLimits], clock: FakeClock) -> None:
        limits = make()
        start = clock.now
        for n in range(3):
            await limits.admit("k1", f"job_{n}", rpm=None, max_concurrent=None)
            clock.advance(10)
        await limits.jobs_started("k2", [("job_old", start - 100)])

        assert await limits.unchecked(since=start + 15, limit=10) == [
            RunningJob(key_id="k2", job_id="job_old"),
            RunningJob(key_id="k1", job_id="job_0"),
            RunningJob(key_id="k1", job_id="job_1"),
        ]
        assert len(await limits.unchecked(since=start + 15, limit=2)) == 2

        await limits.job_finished("k1", "job_1")
        checked = [RunningJob(key_id="k1", job_id="job_0"), RunningJob("k1", "job_1")]
        await limits.checked(checked, now=clock.now)
        # job_0 moved to the back; job_1, released, was not brought back.
        assert await limits.unchecked(since=clock.now + 1, limit=10) == [
            RunningJob(key_id="k2", job_id="job_old"),
            RunningJob(key_id="k1", job_id="job_2"),
            RunningJob(key_id="k1", job_id="job_0"),
        ]
        assert await limits.running(["k1", "k2"]) == [2, 1]

    scenario(redis_url, body)


def test_unlimited_keys_are_still_counted(redis_url: str) -> None:
    async def body(make: Callable[[], KeyLimits], clock: FakeClock) -> None:
        limits = make()
        for n in range(10):
            assert (await limits.admit("k1", f"job_{n}", rpm=None, max_concurrent=None)).allowed
        assert await limits.running(["k1"]) == [10]
        with pytest.raises(ValueError, match="positive"):
            await limits.admit("k1", "job_x", rpm=0, max_concurrent=None)

    scenario(redis_url, body)


def test_public_surface() -> None:
    assert set(relayq.resilience.key_limits.__all__) == {
        "BYTES_PER_TOKEN",
        "Decision",
        "KeyLimit",
        "KeyLimits",
        "RunningJob",
        "request_tokens",
    }
