"""The sync lane in-process, on a real Redis: delivery, capacity, acks, retries, recovery.

The lane's consumer runs whatever it is given per message (in the worker,
``Executor.run_direct``); here a recording function stands in, so each test
can hold a job in flight or fail it and watch what the lane does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import redis.asyncio as aioredis

from relayq.direct.lane import (
    LANE_GROUP,
    LaneConsumer,
    LaneSender,
    release_consumer,
)
from relayq.redis.keys import RedisKeys
from relayq.redis.pipeline import CommandBatch
from tests.services import run

_DB = 15  # shared with test_redis_batch, which flushes it first; keys here are prefixed
PREFIX = "relayq-lane-test"
QUEUE = "llm.mock"
STREAM = RedisKeys(PREFIX).lane(QUEUE)


def message(n: int) -> dict[str, Any]:
    return {"job": {"id": f"job_{n}", "provider": "mock", "priority": 9}, "created_at": 0.0}


class Recorder:
    """Runs messages: records each start, holds it until released, fails it if told."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.release = asyncio.Event()
        self.fail_first: set[str] = set()

    async def __call__(self, msg: dict[str, Any]) -> None:
        job_id = msg["job"]["id"]
        self.started.append(job_id)
        if job_id in self.fail_first:
            self.fail_first.discard(job_id)
            raise RuntimeError("the database is unreachable")
        await self.release.wait()


@contextlib.asynccontextmanager
async def lane(redis_server: str) -> AsyncIterator[aioredis.Redis]:
    redis = aioredis.Redis.from_url(f"{redis_server}/{_DB}")
    keys = [key async for key in redis.scan_iter(match=f"{PREFIX}:*")]
    if keys:
        await redis.delete(*keys)
    try:
        yield redis
    finally:
        keys = [key async for key in redis.scan_iter(match=f"{PREFIX}:*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()


def consumer(
    redis: aioredis.Redis,
    recorder: Recorder,
    *,
    name: str = "worker-a",
    capacity: int = 10,
    reclaim_after_seconds: float = 300.0,
    reclaim_every_seconds: float = 30.0,
) -> LaneConsumer:
    return LaneConsumer(
        redis,
        CommandBatch(redis),
        key_prefix=PREFIX,
        consumer=name,
        queues=lambda: [QUEUE],
        run=recorder,
        capacity=capacity,
        reclaim_after_seconds=reclaim_after_seconds,
        reclaim_every_seconds=reclaim_every_seconds,
    )


async def until(predicate: Callable[[], bool], within: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"not so within {within} s")
        await asyncio.sleep(0.01)


async def gone(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` (a consumer's reading: its worker is gone) and see it end: a task
    that reads on after its cancel (relayq/redis/cancelling.py) fails here, at once."""
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=5)
    assert done, "the cancelled consumer is still reading"
    assert task.cancelled()


def bounded(scenario: Coroutine[Any, Any, None], seconds: float = 30.0) -> None:
    """Run ``scenario``, failing after ``seconds``: a wait that hangs fails here, with the
    await it hung in, instead of at pytest's timeout with only the event loop in sight."""

    async def within() -> None:
        async with asyncio.timeout(seconds):
            await scenario

    run(within())


async def entries(redis: aioredis.Redis) -> int:
    return int(await redis.xlen(STREAM))


def test_a_worker_reads_no_more_than_it_has_slots_for_and_acks_what_ended(
    redis_server: str,
) -> None:
    async def scenario() -> None:
        async with lane(redis_server) as redis:
            sender = LaneSender(CommandBatch(redis), key_prefix=PREFIX)
            recorder = Recorder()
            worker = consumer(redis, recorder, capacity=3)
            reading = asyncio.create_task(worker.run_forever())
            for n in range(5):
                await sender.send(QUEUE, message(n))
            await until(lambda: len(recorder.started) == 3)
            await asyncio.sleep(0.2)
            # Two wait in the stream, unread, for this worker's slots or another worker.
            assert recorder.started == ["job_0", "job_1", "job_2"]
            pending = await redis.xpending(STREAM, LANE_GROUP)
            assert pending["pending"] == 3
            recorder.release.set()
            await until(lambda: len(recorder.started) == 5)
            await until(lambda: worker.in_flight == 0)
            await worker.stop(wait_seconds=1)
            await gone(reading)
            # Each entry is acknowledged and deleted once its job's run ended.
            assert (await redis.xpending(STREAM, LANE_GROUP))["pending"] == 0
            assert await entries(redis) == 0

    bounded(scenario())


def test_a_run_that_fails_to_start_is_tried_again_and_its_entry_kept_until_then(
    redis_server: str,
) -> None:
    async def scenario() -> None:
        async with lane(redis_server) as redis:
            recorder = Recorder()
            recorder.release.set()
            recorder.fail_first = {"job_7"}
            worker = consumer(redis, recorder)
            reading = asyncio.create_task(worker.run_forever())
            await LaneSender(CommandBatch(redis), key_prefix=PREFIX).send(QUEUE, message(7))
            await until(lambda: recorder.started == ["job_7"])
            await asyncio.sleep(0.1)
            assert await entries(redis) == 1  # failed once: still there
            # Tried again after its backoff (2 s), then acknowledged.
            await until(lambda: recorder.started == ["job_7", "job_7"], within=5)
            await until(lambda: worker.in_flight == 0)
            assert await entries(redis) == 0
            await gone(reading)

    bounded(scenario())


def test_entries_of_a_lost_worker_are_taken_over_after_the_visibility_timeout(
    redis_server: str,
) -> None:
    async def scenario() -> None:
        async with lane(redis_server) as redis:
            sender = LaneSender(CommandBatch(redis), key_prefix=PREFIX)
            lost = Recorder()
            first = consumer(redis, lost, name="worker-lost")
            reading = asyncio.create_task(first.run_forever())
            for n in range(2):
                await sender.send(QUEUE, message(n))
            await until(lambda: len(lost.started) == 2)
            await gone(reading)  # the worker is gone, its entries pending in the group

            heir = Recorder()
            heir.release.set()
            second = consumer(
                redis,
                heir,
                name="worker-b",
                reclaim_after_seconds=0.3,
                reclaim_every_seconds=0.1,
            )
            taking = asyncio.create_task(second.run_forever())
            await until(lambda: sorted(heir.started) == ["job_0", "job_1"])
            await until(lambda: second.in_flight == 0)
            assert await entries(redis) == 0
            await gone(taking)

    bounded(scenario())


def test_release_consumer_returns_a_dead_workers_messages_and_clears_its_entries(
    redis_server: str,
) -> None:
    async def scenario() -> None:
        async with lane(redis_server) as redis:
            sender = LaneSender(CommandBatch(redis), key_prefix=PREFIX)
            dead = Recorder()
            worker = consumer(redis, dead, name="worker-dead", capacity=2)
            reading = asyncio.create_task(worker.run_forever())
            for n in range(3):
                await sender.send(QUEUE, message(n))
            await until(lambda: len(dead.started) == 2)
            await gone(reading)

            messages = await release_consumer(redis, key_prefix=PREFIX, consumer="worker-dead")
            assert sorted(messages) == ["job_0", "job_1"]
            assert messages["job_0"] == message(0)
            # The third, never read, stays for a live worker; the dead one is gone.
            assert await entries(redis) == 1
            consumers = await redis.xinfo_consumers(STREAM, LANE_GROUP)
            assert [c["name"] for c in consumers] == []

    bounded(scenario())


def test_stopping_ends_the_reads_then_waits_for_the_jobs_in_flight(redis_server: str) -> None:
    async def scenario() -> None:
        async with lane(redis_server) as redis:
            sender = LaneSender(CommandBatch(redis), key_prefix=PREFIX)
            recorder = Recorder()
            worker = consumer(redis, recorder)
            worker.start()
            reading = worker._reader
            assert reading is not None
            await sender.send(QUEUE, message(1))
            await until(lambda: recorder.started == ["job_1"])
            stopping = asyncio.create_task(worker.stop(wait_seconds=5))
            await asyncio.wait_for(reading, timeout=3)  # the read loop ended first
            assert not stopping.done()  # its job is still running
            recorder.release.set()
            await stopping
            await sender.send(QUEUE, message(2))
            await asyncio.sleep(0.2)
            assert recorder.started == ["job_1"]
            assert await entries(redis) == 1

    bounded(scenario())
