"""Per-API-key request rate and concurrency on real Redis, with a fake clock."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import pytest
import redis.asyncio as aioredis

import relayq.key_limits
from relayq.key_limits import Decision, KeyLimit, KeyLimits
from tests.services import run


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


Scenario = Callable[[Callable[[], KeyLimits], FakeClock], Awaitable[None]]


def scenario(redis_url: str, body: Scenario) -> None:
    """Run ``body`` with a factory of limiters sharing one prefix and one clock,
    each with its own Redis client, as separate API processes would."""

    async def main() -> None:
        prefix = f"test-{uuid.uuid4().hex[:8]}"
        clock = FakeClock()
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
        decisions = [await limits.admit("k1", rpm=3, max_concurrent=None) for _ in range(4)]

        assert decisions[:3] == [Decision(allowed=True)] * 3
        refused = decisions[3]
        assert (refused.allowed, refused.limit) == (False, KeyLimit.REQUESTS_PER_MINUTE)
        assert refused.retry_after == pytest.approx(20.0)
        assert (await limits.admit("k2", rpm=3, max_concurrent=None)).allowed  # per key
        clock.advance(20)
        assert (await limits.admit("k1", rpm=3, max_concurrent=None)).allowed
        assert not (await limits.admit("k1", rpm=3, max_concurrent=None)).allowed

    scenario(redis_url, body)


def test_concurrent_jobs_and_a_refusal_charges_nothing(redis_url: str) -> None:
    async def body(make: Callable[[], KeyLimits], clock: FakeClock) -> None:
        limits = make()
        assert (await limits.admit("k1", rpm=3, max_concurrent=1)).allowed
        for _ in range(5):
            refused = await limits.admit("k1", rpm=3, max_concurrent=1)
            assert refused == Decision(allowed=False, limit=KeyLimit.MAX_CONCURRENT_JOBS)
        assert await limits.running(["k1", "k2"]) == [1, 0]

        await limits.job_finished("k1")
        assert (await limits.admit("k1", rpm=3, max_concurrent=1)).allowed
        await limits.job_finished("k1")
        assert (await limits.admit("k1", rpm=3, max_concurrent=1)).allowed  # the 3rd request
        await limits.job_finished("k1")
        decision = await limits.admit("k1", rpm=3, max_concurrent=1)
        assert decision.limit is KeyLimit.REQUESTS_PER_MINUTE
        assert await limits.running(["k1"]) == [0]  # nor does a refusal count a job

    scenario(redis_url, body)


def test_concurrent_admissions_in_two_processes_respect_the_limit(redis_url: str) -> None:
    async def body(make: Callable[[], KeyLimits], clock: FakeClock) -> None:
        one, two = make(), make()

        decisions = await asyncio.gather(
            *(lim.admit("k1", rpm=None, max_concurrent=5) for lim in [one, two] * 100)
        )

        assert sum(d.allowed for d in decisions) == 5
        assert await two.running(["k1"]) == [5]

    scenario(redis_url, body)


def test_job_started_and_finished_never_go_below_zero(redis_url: str) -> None:
    async def body(make: Callable[[], KeyLimits], clock: FakeClock) -> None:
        limits = make()
        await limits.job_started("k1")
        await limits.job_started("k1")
        assert not (await limits.admit("k1", rpm=None, max_concurrent=2)).allowed
        for _ in range(4):
            await limits.job_finished("k1")
        assert await limits.running(["k1"]) == [0]
        assert (await limits.admit("k1", rpm=None, max_concurrent=1)).allowed

    scenario(redis_url, body)


def test_reset_counts_replaces_every_counter(redis_url: str) -> None:
    async def body(make: Callable[[], KeyLimits], clock: FakeClock) -> None:
        limits = make()
        for key in ("k1", "k1", "k2", "k3"):
            await limits.job_started(key)

        await limits.reset_counts({"k1": 0, "k2": 4, "k4": 1})

        assert await limits.running(["k1", "k2", "k3", "k4"]) == [0, 4, 0, 1]
        assert not (await limits.admit("k2", rpm=None, max_concurrent=4)).allowed
        assert (await limits.admit("k1", rpm=None, max_concurrent=1)).allowed
        await limits.reset_counts({})
        assert await limits.running(["k1", "k2", "k4"]) == [0, 0, 0]
        assert await limits.running([]) == []

    scenario(redis_url, body)


def test_unlimited_keys_are_still_counted(redis_url: str) -> None:
    async def body(make: Callable[[], KeyLimits], clock: FakeClock) -> None:
        limits = make()
        for _ in range(10):
            assert (await limits.admit("k1", rpm=None, max_concurrent=None)).allowed
        assert await limits.running(["k1"]) == [10]
        with pytest.raises(ValueError, match="positive"):
            await limits.admit("k1", rpm=0, max_concurrent=None)

    scenario(redis_url, body)


def test_public_surface() -> None:
    assert set(relayq.key_limits.__all__) == {"Decision", "KeyLimit", "KeyLimits"}
