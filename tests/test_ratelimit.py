"""Global RPM/TPM limits and provider cooldowns on real Redis, with a fake clock."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable

import pytest
import redis.asyncio as aioredis

import relayq.resilience.ratelimit
from relayq.resilience.ratelimit import RateLimiter, estimate_tokens
from relayq.schemas.chat import ChatCompletionRequest
from tests.clock import FakeClock
from tests.services import run

DEPLOYMENT = "openai|gpt-4o"


Scenario = Callable[[Callable[[], RateLimiter], FakeClock], Awaitable[None]]


def scenario(redis_url: str, body: Scenario) -> None:
    """Run ``body`` with a factory of limiters sharing one prefix and one clock,
    each with its own Redis client, as separate processes would."""

    async def main() -> None:
        prefix = f"test-{uuid.uuid4().hex[:8]}"
        clock = FakeClock(1_700_000_000.0)
        clients: list[aioredis.Redis] = []

        def limiter() -> RateLimiter:
            clients.append(aioredis.Redis.from_url(redis_url))
            return RateLimiter(clients[-1], key_prefix=prefix, clock=clock)

        try:
            await body(limiter, clock)
        finally:
            for client in clients:
                await client.aclose()

    run(main())


@pytest.mark.parametrize("rpm", [10, 7])
def test_rpm_paces_requests_so_no_minute_holds_more_than_the_limit(
    redis_url: str, rpm: int
) -> None:
    async def body(make: Callable[[], RateLimiter], clock: FakeClock) -> None:
        limiter = make()
        interval = 60.5 / rpm  # paced over a minute plus the jitter margin
        assert await limiter.acquire(DEPLOYMENT, rpm=rpm, tpm=None, tokens=1) == 0.0
        assert await limiter.acquire(DEPLOYMENT, rpm=rpm, tpm=None, tokens=1) == pytest.approx(
            interval
        )
        clock.advance(interval / 2)
        assert await limiter.acquire(DEPLOYMENT, rpm=rpm, tpm=None, tokens=1) == pytest.approx(
            interval / 2
        )
        clock.advance(interval / 2)
        assert await limiter.acquire(DEPLOYMENT, rpm=rpm, tpm=None, tokens=1) == 0.0
        # Taking every admission as soon as it is allowed for ten minutes, no
        # 60-second window ever holds more than rpm requests.
        admitted: list[float] = []
        for _ in range(rpm * 10):
            wait = await limiter.acquire(DEPLOYMENT, rpm=rpm, tpm=None, tokens=1)
            if wait > 0:
                clock.advance(wait)
                assert await limiter.acquire(DEPLOYMENT, rpm=rpm, tpm=None, tokens=1) == 0.0
            admitted.append(clock.now)
        for start in admitted:
            # A window of 60 s less rounding: a request exactly 60 s on is the next minute.
            assert sum(1 for t in admitted if start <= t < start + 60) <= rpm
        clock.advance(600)  # a quiet spell allows one request, not a burst
        assert await limiter.acquire(DEPLOYMENT, rpm=rpm, tpm=None, tokens=1) == 0.0
        assert await limiter.acquire(DEPLOYMENT, rpm=rpm, tpm=None, tokens=1) > 0

    scenario(redis_url, body)


def test_tpm_charges_estimates_and_settles_them_with_the_usage(redis_url: str) -> None:
    async def body(make: Callable[[], RateLimiter], clock: FakeClock) -> None:
        limiter = make()  # 1000 tokens per minute: one token every 0.06 s

        async def take(tokens: int) -> float:
            return await limiter.acquire(DEPLOYMENT, rpm=None, tpm=1000, tokens=tokens)

        assert await take(600) == 0.0
        assert await take(600) == pytest.approx(12.0)  # 200 over: 200 * 0.06 s
        await limiter.correct(DEPLOYMENT, tpm=1000, estimated=600, actual=100)
        assert await take(600) == 0.0  # 700 used
        await limiter.correct(DEPLOYMENT, tpm=1000, estimated=600, actual=900)
        assert await take(1) == pytest.approx(0.06)  # 1000 used: the bucket is empty
        await limiter.correct(DEPLOYMENT, tpm=1000, estimated=5000, actual=0)
        assert await take(1000) == 0.0  # a refund stops at a full bucket
        assert await take(1) == pytest.approx(0.06)

    scenario(redis_url, body)


def test_both_limits_admit_together_and_a_refusal_charges_neither(redis_url: str) -> None:
    async def body(make: Callable[[], RateLimiter], clock: FakeClock) -> None:
        limiter = make()

        async def take(tokens: int, *, rpm: int | None = 2, tpm: int | None = 1000) -> float:
            return await limiter.acquire(DEPLOYMENT, rpm=rpm, tpm=tpm, tokens=tokens)

        assert await take(300) == 0.0
        # RPM (paced: 30.25 s apart) and TPM (800 more is 100 over: 6 s) both
        # refuse; the longer wait is the answer.
        assert await take(800) == pytest.approx(30.25)
        clock.advance(30.25)
        # Had the refusal charged its request or its 800 tokens, this would wait.
        assert await take(1000) == 0.0
        assert await take(1, rpm=None) > 0  # the bucket is empty now
        assert await take(0, tpm=None) == pytest.approx(30.25)

    scenario(redis_url, body)


def test_a_request_larger_than_the_tpm_is_admitted_once_the_bucket_is_full(
    redis_url: str,
) -> None:
    async def body(make: Callable[[], RateLimiter], clock: FakeClock) -> None:
        limiter = make()

        async def take(tokens: int) -> float:
            return await limiter.acquire(DEPLOYMENT, rpm=None, tpm=1000, tokens=tokens)

        assert await take(100) == 0.0
        assert await take(5000) == pytest.approx(6.0)  # until the 100 tokens are paid back
        clock.advance(6.0)
        assert await take(5000) == 0.0
        assert await take(1) == pytest.approx(4000 * 0.06 + 0.06)  # its debt, then one token
        clock.advance(240.06)
        assert await take(1) == 0.0

    scenario(redis_url, body)


def test_cooldowns_keep_the_longer_value(redis_url: str) -> None:
    async def body(make: Callable[[], RateLimiter], clock: FakeClock) -> None:
        one, two = make(), make()
        assert await one.cooldown_remaining("openai") == 0.0
        await one.cool_down("openai", 30)
        await two.cool_down("openai", 10)
        assert await two.cooldown_remaining("openai") == pytest.approx(30)
        await two.cool_down("openai", 45)
        clock.advance(20)

        assert await one.cooldown_remaining("openai") == pytest.approx(25)
        assert await one.cooldown_remaining("anthropic") == 0.0
        wait = await one.acquire(DEPLOYMENT, rpm=1, tpm=None, tokens=1, provider="openai")
        assert wait == pytest.approx(25)
        assert await one.acquire(DEPLOYMENT, rpm=1, tpm=None, tokens=1) == 0.0  # not charged
        clock.advance(25)
        assert await one.cooldown_remaining("openai") == 0.0

    scenario(redis_url, body)


@pytest.mark.parametrize(("rpm", "tpm", "admitted"), [(50, None, 1), (None, 9000, 45)])
def test_concurrent_acquirers_in_two_processes_never_exceed_the_limits(
    redis_url: str, rpm: int | None, tpm: int | None, admitted: int
) -> None:
    async def body(make: Callable[[], RateLimiter], clock: FakeClock) -> None:
        one, two = make(), make()

        waits = await asyncio.gather(
            *(lim.acquire(DEPLOYMENT, rpm=rpm, tpm=tpm, tokens=200) for lim in [one, two] * 100)
        )

        assert waits.count(0.0) == admitted
        clock.advance(60)
        assert await one.acquire(DEPLOYMENT, rpm=rpm, tpm=tpm, tokens=200) == 0.0

    scenario(redis_url, body)


def test_limits_are_checked(redis_url: str) -> None:
    async def body(make: Callable[[], RateLimiter], clock: FakeClock) -> None:
        limiter = make()
        with pytest.raises(ValueError, match="negative"):
            await limiter.acquire(DEPLOYMENT, rpm=None, tpm=None, tokens=-1)
        with pytest.raises(ValueError, match="positive"):
            await limiter.acquire(DEPLOYMENT, rpm=0, tpm=None, tokens=1)
        with pytest.raises(ValueError, match="positive"):
            await limiter.correct(DEPLOYMENT, tpm=-5, estimated=1, actual=2)

    scenario(redis_url, body)


def request(**fields: object) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"model": "m", **fields})


def test_estimate_tokens_counts_characters_and_the_answer() -> None:
    user = {"role": "user", "content": "x" * 400}
    assert estimate_tokens(request(messages=[user])) == 100 + 256
    assert estimate_tokens(request(messages=[user], max_tokens=50)) == 150
    assert estimate_tokens(request(messages=[user], max_completion_tokens=70, n=2)) == 240
    parts = {"role": "user", "content": [{"type": "text", "text": "x" * 8}, {"type": "image"}]}
    assert estimate_tokens(request(messages=[parts], max_tokens=1)) == 3
    tools = [{"type": "function", "function": {"name": "f"}}]
    with_tools = estimate_tokens(request(messages=[user], tools=tools, max_tokens=1))
    assert len(json.dumps(tools)) == 49
    assert with_tools == 113 + 1  # ceil((400 + 49) / 4) for the prompt, 1 for the answer


def test_public_surface() -> None:
    assert set(relayq.resilience.ratelimit.__all__) == {
        "CHARS_PER_TOKEN",
        "DEFAULT_COMPLETION_TOKENS",
        "GCRA_LUA",
        "PERIOD_SECONDS",
        "TOLERANCE_SECONDS",
        "RateLimiter",
        "estimate_tokens",
    }
