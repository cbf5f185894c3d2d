"""The circuit breaker on real Redis, with a fake clock we advance by hand."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import pydantic
import pytest
import redis.asyncio as aioredis

import relayq.resilience.breaker
from relayq.config.settings import BreakerSettings
from relayq.resilience.breaker import BreakerState, CircuitBreaker, Permit
from tests.clock import FakeClock
from tests.services import run

DEPLOYMENT = "openai|gpt-4o"


Scenario = Callable[[Callable[[], CircuitBreaker], FakeClock], Awaitable[None]]


def scenario(redis_url: str, body: Scenario, **settings: float) -> None:
    """Run ``body`` with a factory of breakers that share one prefix and one clock.

    Each breaker has its own Redis client, as separate processes would.
    """

    async def main() -> None:
        prefix = f"test-{uuid.uuid4().hex[:8]}"
        clock = FakeClock(1_700_000_000.0)
        clients: list[aioredis.Redis] = []

        def breaker() -> CircuitBreaker:
            clients.append(aioredis.Redis.from_url(redis_url))
            return CircuitBreaker(
                clients[-1],
                key_prefix=prefix,
                settings=BreakerSettings.model_validate(settings),
                clock=clock,
            )

        try:
            await body(breaker, clock)
        finally:
            for client in clients:
                await client.aclose()

    run(main())


async def fail(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        permit = await breaker.acquire(DEPLOYMENT)
        await breaker.record(DEPLOYMENT, success=False, permit=permit)


async def succeed(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        permit = await breaker.acquire(DEPLOYMENT)
        await breaker.record(DEPLOYMENT, success=True, permit=permit)


async def state(breaker: CircuitBreaker) -> BreakerState:
    [status] = await breaker.status([DEPLOYMENT])
    return status.state


def test_opens_after_consecutive_failures(redis_url: str) -> None:
    async def body(make: Callable[[], CircuitBreaker], clock: FakeClock) -> None:
        breaker = make()
        await fail(breaker, 2)
        await succeed(breaker)  # a success breaks the run
        await fail(breaker, 2)
        assert await state(breaker) is BreakerState.CLOSED
        await fail(breaker)

        [status] = await breaker.status([DEPLOYMENT])
        assert status.state is BreakerState.OPEN
        assert status.consecutive_failures == 3
        assert status.opened_at == clock.now
        assert status.next_probe_at == clock.now + 30
        permit = await breaker.acquire(DEPLOYMENT)
        assert permit == Permit(allowed=False, state=BreakerState.OPEN, retry_after=30.0)

    scenario(redis_url, body, failure_threshold=3)


def test_successes_reported_together_each_count(redis_url: str) -> None:
    """Calls that end together report in one script call; each is still one request."""

    async def body(make: Callable[[], CircuitBreaker], clock: FakeClock) -> None:
        breaker = make()
        permits = [await breaker.acquire(DEPLOYMENT) for _ in range(30)]
        await fail(breaker, 2)
        await asyncio.gather(*(breaker.record(DEPLOYMENT, success=True, permit=p) for p in permits))
        # The first went alone, the rest together (one report per tick, not 30).
        assert 1 <= breaker.success_reports <= 2
        [status] = await breaker.status([DEPLOYMENT])
        assert status.window_requests == 32
        assert status.window_failures == 2
        assert status.consecutive_failures == 0
        # 30 of 60 calls failed: the rate (0.5) is reached only with the successes counted.
        await fail(breaker, 27)
        assert await state(breaker) is BreakerState.CLOSED
        await fail(breaker)
        assert await state(breaker) is BreakerState.OPEN

    scenario(redis_url, body, failure_threshold=100, min_requests=20)


def test_opens_on_failure_rate_once_the_window_holds_min_requests(redis_url: str) -> None:
    async def body(make: Callable[[], CircuitBreaker], clock: FakeClock) -> None:
        breaker = make()
        for _ in range(4):  # 4 of 8 failed, never two in a row: below min_requests
            await succeed(breaker)
            await fail(breaker)
        [status] = await breaker.status([DEPLOYMENT])
        assert (status.state, status.window_failures, status.window_requests) == (
            BreakerState.CLOSED,
            4,
            8,
        )
        await succeed(breaker)
        await fail(breaker)  # 5 of 10

        assert await state(breaker) is BreakerState.OPEN

    scenario(redis_url, body, failure_threshold=3, min_requests=10, failure_rate=0.5)


def test_the_rate_window_slides(redis_url: str) -> None:
    async def body(make: Callable[[], CircuitBreaker], clock: FakeClock) -> None:
        breaker = make()
        await fail(breaker, 9)
        await succeed(breaker)
        clock.advance(61)
        await fail(breaker)  # 10 of 11 failed in all, but only 1 of 1 in the window

        [status] = await breaker.status([DEPLOYMENT])
        assert status.state is BreakerState.CLOSED
        assert (status.window_failures, status.window_requests) == (1, 1)

    scenario(redis_url, body, failure_threshold=100, min_requests=10, window_seconds=60)


def test_below_min_requests_even_all_failures_keep_it_closed(redis_url: str) -> None:
    async def body(make: Callable[[], CircuitBreaker], clock: FakeClock) -> None:
        breaker = make()
        await fail(breaker, 19)
        assert await state(breaker) is BreakerState.CLOSED
        await fail(breaker)
        assert await state(breaker) is BreakerState.OPEN

    scenario(redis_url, body, failure_threshold=100)


def test_cooldown_then_half_open_with_bounded_probes(redis_url: str) -> None:
    async def body(make: Callable[[], CircuitBreaker], clock: FakeClock) -> None:
        breaker = make()
        await fail(breaker)
        clock.advance(9.75)
        refused = await breaker.acquire(DEPLOYMENT)
        assert refused.retry_after == pytest.approx(0.25)
        clock.advance(0.25)

        first, second, third = [await breaker.acquire(DEPLOYMENT) for _ in range(3)]

        assert (first.allowed, first.probe, first.state) == (True, True, BreakerState.HALF_OPEN)
        assert (second.allowed, second.probe) == (True, True)
        assert third == Permit(allowed=False, state=BreakerState.HALF_OPEN)
        [status] = await breaker.status([DEPLOYMENT])
        assert (status.state, status.probes_in_flight) == (BreakerState.HALF_OPEN, 2)
        assert status.next_probe_at == clock.now + 120

    scenario(redis_url, body, failure_threshold=1, cooldown_seconds=10, half_open_probes=2)


def test_a_probe_given_back_unused_frees_its_slot_at_once(redis_url: str) -> None:
    """A call admitted as a probe and then not made (a rate limit said wait, or its
    caller left) gives its slot back: the next call may probe, no timeout later."""

    async def body(make: Callable[[], CircuitBreaker], clock: FakeClock) -> None:
        breaker = make()
        await fail(breaker)
        clock.advance(10)
        unused = await breaker.acquire(DEPLOYMENT)
        assert unused.probe
        assert not (await breaker.acquire(DEPLOYMENT)).allowed  # the one slot is taken

        await breaker.release(DEPLOYMENT, unused)

        [status] = await breaker.status([DEPLOYMENT])
        assert (status.state, status.probes_in_flight) == (BreakerState.HALF_OPEN, 0)
        again = await breaker.acquire(DEPLOYMENT)
        assert (again.allowed, again.probe) == (True, True)
        # A permit that took no slot has nothing to give back.
        await breaker.release(DEPLOYMENT, Permit(allowed=True, state=BreakerState.CLOSED))

    scenario(redis_url, body, failure_threshold=1, cooldown_seconds=10, half_open_probes=1)


def test_a_probe_success_closes_and_clears_the_counts(redis_url: str) -> None:
    async def body(make: Callable[[], CircuitBreaker], clock: FakeClock) -> None:
        breaker = make()
        await fail(breaker, 2)
        clock.advance(30)
        probe = await breaker.acquire(DEPLOYMENT)
        await breaker.record(DEPLOYMENT, success=True, permit=probe)

        [status] = await breaker.status([DEPLOYMENT])
        assert status.state is BreakerState.CLOSED
        assert (status.consecutive_failures, status.window_requests) == (0, 0)
        assert (status.opened_at, status.next_probe_at) == (None, None)
        permit = await breaker.acquire(DEPLOYMENT)
        assert (permit.allowed, permit.probe) == (True, False)
        await fail(breaker)  # the count starts again from zero
        assert await state(breaker) is BreakerState.CLOSED

    scenario(redis_url, body, failure_threshold=2)


def test_a_probe_failure_reopens_for_a_new_cooldown(redis_url: str) -> None:
    async def body(make: Callable[[], CircuitBreaker], clock: FakeClock) -> None:
        breaker = make()
        await fail(breaker)
        clock.advance(30)
        probe = await breaker.acquire(DEPLOYMENT)
        clock.advance(5)
        await breaker.record(DEPLOYMENT, success=False, permit=probe)

        [status] = await breaker.status([DEPLOYMENT])
        assert (status.state, status.opened_at) == (BreakerState.OPEN, clock.now)
        assert (await breaker.acquire(DEPLOYMENT)).retry_after == 30
        clock.advance(30)
        assert (await breaker.acquire(DEPLOYMENT)).probe

    scenario(redis_url, body, failure_threshold=1)


def test_an_expired_probe_frees_its_slot_and_its_late_report_is_ignored(redis_url: str) -> None:
    async def body(make: Callable[[], CircuitBreaker], clock: FakeClock) -> None:
        breaker = make()
        await fail(breaker)
        clock.advance(30)
        lost = await breaker.acquire(DEPLOYMENT)
        clock.advance(119)
        assert not (await breaker.acquire(DEPLOYMENT)).allowed
        clock.advance(1)

        second = await breaker.acquire(DEPLOYMENT)
        assert (second.allowed, second.probe) == (True, True)
        await breaker.record(DEPLOYMENT, success=True, permit=lost)
        assert await state(breaker) is BreakerState.HALF_OPEN
        await breaker.record(DEPLOYMENT, success=False, permit=second)
        assert await state(breaker) is BreakerState.OPEN

    scenario(redis_url, body, failure_threshold=1)


def test_reports_of_calls_admitted_before_it_opened_are_ignored(redis_url: str) -> None:
    async def body(make: Callable[[], CircuitBreaker], clock: FakeClock) -> None:
        breaker = make()
        early = [await breaker.acquire(DEPLOYMENT) for _ in range(3)]
        await fail(breaker, 2)
        for permit in early:
            await breaker.record(DEPLOYMENT, success=permit is early[0], permit=permit)

        [status] = await breaker.status([DEPLOYMENT])
        assert (status.state, status.consecutive_failures) == (BreakerState.OPEN, 2)
        await breaker.record(DEPLOYMENT, success=True, permit=await breaker.acquire(DEPLOYMENT))
        assert await state(breaker) is BreakerState.OPEN  # a refused permit reports nothing

    scenario(redis_url, body, failure_threshold=2)


def test_two_processes_share_one_breaker(redis_url: str) -> None:
    async def body(make: Callable[[], CircuitBreaker], clock: FakeClock) -> None:
        one, two = make(), make()
        await fail(one, 2)
        await fail(two)
        assert not (await one.acquire(DEPLOYMENT)).allowed
        assert (await two.acquire("openai|gpt-4o-mini")).allowed  # deployments are separate
        clock.advance(30)

        probe = await two.acquire(DEPLOYMENT)
        assert probe.probe
        assert not (await one.acquire(DEPLOYMENT)).allowed
        await two.record(DEPLOYMENT, success=True, permit=probe)
        assert (await one.acquire(DEPLOYMENT)).state is BreakerState.CLOSED

    scenario(redis_url, body, failure_threshold=3)


def test_concurrent_acquires_in_half_open_admit_exactly_the_probes(redis_url: str) -> None:
    async def body(make: Callable[[], CircuitBreaker], clock: FakeClock) -> None:
        one, two = make(), make()
        await fail(one)
        clock.advance(30)

        permits = await asyncio.gather(*(b.acquire(DEPLOYMENT) for b in [one, two] * 50))

        assert sum(p.allowed for p in permits) == 3
        assert all(p.probe for p in permits if p.allowed)
        assert len({p.probe_id for p in permits if p.allowed}) == 3

    scenario(redis_url, body, failure_threshold=1, half_open_probes=3)


def test_reset_closes_and_status_of_an_unknown_deployment(redis_url: str) -> None:
    async def body(make: Callable[[], CircuitBreaker], clock: FakeClock) -> None:
        breaker = make()
        await fail(breaker)
        await breaker.reset(DEPLOYMENT)

        [reset, unknown] = await breaker.status([DEPLOYMENT, "nobody|none"])
        assert reset.state is unknown.state is BreakerState.CLOSED
        assert unknown.consecutive_failures == unknown.window_requests == 0
        assert (await breaker.acquire(DEPLOYMENT)).allowed

    scenario(redis_url, body, failure_threshold=1)


@pytest.mark.parametrize(
    "bad",
    [
        {"failure_threshold": 0},
        {"failure_rate": 1.5},
        {"window_seconds": 0},
        {"half_open_probes": 0},
        {"typo": 1},
    ],
)
def test_settings_are_validated(bad: dict[str, float]) -> None:
    with pytest.raises(pydantic.ValidationError):
        BreakerSettings.model_validate(bad)


def test_public_surface() -> None:
    assert sorted(relayq.resilience.breaker.__all__) == [
        "BreakerState",
        "BreakerStatus",
        "CircuitBreaker",
        "Permit",
    ]
    assert BreakerSettings() == BreakerSettings(
        failure_threshold=5,
        failure_rate=0.5,
        window_seconds=60,
        min_requests=20,
        cooldown_seconds=30,
        half_open_probes=1,
        probe_timeout_seconds=120,
    )
