"""The executor's decisions in-process: retries, fallback, the breaker, cancels, leases.

Real SQLite and Redis, the mock provider and the ``openai`` adapter on the
wire-level fake; no Celery. A re-queued job comes straight back to its
executor (:class:`~tests.in_process.SameWorker`), which spends the message's
countdown by moving the test's clock, so a backoff costs no time.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from relayq.config.routes import RetrySettings
from relayq.config.settings import BreakerSettings
from relayq.execution.executor import RunResult
from relayq.redis.keys import RedisKeys
from relayq.resilience.breaker import CircuitBreaker
from relayq.resilience.resilience import deployment_id
from relayq.schemas.jobs import JobStatus
from relayq.store.attempts import list_attempts
from relayq.store.jobs import cancel_job, get_job
from relayq.store.models import Attempt, Job
from tests.executor_routing import with_openai
from tests.fakes.openai_server import FakeOpenAI, Reply, error_body
from tests.in_process import PREFIX, Env, SameWorker, ScenarioRunner, executor, store
from tests.services import until

Call = tuple[str, str]
"""An attempt as (provider, status)."""


async def job_and_calls(env: Env, job_id: str) -> tuple[Job, list[Call], list[Attempt]]:
    async with env.database.session() as session:
        job = await get_job(session, job_id=job_id, key_id=env.key_id)
        attempts = await list_attempts(session, job_id=job_id)
    assert job is not None
    return job, [(a.provider, a.status) for a in attempts], attempts


async def events_of(env: Env, job_id: str) -> list[dict[str, Any]]:
    """The job's stored events as ``{"type", "data"}``, oldest first."""
    entries: list[Any] = await env.redis.xrange(RedisKeys(PREFIX).events(job_id)) or []
    found = []
    for _, fields in entries:
        data = fields.get(b"data")
        found.append({"type": fields[b"type"].decode(), "data": json.loads(data) if data else {}})
    return found


async def kinds_of(env: Env, job_id: str) -> list[str]:
    return [event["type"] for event in await events_of(env, job_id)]


def request(text: str = "x", *, model: str = "mock", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def test_a_job_succeeds_with_its_answer_one_attempt_and_its_events(
    scenario: ScenarioRunner,
) -> None:
    async def body(env: Env) -> None:
        broker = SameWorker(asyncio.get_running_loop(), env.clock)
        job_id = await store(env)
        async with executor(env, broker) as running:
            assert await running.run(job_id) is RunResult.SUCCEEDED
        job, calls, _ = await job_and_calls(env, job_id)
        assert job.status == JobStatus.SUCCEEDED.value
        assert job.response is not None
        assert job.response["choices"][0]["message"]["content"]
        assert job.usage is not None
        assert calls == [("mock", "succeeded")]
        assert await kinds_of(env, job_id) == ["started", "succeeded"]
        assert broker.runs == []

    scenario(body)


def test_a_provider_error_is_retried_after_its_backoff_then_succeeds(
    scenario: ScenarioRunner, fake_openai: FakeOpenAI
) -> None:
    """A 503 from the fake OpenAI: re-queued with a backoff countdown (spent on the clock),
    called again on the same deployment, and answered."""
    routing = with_openai(fake_openai.base_url, fake_openai.api_key or "")
    retry = RetrySettings(max_attempts_per_deployment=3, backoff_base_seconds=5)

    async def body(env: Env) -> None:
        broker = SameWorker(asyncio.get_running_loop(), env.clock)
        job_id = await store(
            env, model="gpt", route="gpt", provider="openai", upstream_model="gpt-4o-mini"
        )
        calls_before = len(fake_openai.requests)
        fake_openai.script(Reply(status=503, body=error_body("overloaded", type="server_error")))
        started = env.clock()
        async with executor(env, broker, routing=routing, retry=retry) as running:
            assert await running.run(job_id) is RunResult.REQUEUED
            assert await broker.settled() == [RunResult.SUCCEEDED]
        [countdown] = broker.countdowns
        assert countdown is not None
        assert 0 < countdown <= 5
        assert env.clock() == started + countdown
        job, calls, attempts = await job_and_calls(env, job_id)
        assert job.status == JobStatus.SUCCEEDED.value
        assert calls == [("openai", "failed"), ("openai", "succeeded")]
        assert attempts[0].error is not None
        assert attempts[0].error["code"] == "provider_unavailable"
        assert len(fake_openai.requests) - calls_before == 2
        events = await events_of(env, job_id)
        assert [e["type"] for e in events] == ["started", "attempt_failed", "started", "succeeded"]
        assert events[1]["data"]["next"] == "retry"

    scenario(body)


def test_when_retries_and_deployments_are_spent_the_job_fails_with_every_attempt(
    scenario: ScenarioRunner,
) -> None:
    retry = RetrySettings(max_attempts_per_deployment=2, backoff_base_seconds=2)

    async def body(env: Env) -> None:
        broker = SameWorker(asyncio.get_running_loop(), env.clock)
        job_id = await store(env, route="down-only", provider="down", upstream_model="m1")
        async with executor(env, broker, retry=retry) as running:
            assert await running.run(job_id) is RunResult.REQUEUED
            assert await broker.settled() == [RunResult.FAILED]
        job, calls, _ = await job_and_calls(env, job_id)
        assert job.status == JobStatus.FAILED.value
        assert calls == [("down", "failed"), ("down", "failed")]
        assert job.error is not None
        assert job.error["code"] == "provider_unavailable"
        assert "after 2 attempt(s)" in job.error["message"]
        assert [a["provider"] for a in job.error["attempts"]] == ["down", "down"]
        events = await events_of(env, job_id)
        # The second failure's step is to fall back, and the route has nowhere else to go.
        assert [e["data"].get("next") for e in events if e["type"] == "attempt_failed"] == [
            "retry",
            "fallback",
        ]
        assert events[-1]["type"] == "failed"

    scenario(body)


def test_a_deployment_that_cannot_serve_the_job_falls_back_to_the_next(
    scenario: ScenarioRunner, fake_openai: FakeOpenAI
) -> None:
    """A 401 from the fake OpenAI is no reason to retry there: the job moves to the
    route's next deployment at once, and its events say so."""
    routing = with_openai(fake_openai.base_url, fake_openai.api_key or "")
    retry = RetrySettings(max_attempts_per_deployment=3)

    async def body(env: Env) -> None:
        broker = SameWorker(asyncio.get_running_loop(), env.clock)
        job_id = await store(
            env,
            model="gpt-then-backup",
            route="gpt-then-backup",
            provider="openai",
            upstream_model="gpt-4o-mini",
        )
        fake_openai.script(Reply(status=401, body=error_body("bad key", code="invalid_api_key")))
        async with executor(env, broker, routing=routing, retry=retry) as running:
            assert await running.run(job_id) is RunResult.REQUEUED
            assert await broker.settled() == [RunResult.SUCCEEDED]
        assert broker.countdowns == [None]  # at once
        job, calls, _ = await job_and_calls(env, job_id)
        assert job.status == JobStatus.SUCCEEDED.value
        assert (job.provider, job.upstream_model) == ("backup", "m2")
        assert calls == [("openai", "failed"), ("backup", "succeeded")]
        events = await events_of(env, job_id)
        kinds = [e["type"] for e in events]
        assert kinds == ["started", "attempt_failed", "fallback", "started", "succeeded"]
        assert events[1]["data"]["next"] == "fallback"
        assert events[2]["data"]["to"] == {"provider": "backup", "model": "m2"}

    scenario(body)


def test_an_open_breaker_sends_the_job_on_to_the_next_deployment_without_a_call(
    scenario: ScenarioRunner,
) -> None:
    """Another process opened the first deployment's breaker: the run makes no call
    there, re-queues the job to the second, and that one answers."""
    settings = BreakerSettings(failure_threshold=1)

    async def body(env: Env) -> None:
        elsewhere = CircuitBreaker(env.redis, key_prefix=PREFIX, settings=settings, clock=env.clock)
        down = deployment_id("down", "m1")
        await elsewhere.record(down, success=False, permit=await elsewhere.acquire(down))
        broker = SameWorker(asyncio.get_running_loop(), env.clock)
        job_id = await store(env, route="resilient", provider="down", upstream_model="m1")
        async with executor(env, broker, breaker=settings) as running:
            assert await running.run(job_id) is RunResult.REQUEUED
            assert await broker.settled() == [RunResult.SUCCEEDED]
        job, calls, attempts = await job_and_calls(env, job_id)
        assert job.status == JobStatus.SUCCEEDED.value
        assert calls == [("down", "skipped"), ("backup", "succeeded")]
        assert attempts[0].error is not None
        assert attempts[0].error["code"] == "breaker_open"
        assert attempts[0].latency_ms == 0.0

    scenario(body)


def test_cancelling_a_streaming_job_stops_its_call_midway(scenario: ScenarioRunner) -> None:
    """Its followers have had some of its text; the cancel ends the stream there and the
    job stays cancelled, its call recorded as cancelled."""

    async def body(env: Env) -> None:
        broker = SameWorker(asyncio.get_running_loop(), env.clock)
        slow = request(stream=True, mock={"tokens": 40, "stream_interval_ms": 25})
        job_id = await store(env, request=slow)
        async with executor(env, broker) as running:
            run = asyncio.ensure_future(running.run(job_id))
            kinds: list[str] = []

            async def some_text() -> bool:
                kinds[:] = await kinds_of(env, job_id)
                return "delta" in kinds

            while not await some_text():
                assert not run.done(), kinds
                await asyncio.sleep(0.01)
            async with env.database.session() as session:  # what Intake.cancel does first
                assert await cancel_job(session, job_id=job_id, key_id=env.key_id, now=env.clock())
            # The cancel's signal reaches the worker a moment later. (An outcome is known
            # written by its finish time: a clock standing still would blur the two.)
            env.clock.advance(0.5)
            assert running.cancel(job_id)
            assert await asyncio.wait_for(run, timeout=5) is RunResult.SUPERSEDED
            assert running.in_flight == 0
        job, calls, _ = await job_and_calls(env, job_id)
        assert job.status == JobStatus.CANCELLED.value
        assert calls == [("mock", "cancelled")]
        kinds = await kinds_of(env, job_id)
        assert "succeeded" not in kinds
        text = "".join(
            e["data"].get("text", "") for e in await events_of(env, job_id) if e["type"] == "delta"
        )
        assert 0 < len(text.split()) < 40

    scenario(body)


def test_a_run_whose_lease_lapsed_and_was_taken_over_does_not_complete_the_job(
    scenario: ScenarioRunner,
) -> None:
    """Worker A's lease lapses mid-call (the clock moves past it); worker B claims the job
    and answers it. A's late answer is recorded as an attempt, never as the outcome."""

    async def body(env: Env) -> None:
        loop = asyncio.get_running_loop()
        job_id = await store(env, request=request(mock={"latency_ms": 300}))
        async with (
            executor(env, SameWorker(loop, env.clock), owner="a", lease_seconds=30) as a,
            executor(env, SameWorker(loop, env.clock), owner="b", lease_seconds=30) as b,
        ):
            first = asyncio.ensure_future(a.run(job_id))
            await until(lambda: a.in_flight == 1)
            assert await b.run(job_id) is RunResult.SKIPPED  # A's lease holds
            env.clock.advance(31)
            second = asyncio.ensure_future(b.run(job_id))
            results = await asyncio.wait_for(asyncio.gather(first, second), timeout=5)
        assert list(results) == [RunResult.SUPERSEDED, RunResult.SUCCEEDED]
        job, calls, _ = await job_and_calls(env, job_id)
        assert job.status == JobStatus.SUCCEEDED.value
        assert job.run == 2
        assert calls == [("mock", "succeeded"), ("mock", "succeeded")]
        assert (await kinds_of(env, job_id)).count("succeeded") == 1

    scenario(body)


def test_a_job_past_its_deadline_when_claimed_expires_without_a_call(
    scenario: ScenarioRunner,
) -> None:
    async def body(env: Env) -> None:
        broker = SameWorker(asyncio.get_running_loop(), env.clock)
        job_id = await store(env, expires_at=env.clock() + 10)
        env.clock.advance(10)
        async with executor(env, broker) as running:
            assert await running.run(job_id) is RunResult.EXPIRED
            assert await running.run(job_id) is RunResult.EXPIRED  # a redelivery
        job, calls, _ = await job_and_calls(env, job_id)
        assert job.status == JobStatus.EXPIRED.value
        assert job.finished_at == env.clock()
        assert calls == []
        [expired] = await events_of(env, job_id)
        assert expired["type"] == "expired"
        assert expired["data"]["error"]["code"] == "expired"

    scenario(body)


def test_a_rate_limited_deployment_makes_a_job_wait_its_turn_in_hops_without_an_attempt(
    scenario: ScenarioRunner,
) -> None:
    """One request a minute: the second job goes back to its queue for its turn, in hops
    no longer than the broker's longest countdown (10 s here), and then runs once."""

    async def body(env: Env) -> None:
        broker = SameWorker(asyncio.get_running_loop(), env.clock)
        first, second = [await store(env, route="paced", upstream_model="paced") for _ in "ab"]
        async with executor(env, broker) as running:
            assert await running.run(first) is RunResult.SUCCEEDED
            started = env.clock()
            assert await running.run(second) is RunResult.WAITING
            results = await broker.settled()
        assert results[-1] is RunResult.SUCCEEDED
        assert set(results[:-1]) == {RunResult.WAITING}
        waited = env.clock() - started
        assert 50 < waited <= 61  # its turn, a minute after the first
        assert all(c is not None and 0 < c <= 10 for c in broker.countdowns)
        job, calls, _ = await job_and_calls(env, second)
        assert job.status == JobStatus.SUCCEEDED.value
        assert calls == [("mock", "succeeded")]  # waiting is not an attempt

    scenario(body)
