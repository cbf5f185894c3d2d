"""The intake in-process: submitting, idempotency, limits, a broker that is down, cancel.

Built as the API builds it (api/services.py), on real SQLite and Redis, a real
Celery broker (its messages read back from Redis) and a clock the test moves.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import redis.asyncio as aioredis
from sqlalchemy import event

from relayq.config.routes import RoutingConfig
from relayq.config.settings import Settings
from relayq.events.log import EventLog
from relayq.execution.cache import ResponseCache
from relayq.intake.intake import BrokerUnavailable, Intake, KeyLimited, KeyLimitValues
from relayq.queueing.broker import RUN_JOB_TASK, RUN_MANY_TASK, Enqueuer
from relayq.queueing.outbox import Outbox
from relayq.redis.keys import RedisKeys
from relayq.redis.pipeline import CommandBatch
from relayq.resilience.key_limits import KeyLimit, KeyLimits
from relayq.routing.router import Router, UnknownModel
from relayq.routing.state import RoutingState
from relayq.schemas.jobs import JobCreate, JobStatus
from relayq.store.jobs import IdempotencyConflict, get_job
from relayq.store.keys import create_key
from relayq.store.models import Job
from relayq.store.stranded import find_stranded
from tests.fakes.server import closed_port
from tests.in_process import (
    PREFIX,
    Env,
    ScenarioRunner,
    eventually,
    queued_messages,
    unreachable_redis,
)

ROUTING = RoutingConfig.model_validate(
    {
        "providers": {"mock": {"type": "mock"}},
        "routes": {"mock": {"provider": "mock", "model": "mock-1"}},
    }
)


@dataclass
class Api:
    intake: Intake
    outbox: Outbox


@asynccontextmanager
async def api(
    env: Env, *, broker_url: str | None = None, redis: aioredis.Redis | None = None
) -> AsyncIterator[Api]:
    """An intake as the API builds one; ``broker_url`` and ``redis``: others than ``env``'s
    (a broker that is down, a Redis that is gone)."""
    client = redis or env.redis
    settings = Settings(
        database_url=env.database_url,
        redis_url=broker_url or env.redis_url,
        key_prefix=PREFIX,
    )
    enqueuer = Enqueuer(settings=settings)
    outbox = Outbox(database=env.database, enqueuer=enqueuer, clock=env.clock)
    batch = CommandBatch(client)
    state = RoutingState(client, key_prefix=PREFIX, batch=batch)
    intake = Intake(
        settings=settings,
        database=env.database,
        outbox=outbox,
        redis=client,
        router=lambda: Router(ROUTING, state=state),
        state=state,
        cache=ResponseCache(client, key_prefix=PREFIX),
        events=EventLog(client, key_prefix=PREFIX, max_events=100, retention_seconds=60),
        key_limits=KeyLimits(client, key_prefix=PREFIX, batch=batch, clock=env.clock),
        batch=batch,
        clock=env.clock,
    )
    try:
        yield Api(intake=intake, outbox=outbox)
    finally:
        await outbox.aclose()
        enqueuer.close()


def job(text: str = "Hello", **fields: Any) -> JobCreate:
    return JobCreate.model_validate(
        {"model": "mock", "messages": [{"role": "user", "content": text}], **fields}
    )


async def row(env: Env, job_id: str, key_id: str | None = None) -> Job:
    async with env.database.session() as session:
        found = await get_job(session, job_id=job_id, key_id=key_id or env.key_id)
    assert found is not None
    return found


async def kinds_of(env: Env, job_id: str) -> list[str]:
    entries: list[Any] = await env.redis.xrange(RedisKeys(PREFIX).events(job_id)) or []
    return [fields[b"type"].decode() for _, fields in entries]


def queued_ids(env: Env) -> list[str]:
    return sorted(j for _, jobs in queued_messages(env.redis_url, "llm.mock") for j in jobs)


def test_a_submitted_job_is_stored_announced_and_sent_then_marked_sent(
    scenario: ScenarioRunner,
) -> None:
    async def body(env: Env) -> None:
        async with api(env) as built:
            submitted = await built.intake.submit(
                key_id=env.key_id, body=job(completion_window="1h", priority=7)
            )
            assert submitted.created
            assert not submitted.direct
            job_id = submitted.job.id
            stored = await row(env, job_id)
            assert (stored.status, stored.route, stored.provider) == ("queued", "mock", "mock")
            assert stored.upstream_model == "mock-1"
            assert stored.priority == 7
            assert stored.created_at == env.clock()
            assert stored.expires_at == env.clock() + 3600
            assert await kinds_of(env, job_id) == ["queued"]
            assert queued_messages(env.redis_url, "llm.mock") == [(RUN_JOB_TASK, [job_id])]

            async def marked() -> bool:
                return (await row(env, job_id)).enqueued_at is not None

            await eventually(marked)

    scenario(body)


def test_jobs_submitted_together_are_stored_in_a_few_statements_and_sent_in_envelopes(
    scenario: ScenarioRunner,
) -> None:
    inserts: list[str] = []

    def executed(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO JOBS"):
            inserts.append(statement)

    async def body(env: Env) -> None:
        event.listen(env.database.engine.sync_engine, "before_cursor_execute", executed)
        async with api(env) as built:
            submitted = await asyncio.gather(
                *(built.intake.submit(key_id=env.key_id, body=job(f"n{n}")) for n in range(30))
            )
        assert all(s.created for s in submitted)
        ids = sorted(s.job.id for s in submitted)
        for job_id in ids:
            assert (await row(env, job_id)).status == JobStatus.QUEUED.value
        assert len(inserts) <= 3, inserts
        messages = queued_messages(env.redis_url, "llm.mock")
        assert len(messages) <= 3
        assert {task for task, _ in messages} == {RUN_MANY_TASK}
        assert queued_ids(env) == ids

    scenario(body)


def test_an_idempotency_key_repeated_returns_the_first_job_and_sends_nothing_more(
    scenario: ScenarioRunner,
) -> None:
    async def body(env: Env) -> None:
        async with api(env) as built:
            first = await built.intake.submit(key_id=env.key_id, body=job(), idempotency_key="k1")
            again = await built.intake.submit(key_id=env.key_id, body=job(), idempotency_key="k1")
            assert first.created
            assert not again.created
            assert again.job.id == first.job.id
            with pytest.raises(IdempotencyConflict) as conflict:
                await built.intake.submit(
                    key_id=env.key_id, body=job("another"), idempotency_key="k1"
                )
            assert conflict.value.existing == first.job.id
            # Per key: another key's same idempotency key is a job of its own.
            async with env.database.session() as session:
                other = (await create_key(session, name="other")).id
            theirs = await built.intake.submit(key_id=other, body=job(), idempotency_key="k1")
            assert theirs.created
            assert theirs.job.id != first.job.id
        assert queued_ids(env) == sorted([first.job.id, theirs.job.id])
        assert await kinds_of(env, first.job.id) == ["queued"]

    scenario(body)


def test_an_unknown_model_is_refused_stores_nothing_and_counts_against_the_rate(
    scenario: ScenarioRunner,
) -> None:
    limits = KeyLimitValues(requests_per_minute=1, max_concurrent_jobs=None)

    async def body(env: Env) -> None:
        async with api(env) as built:
            with pytest.raises(UnknownModel):
                await built.intake.submit(
                    key_id=env.key_id, body=job(model="no-such-model"), limits=limits
                )
            with pytest.raises(KeyLimited) as refused:
                await built.intake.submit(key_id=env.key_id, body=job(), limits=limits)
            assert refused.value.decision.limit is KeyLimit.REQUESTS_PER_MINUTE
        async with env.database.session() as session:
            assert (
                await find_stranded(session, created_before=1e12, enqueued_before=1e12, limit=9)
                == []
            )
        assert queued_messages(env.redis_url, "llm.mock") == []

    scenario(body)


def test_a_key_over_its_limits_is_refused_until_a_slot_frees_or_the_minute_passes(
    scenario: ScenarioRunner,
) -> None:
    concurrent = KeyLimitValues(requests_per_minute=None, max_concurrent_jobs=1)
    paced = KeyLimitValues(requests_per_minute=2, max_concurrent_jobs=None)

    async def body(env: Env) -> None:
        async with api(env) as built:
            intake = built.intake
            first = await intake.submit(key_id=env.key_id, body=job(), limits=concurrent)
            with pytest.raises(KeyLimited) as refused:
                await intake.submit(key_id=env.key_id, body=job(), limits=concurrent)
            assert refused.value.decision.limit is KeyLimit.MAX_CONCURRENT_JOBS
            assert refused.value.limits == concurrent
            await intake.cancel(key_id=env.key_id, job_id=first.job.id)  # its slot frees
            assert (await intake.submit(key_id=env.key_id, body=job(), limits=concurrent)).created

            async with env.database.session() as session:
                key_id = (await create_key(session, name="paced")).id
            for _ in range(2):
                await intake.submit(key_id=key_id, body=job(), limits=paced)
            with pytest.raises(KeyLimited) as too_fast:
                await intake.submit(key_id=key_id, body=job(), limits=paced)
            assert too_fast.value.decision.limit is KeyLimit.REQUESTS_PER_MINUTE
            retry_after = too_fast.value.decision.retry_after
            assert retry_after is not None
            assert 0 < retry_after <= 60
            env.clock.advance(retry_after)
            assert (await intake.submit(key_id=key_id, body=job(), limits=paced)).created
        # Refused jobs were never stored nor sent: two of the first key, three of the second.
        assert len(queued_ids(env)) == 5

    scenario(body)


def test_with_the_broker_down_a_job_is_kept_unsent_for_the_reconciler(
    scenario: ScenarioRunner,
) -> None:
    async def body(env: Env) -> None:
        down = f"redis://127.0.0.1:{closed_port()}/0"
        async with api(env, broker_url=down) as built:
            submitted = await built.intake.submit(key_id=env.key_id, body=job())
        assert submitted.created
        stored = await row(env, submitted.job.id)
        assert stored.status == JobStatus.QUEUED.value
        assert stored.enqueued_at is None
        assert await kinds_of(env, stored.id) == ["queued"]
        env.clock.advance(60)
        async with env.database.session() as session:
            stranded = await find_stranded(
                session, created_before=env.clock(), enqueued_before=0, limit=10
            )
        assert [s.job_id for s in stranded] == [stored.id]

    scenario(body)


def test_a_sync_job_whose_lane_is_down_is_refused_and_nothing_is_stored(
    scenario: ScenarioRunner,
) -> None:
    """The sync lane's message is the job: if Redis does not take it, the caller hears at
    once, and no row is left for anyone to run."""

    async def body(env: Env) -> None:
        gone = unreachable_redis()
        try:
            async with api(env, redis=gone) as built:
                with pytest.raises(BrokerUnavailable):
                    await built.intake.submit(
                        key_id=env.key_id, body=job(), reply_to=f"{PREFIX}:replies:x"
                    )
        finally:
            await gone.aclose()
        async with env.database.session() as session:
            assert (
                await find_stranded(session, created_before=1e12, enqueued_before=1e12, limit=9)
                == []
            )

    scenario(body)


def test_cancel_ends_a_queued_job_announces_it_and_signals_the_workers(
    scenario: ScenarioRunner,
) -> None:
    async def body(env: Env) -> None:
        listener = env.redis.pubsub()
        await listener.subscribe(RedisKeys(PREFIX).cancel_channel)
        try:
            async with api(env) as built:
                intake = built.intake
                submitted = await intake.submit(key_id=env.key_id, body=job())
                job_id = submitted.job.id
                env.clock.advance(5)
                found, changed = await intake.cancel(key_id=env.key_id, job_id=job_id)
                assert changed
                assert found is not None
                assert found.status == JobStatus.CANCELLED.value
                assert found.finished_at == env.clock()
                again, changed = await intake.cancel(key_id=env.key_id, job_id=job_id)
                assert again is not None
                assert (again.id, changed) == (job_id, False)
                async with env.database.session() as session:
                    other = (await create_key(session, name="other")).id
                assert await intake.cancel(key_id=other, job_id=job_id) == (None, False)
            signals: list[str] = []

            async def signalled() -> bool:
                message = await listener.get_message(ignore_subscribe_messages=True, timeout=0.1)
                if message is not None:
                    signals.append(message["data"].decode())
                return bool(signals)

            await eventually(signalled)
            assert signals == [job_id]
        finally:
            await listener.aclose()
        assert (await row(env, job_id)).status == JobStatus.CANCELLED.value
        assert await kinds_of(env, job_id) == ["queued", "cancelled"]

    scenario(body)
