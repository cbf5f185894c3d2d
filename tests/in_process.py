"""What the in-process tests of the core classes share: a fresh SQLite file and a flushed
Redis database per test, an API key, a clock the test moves, and a broker that hands a
re-queued job straight back to its executor.

No Celery worker, no API process: the classes are built here with their real
collaborators, as the worker's and the API's start-up build them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis as sync_redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from relayq.config.routes import RetrySettings, RoutingConfig
from relayq.config.settings import BreakerSettings
from relayq.direct.replies import Replies
from relayq.events.log import EventLog
from relayq.execution.executor import Executor, RunResult
from relayq.providers import build_providers
from relayq.providers.http import build_http_client
from relayq.queueing.broker import NO_DETAILS, RUN_MANY_TASK, Enqueuer, JobDetails
from relayq.redis.pipeline import CommandBatch
from relayq.resilience.breaker import CircuitBreaker
from relayq.resilience.clearance import Clearance, listen_for_changes
from relayq.resilience.ratelimit import RateLimiter
from relayq.resilience.resilience import Resilience
from relayq.store import Database
from relayq.store.jobs import create_jobs
from relayq.store.keys import create_key
from tests.clock import FakeClock
from tests.executor_routing import ROUTING
from tests.jobs import mock_job
from tests.services import clone_sqlite, free_port, run, until

__all__ = [
    "PREFIX",
    "Env",
    "SameWorker",
    "Scenario",
    "ScenarioRunner",
    "eventually",
    "executor",
    "in_process_scenario",
    "queued_messages",
    "store",
    "unreachable_redis",
]

REDIS_DB = 11
PREFIX = "relayq-core-test"


@dataclass
class Env:
    database: Database
    redis: aioredis.Redis
    key_id: str
    redis_url: str
    database_url: str
    clock: FakeClock = field(default_factory=FakeClock)


Scenario = Callable[[Env], Awaitable[None]]
ScenarioRunner = Callable[[Scenario], None]


def in_process_scenario(tmp_path: Path, redis_server: str, template: Path) -> ScenarioRunner:
    """Runs a scenario on a copy of the migrated ``template``, a flushed Redis database
    and a new key."""
    redis_url = f"{redis_server}/{REDIS_DB}"
    client = sync_redis.Redis.from_url(redis_url)
    client.flushdb()
    client.close()
    url = clone_sqlite(template, tmp_path / "relayq.db")

    def go(body: Scenario) -> None:
        async def main() -> None:
            database = Database(url)
            redis = aioredis.Redis.from_url(redis_url)
            try:
                async with database.session() as session:
                    key = await create_key(session, name="in-process")
                env = Env(
                    database=database,
                    redis=redis,
                    key_id=key.id,
                    redis_url=redis_url,
                    database_url=url,
                )
                await body(env)
            finally:
                await redis.aclose()
                await database.aclose()

        run(main())

    return go


def queued_messages(url: str, queue: str) -> list[tuple[str, list[Any]]]:
    """Messages waiting on ``queue`` over its priority lists (kombu's ``queue:N`` names),
    as (task name, job ids or direct jobs)."""
    client = sync_redis.Redis.from_url(url)
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


class SameWorker(Enqueuer):
    """A broker that hands every re-queued job straight back to ``executor``.

    ``send`` of a message due now returns once the redelivered run is under
    way beside the run that re-queued it, or over (or after a second, if
    neither shows). With ``clock``, a message's countdown is spent by moving
    the clock, not by waiting: the job arrives when it is due.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, clock: FakeClock | None = None) -> None:
        self._loop = loop
        self._clock = clock
        self.executor: Executor | None = None
        self.runs: list[asyncio.Future[RunResult]] = []
        self.countdowns: list[float | None] = []

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
        self.countdowns.append(countdown)
        if self._clock is not None and countdown:
            self._clock.advance(countdown)
        before = self.executor.in_flight
        run = self.executor.run(job_id, request_id=details.request_id)
        future = asyncio.run_coroutine_threadsafe(run, self._loop)
        self.runs.append(asyncio.wrap_future(future, loop=self._loop))
        if countdown:
            return  # due later: not run beside the run that sent it
        deadline = time.monotonic() + 1.0
        while (
            self.executor.in_flight <= before and not future.done() and time.monotonic() < deadline
        ):
            time.sleep(0.005)

    async def settled(self, within: float = 10.0) -> list[RunResult]:
        """Every redelivered run's result, including those their runs re-queued."""
        done = 0
        while done < len(self.runs):
            await asyncio.wait_for(self.runs[done], timeout=within)
            done += 1
        return [future.result() for future in self.runs]


@contextlib.asynccontextmanager
async def executor(
    env: Env,
    broker: SameWorker,
    *,
    routing: RoutingConfig = ROUTING,
    retry: RetrySettings | None = None,
    breaker: BreakerSettings | None = None,
    max_in_flight: int = 1000,
    lease_seconds: float = 60,
    owner: str | None = None,
    limits_redis: aioredis.Redis | None = None,
    clearance: Clearance | None = None,
) -> AsyncIterator[Executor]:
    """An executor as a worker builds one, on ``env``'s clock. ``limits_redis``: where the
    breaker and rate limits live (the test's Redis by default); ``clearance``: what the
    worker may admit by itself (kept listening here)."""
    limits = limits_redis or env.redis
    http = build_http_client(max_connections=10)
    events = EventLog(env.redis, key_prefix=PREFIX, max_events=100, retention_seconds=60)
    resilience = Resilience(
        database=env.database,
        enqueuer=broker,
        limiter=RateLimiter(limits, key_prefix=PREFIX, clock=env.clock),
        breaker=CircuitBreaker(
            limits, key_prefix=PREFIX, settings=breaker or BreakerSettings(), clock=env.clock
        ),
        retry=retry or RetrySettings(max_attempts_per_deployment=1),
        routing=lambda: routing,
        events=events,
        max_countdown=10,
        clearance=clearance,
        clock=env.clock,
    )
    built = Executor(
        database=env.database,
        providers=build_providers(routing.providers, http),
        lease_seconds=lease_seconds,
        max_in_flight=max_in_flight,
        events=events,
        resilience=resilience,
        replies=Replies(CommandBatch(env.redis), key_prefix=PREFIX),
        owner=owner,
        clock=env.clock,
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
    """A queued job of ``env``'s key for the mock model, stored now; ``fields`` override."""
    async with env.database.session() as session:
        (job,) = await create_jobs(session, jobs=[mock_job(env.key_id, **fields)], now=env.clock())
    return job.id


def unreachable_redis() -> aioredis.Redis:
    """A client of a port nothing listens on, failing at once (no retries, no backoff)."""
    return aioredis.Redis(
        host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )


async def eventually(condition: Callable[[], Awaitable[bool]], within: float = 5.0) -> None:
    """Wait (on the running loop) until ``await condition()`` holds; fail after ``within`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)
