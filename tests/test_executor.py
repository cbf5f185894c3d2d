"""The executor in-process: real SQLite, real Redis, the mock provider, no Celery.

What these tests need of a broker is that a re-queued job comes back to the
same executor at once, which is the case a real worker meets when a retry or
a fallback lands on itself; :class:`SameWorker` delivers it so.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis as sync_redis
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from relayq.config.routes import RetrySettings
from relayq.config.settings import BreakerSettings
from relayq.direct.replies import Replies, direct_fence_key
from relayq.events.log import EventLog
from relayq.execution.executor import Executor, RunResult
from relayq.providers import build_providers
from relayq.providers.http import build_http_client
from relayq.queueing.broker import NO_DETAILS, Enqueuer, JobDetails
from relayq.redis.pipeline import CommandBatch
from relayq.resilience.breaker import CircuitBreaker
from relayq.resilience.clearance import Clearance, listen_for_changes
from relayq.resilience.ratelimit import RateLimiter
from relayq.resilience.resilience import Resilience, deployment_id
from relayq.schemas.jobs import JobStatus
from relayq.store import Database
from relayq.store.jobs import NewJob, cancel_job, create_jobs, get_job, list_attempts
from relayq.store.keys import create_key
from tests.executor_routing import ROUTING
from tests.jobs import mock_job
from tests.services import clone_sqlite, free_port, run, until

_REDIS_DB = 11
PREFIX = "relayq-executor-test"


class SameWorker(Enqueuer):
    """A broker that hands every re-queued job straight back to ``executor``.

    ``send`` returns once the redelivered run is under way beside the run
    that re-queued it (or after a second, if the executor never shows two).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.executor: Executor | None = None
        self.runs: list[asyncio.Future[RunResult]] = []

    def send(
        self,
        *,
        job_id: str,
        provider: str,
        priority: int,
        countdown: float | None = None,
        details: JobDetails = NO_DETAILS,
    ) -> None:
        assert self.executor is not None
        before = self.executor.in_flight
        run = self.executor.run(job_id, request_id=details.request_id)
        future = asyncio.run_coroutine_threadsafe(run, self._loop)
        self.runs.append(asyncio.wrap_future(future, loop=self._loop))
        deadline = time.monotonic() + 1.0
        while self.executor.in_flight <= before and time.monotonic() < deadline:
            time.sleep(0.005)


@dataclass
class Env:
    database: Database
    redis: aioredis.Redis
    key_id: str
    redis_url: str


Scenario = Callable[[Env], Awaitable[None]]


@pytest.fixture
def scenario(
    tmp_path: Path, redis_server: str, sqlite_template: Path
) -> Callable[[Scenario], None]:
    """Runs a scenario on a fresh SQLite file and a flushed Redis database."""
    redis_url = f"{redis_server}/{_REDIS_DB}"
    client = sync_redis.Redis.from_url(redis_url)
    client.flushdb()
    client.close()
    url = clone_sqlite(sqlite_template, tmp_path / "relayq.db")

    def go(body: Scenario) -> None:
        async def main() -> None:
            database = Database(url)
            redis = aioredis.Redis.from_url(redis_url)
            try:
                async with database.session() as session:
                    key = await create_key(session, name="executor")
                await body(Env(database=database, redis=redis, key_id=key.id, redis_url=redis_url))
            finally:
                await redis.aclose()
                await database.aclose()

        run(main())

    return go


@contextlib.asynccontextmanager
async def executor(
    env: Env,
    broker: SameWorker,
    *,
    max_in_flight: int = 1000,
    limits_redis: aioredis.Redis | None = None,
    clearance: Clearance | None = None,
) -> AsyncIterator[Executor]:
    """``limits_redis``: where the breaker and rate limits live (the test's Redis by default);
    ``clearance``: what the worker may admit by itself (kept listening here)."""
    limits = limits_redis or env.redis
    http = build_http_client(max_connections=10)
    events = EventLog(env.redis, key_prefix=PREFIX, max_events=100, retention_seconds=60)
    resilience = Resilience(
        database=env.database,
        enqueuer=broker,
        limiter=RateLimiter(limits, key_prefix=PREFIX),
        breaker=CircuitBreaker(limits, key_prefix=PREFIX, settings=BreakerSettings()),
        retry=RetrySettings(max_attempts_per_deployment=1),
        routing=lambda: ROUTING,
        events=events,
        max_countdown=10,
        clearance=clearance,
    )
    built = Executor(
        database=env.database,
        providers=build_providers(ROUTING.providers, http),
        lease_seconds=60,
        max_in_flight=max_in_flight,
        events=events,
        resilience=resilience,
        replies=Replies(CommandBatch(env.redis), key_prefix=PREFIX),
    )
    broker.executor = built
    listener = None
    if clearance is not None:
        listener = asyncio.create_task(
            listen_for_changes(limits, key_prefix=PREFIX, clearance=clearance)
        )
        await until(lambda: clearance.listening)
    try:
        yield built
    finally:
        if listener is not None:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
        await http.aclose()


async def store(env: Env, **fields: Any) -> str:
    async with env.database.session() as session:
        (job,) = await create_jobs(session, jobs=[mock_job(env.key_id, **fields)], now=time.time())
    return job.id


def test_a_fallback_that_lands_on_the_same_worker_keeps_its_run(
    scenario: Callable[[Scenario], None],
) -> None:
    """The failed run's cleanup must not take the fallback run's place in the run table."""
    scenario(_fallback_on_the_same_worker)


async def _fallback_on_the_same_worker(env: Env) -> None:
    broker = SameWorker(asyncio.get_running_loop())
    job_id = await store(
        env,
        route="resilient",
        provider="down",
        upstream_model="m1",
        request={
            "model": "resilient",
            "messages": [{"role": "user", "content": "x"}],
            "mock": {"latency_ms": 300},
        },
    )
    async with executor(env, broker) as running:
        assert await running.run(job_id) is RunResult.REQUEUED
        assert len(broker.runs) == 1
        assert await asyncio.wait_for(broker.runs[0], timeout=10) is RunResult.SUCCEEDED
        assert running.in_flight == 0
    async with env.database.session() as session:
        job = await get_job(session, job_id=job_id, key_id=env.key_id)
        attempts = await list_attempts(session, job_id=job_id)
    assert job is not None
    assert job.status == JobStatus.SUCCEEDED.value
    assert job.attempts == 2
    calls = [(a.provider, a.status) for a in attempts]
    assert calls == [("down", "failed"), ("backup", "succeeded")]


def test_jobs_arriving_together_are_claimed_and_finished_together(
    scenario: Callable[[Scenario], None],
) -> None:
    """Fifty jobs delivered at once cost a handful of transactions, not a hundred."""
    scenario(_fifty_together)


async def _fifty_together(env: Env) -> None:
    broker = SameWorker(asyncio.get_running_loop())
    job_ids = [await store(env) for _ in range(50)]
    async with executor(env, broker) as running:
        results = await asyncio.gather(*(running.run(job_id) for job_id in job_ids))
        assert set(results) == {RunResult.SUCCEEDED}
        # One claim transaction and one outcome transaction for most of the tick.
        assert running.transactions <= 10
    async with env.database.session() as session:
        for job_id in job_ids:
            job = await get_job(session, job_id=job_id, key_id=env.key_id)
            assert job is not None
            assert job.status == JobStatus.SUCCEEDED.value


def test_a_message_delivered_twice_in_one_tick_runs_once(
    scenario: Callable[[Scenario], None],
) -> None:
    scenario(_delivered_twice)


async def _delivered_twice(env: Env) -> None:
    broker = SameWorker(asyncio.get_running_loop())
    job_id = await store(env)
    async with executor(env, broker) as running:
        first, second = await asyncio.gather(running.run(job_id), running.run(job_id))
    assert sorted([first, second]) == sorted([RunResult.SUCCEEDED, RunResult.SKIPPED])
    async with env.database.session() as session:
        assert len(await list_attempts(session, job_id=job_id)) == 1


def test_a_delivery_of_a_job_already_ended_otherwise_than_succeeded_comes_to_that_end(
    scenario: Callable[[Scenario], None],
) -> None:
    """A job cancelled while queued still has its message delivered: that delivery comes
    to the job's end (cancelled), never "skipped", which Celery and Flower would show as
    a success. A job that already succeeded is skipped."""
    scenario(_already_ended)


async def _already_ended(env: Env) -> None:
    broker = SameWorker(asyncio.get_running_loop())
    cancelled = await store(env)
    async with env.database.session() as session:
        assert await cancel_job(session, job_id=cancelled, key_id=env.key_id, now=time.time())
    succeeded = await store(env)
    async with executor(env, broker) as running:
        assert await running.run(cancelled) is RunResult.CANCELLED
        assert await running.run(succeeded) is RunResult.SUCCEEDED
        assert await running.run(succeeded) is RunResult.SKIPPED
    async with env.database.session() as session:
        assert await list_attempts(session, job_id=cancelled) == []


def direct_message(
    env: Env, reply_to: str, *, stream: bool = False, mock: dict[str, Any] | None = None
) -> dict[str, Any]:
    request: dict[str, Any] = {
        "model": "mock",
        "messages": [{"role": "user", "content": "x"}],
        "stream": stream,
    }
    if mock is not None:
        request["mock"] = mock
    job: NewJob = dataclasses.replace(
        mock_job(env.key_id, request=request),
        id=f"job_direct{time.monotonic_ns()}",
        reply_to=reply_to,
    )
    return {"job": dataclasses.asdict(job), "created_at": time.time()}


async def replies_of(env: Env, stream: str) -> list[str]:
    entries: list[Any] = await env.redis.xrange(stream) or []
    return [str(fields[b"type"].decode()) for _, fields in entries]


def test_a_direct_job_answers_its_caller_then_is_recorded_once(
    scenario: Callable[[Scenario], None],
) -> None:
    """The sync lane: the row is stored beside the call; a redelivery runs nothing more."""
    scenario(_direct_once)


async def _direct_once(env: Env) -> None:
    broker = SameWorker(asyncio.get_running_loop())
    message = direct_message(env, reply_to=f"{PREFIX}:replies:test", stream=True)
    whole = direct_message(env, reply_to=f"{PREFIX}:replies:whole")
    job_id = message["job"]["id"]
    async with executor(env, broker) as running:
        assert await running.run_direct(message) is RunResult.SUCCEEDED
        assert await running.run_direct(message) is RunResult.SKIPPED
        assert await running.run_direct(whole) is RunResult.SUCCEEDED
    kinds = await replies_of(env, f"{PREFIX}:replies:test")
    assert kinds[0] == "delta"
    assert kinds[-1] == "succeeded"
    # A caller waiting for the whole answer is sent nothing before it.
    assert await replies_of(env, f"{PREFIX}:replies:whole") == ["succeeded"]
    async with env.database.session() as session:
        job = await get_job(session, job_id=job_id, key_id=env.key_id)
        attempts = await list_attempts(session, job_id=job_id)
    assert job is not None
    assert job.status == JobStatus.SUCCEEDED.value
    assert job.reply_to == f"{PREFIX}:replies:test"
    assert len(attempts) == 1


def test_a_direct_job_whose_first_worker_died_before_storing_it_runs(
    scenario: Callable[[Scenario], None],
) -> None:
    """The fence is set but no row exists: the redelivery stores the row and runs the job."""
    scenario(_direct_after_a_death)


async def _direct_after_a_death(env: Env) -> None:
    broker = SameWorker(asyncio.get_running_loop())
    message = direct_message(env, reply_to=f"{PREFIX}:replies:test")
    job_id = message["job"]["id"]
    await env.redis.set(direct_fence_key(PREFIX, job_id), "1")
    async with executor(env, broker) as running:
        assert await running.run_direct(message) is RunResult.SUCCEEDED
    async with env.database.session() as session:
        job = await get_job(session, job_id=job_id, key_id=env.key_id)
    assert job is not None
    assert job.status == JobStatus.SUCCEEDED.value


def test_a_direct_jobs_row_is_stored_early_in_a_long_call(
    scenario: Callable[[Scenario], None],
) -> None:
    """Its caller hears nothing for 2 s (a whole answer), yet the row is there,
    running, well before the answer (looked for until the call ends, so a busy
    machine's slow INSERT still counts)."""
    scenario(_row_in_a_long_call)


async def _row_in_a_long_call(env: Env) -> None:
    broker = SameWorker(asyncio.get_running_loop())
    message = direct_message(env, reply_to=f"{PREFIX}:replies:long", mock={"latency_ms": 2000})
    job_id = message["job"]["id"]
    async with executor(env, broker) as running:
        call = asyncio.ensure_future(running.run_direct(message, recorded=True))
        during = None
        while during is None and not call.done():
            await asyncio.sleep(0.02)
            async with env.database.session() as session:
                during = await get_job(session, job_id=job_id, key_id=env.key_id)
        assert during is not None, "no row until the call ended"
        assert not call.done()
        assert during.status == JobStatus.RUNNING.value
        assert await call is RunResult.SUCCEEDED


def test_a_cancel_heard_before_a_direct_jobs_message_is_read_stops_it_uncalled(
    scenario: Callable[[Scenario], None],
) -> None:
    """The caller left while its message waited on the lane; the cancel signal reached
    this worker first, so the job is recorded cancelled with no call and no round trip."""
    scenario(_cancel_heard_first)


async def _cancel_heard_first(env: Env) -> None:
    broker = SameWorker(asyncio.get_running_loop())
    stream = f"{PREFIX}:replies:left"
    message = direct_message(env, reply_to=stream)
    job_id = message["job"]["id"]
    async with executor(env, broker) as running:
        running.hearing_cancels(time.time() - 60)  # listening since before the message
        assert not running.cancel(job_id)  # not running here: kept
        assert await running.run_direct(message, recorded=True) is RunResult.CANCELLED
    async with env.database.session() as session:
        job = await get_job(session, job_id=job_id, key_id=env.key_id)
        attempts = await list_attempts(session, job_id=job_id)
    assert job is not None
    assert job.status == JobStatus.CANCELLED.value
    assert attempts == []
    assert await replies_of(env, stream) == ["cancelled"]


def test_a_clear_deployment_is_admitted_here_until_its_breaker_opens_elsewhere(
    scenario: Callable[[Scenario], None],
) -> None:
    """Once Redis found the deployment clear, its calls are admitted without asking;
    a breaker opened by another process reaches this worker on the admission channel,
    and its next job makes no call."""
    scenario(_clear_until_opened)


async def _clear_until_opened(env: Env) -> None:
    broker = SameWorker(asyncio.get_running_loop())
    clearance = Clearance(ttl=60)
    deployment = deployment_id("mock", "mock")
    other = aioredis.Redis.from_url(env.redis_url)  # another process's client
    elsewhere = CircuitBreaker(
        other, key_prefix=PREFIX, settings=BreakerSettings(failure_threshold=1)
    )
    try:
        async with executor(env, broker, clearance=clearance) as running:
            assert not clearance.clear(deployment)
            assert await running.run(await store(env)) is RunResult.SUCCEEDED
            assert clearance.clear(deployment)
            permit = await elsewhere.acquire(deployment)
            await elsewhere.record(deployment, success=False, permit=permit)
            await until(lambda: not clearance.clear(deployment))
            refused = await store(env)
            assert await running.run(refused) is RunResult.FAILED
    finally:
        await other.aclose()
    async with env.database.session() as session:
        attempts = await list_attempts(session, job_id=refused)
    assert [(a.provider, a.status) for a in attempts] == [("mock", "skipped")]
    assert attempts[0].error is not None
    assert attempts[0].error["code"] == "breaker_open"


def test_jobs_in_flight_stay_within_the_cap(scenario: Callable[[Scenario], None]) -> None:
    """An envelope brings many jobs at once; the worker's cap, not the envelope, bounds them."""
    scenario(_capped)


async def _capped(env: Env) -> None:
    broker = SameWorker(asyncio.get_running_loop())
    request = {"model": "mock", "messages": [{"role": "user", "content": "x"}]}
    slow = {**request, "mock": {"latency_ms": 100}}
    job_ids = [await store(env, request=slow) for _ in range(6)]
    seen: list[int] = []
    async with executor(env, broker, max_in_flight=2) as running:
        runs = asyncio.gather(*(running.run(job_id) for job_id in job_ids))
        while not runs.done():
            seen.append(running.in_flight)
            await asyncio.sleep(0.01)
        assert set(await runs) == {RunResult.SUCCEEDED}
    assert max(seen) == 2


def test_a_claim_the_worker_cannot_go_on_with_is_handed_back(
    scenario: Callable[[Scenario], None],
) -> None:
    """Redis fails right after the claim (the limits need it): the job goes back to the
    queue at once, unconfirmed for the reconciler, instead of waiting out its lease."""
    scenario(_handed_back)


async def _handed_back(env: Env) -> None:
    broker = SameWorker(asyncio.get_running_loop())
    job_id = await store(env)
    gone = aioredis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5)
    try:
        async with executor(env, broker, limits_redis=gone) as running:
            with pytest.raises(RedisError):
                await running.run(job_id)
    finally:
        await gone.aclose()
    async with env.database.session() as session:
        job = await get_job(session, job_id=job_id, key_id=env.key_id)
    assert job is not None
    assert job.status == JobStatus.QUEUED.value
    assert job.lease_expires_at is None
    assert job.enqueued_at is None
