"""What a worker may admit by itself, and how it learns otherwise: real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import redis.asyncio as aioredis

from relayq.config.settings import BreakerSettings
from relayq.resilience.breaker import CircuitBreaker
from relayq.resilience.clearance import Clearance, listen_for_changes
from relayq.resilience.ratelimit import RateLimiter
from tests.clock import FakeClock
from tests.services import run, until

DEPLOYMENT = "openai|gpt-4o"


def test_nothing_is_clear_while_not_listening() -> None:
    clearance = Clearance(ttl=10)
    clearance.note_clear(DEPLOYMENT, generation=clearance.generation)
    assert not clearance.clear(DEPLOYMENT)


def test_a_clear_deployment_stays_clear_for_its_ttl() -> None:
    clock = FakeClock(100.0)
    clearance = Clearance(ttl=2, clock=clock)
    clearance.listening = True
    clearance.note_clear(DEPLOYMENT, generation=clearance.generation)
    assert clearance.clear(DEPLOYMENT)
    assert not clearance.clear("openai|other")
    clock.now += 1.9
    assert clearance.clear(DEPLOYMENT)
    clock.now += 0.2
    assert not clearance.clear(DEPLOYMENT)


def test_an_answer_asked_before_a_forget_is_not_kept() -> None:
    """Redis answered 'clear', but an announcement came while the answer travelled."""
    clearance = Clearance(ttl=10)
    clearance.listening = True
    asked_at = clearance.generation
    clearance.forget()
    clearance.note_clear(DEPLOYMENT, generation=asked_at)
    assert not clearance.clear(DEPLOYMENT)


def test_a_ttl_of_zero_keeps_nothing() -> None:
    clearance = Clearance(ttl=0)
    clearance.listening = True
    clearance.note_clear(DEPLOYMENT, generation=clearance.generation)
    assert not clearance.clear(DEPLOYMENT)


@contextlib.asynccontextmanager
async def listening(redis_url: str, prefix: str) -> AsyncIterator[Clearance]:
    """A clearance kept by a listener on its own client (named ``prefix``), as a worker
    keeps it."""
    client = aioredis.Redis.from_url(redis_url, client_name=prefix)
    clearance = Clearance(ttl=60)
    task = asyncio.create_task(listen_for_changes(client, key_prefix=prefix, clearance=clearance))
    try:
        await until(lambda: clearance.listening)
        yield clearance
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await client.aclose()


def test_a_breaker_opened_by_another_process_ends_every_clearance(redis_url: str) -> None:
    async def main() -> None:
        prefix = f"test-{uuid.uuid4().hex[:8]}"
        other = aioredis.Redis.from_url(redis_url)
        breaker = CircuitBreaker(
            other, key_prefix=prefix, settings=BreakerSettings(failure_threshold=2)
        )
        try:
            async with listening(redis_url, prefix) as clearance:
                clearance.note_clear(DEPLOYMENT, generation=clearance.generation)
                # A failure that does not open the breaker announces nothing.
                await breaker.record(
                    DEPLOYMENT, success=False, permit=await breaker.acquire(DEPLOYMENT)
                )
                await asyncio.sleep(0.2)
                assert clearance.clear(DEPLOYMENT)
                await breaker.record(
                    DEPLOYMENT, success=False, permit=await breaker.acquire(DEPLOYMENT)
                )
                await until(lambda: not clearance.clear(DEPLOYMENT))
        finally:
            await other.aclose()

    run(main())


def test_a_cooldown_started_by_another_process_ends_every_clearance(redis_url: str) -> None:
    async def main() -> None:
        prefix = f"test-{uuid.uuid4().hex[:8]}"
        other = aioredis.Redis.from_url(redis_url)
        limiter = RateLimiter(other, key_prefix=prefix)
        try:
            async with listening(redis_url, prefix) as clearance:
                clearance.note_clear(DEPLOYMENT, generation=clearance.generation)
                assert clearance.clear(DEPLOYMENT)
                await limiter.cool_down("openai", 30)
                await until(lambda: not clearance.clear(DEPLOYMENT))
                # A shorter cooldown inside the running one changes nothing: no announcement.
                clearance.note_clear(DEPLOYMENT, generation=clearance.generation)
                await limiter.cool_down("openai", 5)
                await asyncio.sleep(0.2)
                assert clearance.clear(DEPLOYMENT)
        finally:
            await other.aclose()

    run(main())


def test_a_listener_that_loses_redis_holds_nothing_clear(redis_url: str) -> None:
    async def main() -> None:
        prefix = f"test-{uuid.uuid4().hex[:8]}"
        async with listening(redis_url, prefix) as clearance:
            clearance.note_clear(DEPLOYMENT, generation=clearance.generation)
            assert clearance.clear(DEPLOYMENT)
            admin = aioredis.Redis.from_url(redis_url)
            try:
                # Cut the listener's connection, as a Redis restart would.
                for client in await admin.client_list(_type="pubsub"):
                    if client["name"] == prefix:
                        await admin.client_kill_filter(_id=client["id"])
            finally:
                await admin.aclose()
            await until(lambda: not clearance.clear(DEPLOYMENT))
            # It listens again; what it held clear was forgotten meanwhile.
            await until(lambda: clearance.listening)
            assert not clearance.clear(DEPLOYMENT)

    run(main())
