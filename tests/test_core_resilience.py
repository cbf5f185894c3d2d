"""Resilience in-process: admission under limits, the breaker, 429 cooldowns, and what a
failed call leads to (a retry on the deployment, a fallback, or the job's end).

Built as a worker builds it, on real SQLite and Redis and a real Celery broker
(messages read back from Redis), with a clock the test moves: limits, breaker
cooldowns and backoffs take no time.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from relayq.config.routes import RetrySettings, RoutingConfig
from relayq.config.settings import BreakerSettings, Settings
from relayq.events.log import EventLog
from relayq.providers.errors import (
    AuthenticationFailed,
    InvalidRequest,
    ProviderUnavailable,
    RateLimited,
)
from relayq.queueing.broker import RUN_JOB_TASK, Enqueuer
from relayq.redis.keys import RedisKeys
from relayq.resilience.breaker import BreakerState, CircuitBreaker
from relayq.resilience.ratelimit import RateLimiter
from relayq.resilience.resilience import Resilience
from relayq.routing.drains import Drains
from relayq.schemas.chat import ChatCompletionRequest
from relayq.store.attempts import AttemptRecord
from relayq.store.claims import Claim, claim_job
from relayq.store.jobs import get_job
from tests.in_process import PREFIX, Env, ScenarioRunner, queued_messages, store

ROUTING = RoutingConfig.model_validate(
    {
        "providers": {
            "first": {"type": "mock"},
            "second": {"type": "mock"},
            "third": {"type": "mock"},
        },
        "routes": {
            "paced": {"deployments": [{"provider": "first", "model": "m", "rpm": 2}]},
            "metered": {"deployments": [{"provider": "first", "model": "m", "tpm": 100}]},
            "pair": {
                "strategy": "ordered",
                "deployments": [
                    {"provider": "first", "model": "m"},
                    {"provider": "second", "model": "m"},
                ],
            },
            "trio": {
                "strategy": "ordered",
                "deployments": [
                    {"provider": "first", "model": "m"},
                    {"provider": "second", "model": "m"},
                    {"provider": "third", "model": "m"},
                ],
            },
        },
    }
)
BREAKER = BreakerSettings(failure_threshold=3, cooldown_seconds=30, half_open_probes=1)
RETRY = RetrySettings(max_attempts_per_deployment=2, backoff_base_seconds=4)
REQUEST = ChatCompletionRequest.model_validate(
    {"model": "pair", "messages": [{"role": "user", "content": "x"}]}
)


@asynccontextmanager
async def resilience(env: Env, *, drains: Drains | None = None) -> AsyncIterator[Resilience]:
    """A worker's Resilience on ``env``'s clock, publishing through a real broker."""
    enqueuer = Enqueuer(settings=Settings(redis_url=env.redis_url))
    try:
        yield Resilience(
            database=env.database,
            enqueuer=enqueuer,
            limiter=RateLimiter(env.redis, key_prefix=PREFIX, clock=env.clock),
            breaker=CircuitBreaker(env.redis, key_prefix=PREFIX, settings=BREAKER, clock=env.clock),
            retry=RETRY,
            routing=lambda: ROUTING,
            events=EventLog(env.redis, key_prefix=PREFIX, max_events=100, retention_seconds=60),
            max_countdown=10,
            drains=drains,
            clock=env.clock,
        )
    finally:
        enqueuer.close()


async def claimed(env: Env, route: str = "pair") -> Claim:
    """A job of ``route`` on its first deployment, claimed as a worker claims it."""
    job_id = await store(env, model=route, route=route, provider="first", upstream_model="m")
    async with env.database.session() as session:
        claim = await claim_job(session, job_id=job_id, now=env.clock(), lease_seconds=60)
    assert claim is not None
    return claim


def failed(claim: Claim, error: dict[str, Any]) -> AttemptRecord:
    return AttemptRecord(
        provider=claim.provider,
        upstream_model=claim.upstream_model,
        status="failed",
        latency_ms=5.0,
        error=error,
    )


def test_admission_paces_a_deployment_to_its_requests_per_minute(
    scenario: ScenarioRunner,
) -> None:
    async def body(env: Env) -> None:
        async with resilience(env) as under_test:
            claim = await claimed(env, "paced")
            first = await under_test.admit(claim, REQUEST)
            assert first.wait == 0
            assert first.permit is not None
            assert first.permit.allowed
            wait = (await under_test.admit(claim, REQUEST)).wait
            assert 0 < wait <= 60  # two a minute: the second waits its turn
            refused = await under_test.admit(claim, REQUEST)
            assert refused.permit is None  # a wait gives the breaker's permit back
            env.clock.advance(wait)
            assert (await under_test.admit(claim, REQUEST)).wait == 0
            assert (await under_test.admit(claim, REQUEST)).wait > 0

    scenario(body)


def test_admission_charges_estimated_tokens_against_the_tokens_per_minute(
    scenario: ScenarioRunner,
) -> None:
    """A long prompt's estimate fills the bucket; its usage settles the charge."""
    big = ChatCompletionRequest.model_validate(
        {"model": "metered", "messages": [{"role": "user", "content": "word " * 120}]}
    )

    async def body(env: Env) -> None:
        async with resilience(env) as under_test:
            claim = await claimed(env, "metered")
            admitted = await under_test.admit(claim, big)
            assert admitted.wait == 0
            assert admitted.tokens > 100  # charged in full, though larger than the bucket
            full = (await under_test.admit(claim, big)).wait
            assert full > 0
            # The call used far fewer tokens than estimated: the difference is given back.
            await under_test.succeeded(claim, admitted, {"total_tokens": 10})
            settled = (await under_test.admit(claim, big)).wait
            assert 0 < settled < full
            env.clock.advance(settled)
            assert (await under_test.admit(claim, big)).wait == 0

    scenario(body)


def test_the_breaker_opens_after_failures_then_lets_one_probe_through_after_its_cooldown(
    scenario: ScenarioRunner,
) -> None:
    async def body(env: Env) -> None:
        async with resilience(env) as under_test:
            claim = await claimed(env)
            error = ProviderUnavailable("first: 503", status_code=503)
            for _ in range(BREAKER.failure_threshold):
                admission = await under_test.admit(claim, REQUEST)
                await under_test.failed_call(claim, admission, error)
            refused = await under_test.admit(claim, REQUEST)
            assert refused.permit is not None
            assert (refused.permit.allowed, refused.permit.state) == (False, BreakerState.OPEN)

            env.clock.advance(BREAKER.cooldown_seconds)
            probe = await under_test.admit(claim, REQUEST)
            assert probe.permit is not None
            assert (probe.permit.allowed, probe.permit.state) == (True, BreakerState.HALF_OPEN)
            beside = await under_test.admit(claim, REQUEST)  # one probe at a time
            assert beside.permit is not None
            assert not beside.permit.allowed
            await under_test.succeeded(claim, probe, None)
            closed = await under_test.admit(claim, REQUEST)
            assert closed.permit is not None
            assert (closed.permit.allowed, closed.permit.state) == (True, BreakerState.CLOSED)

    scenario(body)


def test_a_client_error_never_opens_the_breaker(scenario: ScenarioRunner) -> None:
    async def body(env: Env) -> None:
        async with resilience(env) as under_test:
            claim = await claimed(env)
            error = InvalidRequest("first: 400", status_code=400)
            for _ in range(BREAKER.failure_threshold + 2):
                admission = await under_test.admit(claim, REQUEST)
                await under_test.failed_call(claim, admission, error)
            admission = await under_test.admit(claim, REQUEST)
            assert admission.permit is not None
            assert admission.permit.state is BreakerState.CLOSED

    scenario(body)


def test_a_429_with_retry_after_cools_the_whole_provider_down(scenario: ScenarioRunner) -> None:
    async def body(env: Env) -> None:
        async with resilience(env) as under_test:
            claim = await claimed(env)
            admission = await under_test.admit(claim, REQUEST)
            limited = RateLimited("first: 429", status_code=429, retry_after=20)
            await under_test.failed_call(claim, admission, limited)
            # Another job of another route on the same provider waits too.
            other = await claimed(env, "paced")
            assert (await under_test.admit(other, REQUEST)).wait == pytest.approx(20)
            assert (await under_test.admit(claim, REQUEST)).wait == pytest.approx(20)
            env.clock.advance(20)
            assert (await under_test.admit(claim, REQUEST)).wait == 0
            # The 429 is no provider fault: the breaker did not count it.
            closed = await under_test.admit(claim, REQUEST)
            assert closed.permit is not None
            assert closed.permit.state is BreakerState.CLOSED

    scenario(body)


def test_a_transient_failure_is_retried_on_its_deployment_after_a_backoff(
    scenario: ScenarioRunner,
) -> None:
    async def body(env: Env) -> None:
        async with resilience(env) as under_test:
            claim = await claimed(env)
            error = ProviderUnavailable("first: 503", status_code=503)
            assert (
                await under_test.after_failure(claim, error, failed(claim, error.to_dict())) is None
            )
            async with env.database.session() as session:
                job = await get_job(session, job_id=claim.job_id, key_id=env.key_id)
            assert job is not None
            assert (job.status, job.provider, job.deployment_index) == ("queued", "first", 0)
            assert job.deployment_attempts == 1
            assert job.attempts == 1
            assert job.not_before is not None
            assert env.clock() < job.not_before <= env.clock() + RETRY.backoff_base_seconds
            assert queued_messages(env.redis_url, "llm.first") == [(RUN_JOB_TASK, [claim.job_id])]
            kinds = await event_kinds(env, claim.job_id)
            assert kinds == [("attempt_failed", "retry")]

    scenario(body)


def test_a_deployment_that_cannot_serve_the_job_is_left_for_the_next_at_once(
    scenario: ScenarioRunner,
) -> None:
    async def body(env: Env) -> None:
        async with resilience(env) as under_test:
            claim = await claimed(env)
            error = AuthenticationFailed("first: 401", status_code=401)
            assert (
                await under_test.after_failure(claim, error, failed(claim, error.to_dict())) is None
            )
            async with env.database.session() as session:
                job = await get_job(session, job_id=claim.job_id, key_id=env.key_id)
            assert job is not None
            assert (job.status, job.provider, job.deployment_index) == ("queued", "second", 1)
            assert job.not_before == env.clock()
            assert queued_messages(env.redis_url, "llm.second") == [(RUN_JOB_TASK, [claim.job_id])]
            assert queued_messages(env.redis_url, "llm.first") == []
            kinds = await event_kinds(env, claim.job_id)
            assert kinds == [("attempt_failed", "fallback"), ("fallback", None)]

    scenario(body)


def test_a_fallback_passes_drained_deployments_over_and_fails_when_none_is_left(
    scenario: ScenarioRunner,
) -> None:
    async def body(env: Env) -> None:
        drains = Drains(env.redis, key_prefix=PREFIX)
        await drains.drain("second|m", now=env.clock())
        async with resilience(env, drains=drains) as under_test:
            error = AuthenticationFailed("first: 401", status_code=401)
            trio = await claimed(env, "trio")
            moved = await under_test.after_failure(trio, error, failed(trio, error.to_dict()))
            pair = await claimed(env, "pair")
            final = await under_test.after_failure(pair, error, failed(pair, error.to_dict()))
            async with env.database.session() as session:
                job = await get_job(session, job_id=trio.job_id, key_id=env.key_id)

        assert moved is None
        assert job is not None
        assert (job.status, job.provider, job.deployment_index) == ("queued", "third", 2)
        assert queued_messages(env.redis_url, "llm.second") == []
        assert final is not None
        assert final["code"] == error.code

    scenario(body)


def test_a_request_the_provider_rejected_fails_the_job_without_a_retry_or_fallback(
    scenario: ScenarioRunner,
) -> None:
    async def body(env: Env) -> None:
        async with resilience(env) as under_test:
            claim = await claimed(env)
            error = InvalidRequest("first: 400 bad tool schema", status_code=400)
            final = await under_test.after_failure(claim, error, failed(claim, error.to_dict()))
            assert final is not None
            assert final["code"] == error.code
            assert "after 1 attempt(s)" in final["message"]
            async with env.database.session() as session:
                job = await get_job(session, job_id=claim.job_id, key_id=env.key_id)
            assert job is not None
            assert (job.status, job.provider) == ("running", "first")  # the executor ends it
            assert queued_messages(env.redis_url, "llm.first") == []
            assert queued_messages(env.redis_url, "llm.second") == []

    scenario(body)


def test_an_unused_half_open_probe_is_given_back(scenario: ScenarioRunner) -> None:
    """A probe admitted for a job whose caller left is released: the next job probes."""

    async def body(env: Env) -> None:
        async with resilience(env) as under_test:
            claim = await claimed(env)
            error = ProviderUnavailable("first: 503", status_code=503)
            for _ in range(BREAKER.failure_threshold):
                await under_test.failed_call(claim, await under_test.admit(claim, REQUEST), error)
            env.clock.advance(BREAKER.cooldown_seconds)
            probe = await under_test.admit(claim, REQUEST)
            await under_test.unused(claim, probe)
            again = await under_test.admit(claim, REQUEST)
            assert again.permit is not None
            assert (again.permit.allowed, again.permit.state) == (True, BreakerState.HALF_OPEN)

    scenario(body)


async def event_kinds(env: Env, job_id: str) -> list[tuple[str, str | None]]:
    """The job's events as (type, the next step an ``attempt_failed`` names)."""
    entries: list[Any] = await env.redis.xrange(RedisKeys(PREFIX).events(job_id)) or []
    found = []
    for _, fields in entries:
        data = json.loads(fields.get(b"data") or b"{}")
        found.append((fields[b"type"].decode(), data.get("next")))
    return found
