"""Heartbeat: worker processes that went silent are found and handed back, once, by a
live one; live ones and the sweeper itself are left alone; each beat publishes what the
process consumes. On a real Redis and database; the stack-level tests (a machine lost
whole, readiness) are in tests/test_recovery.py and tests/test_health.py."""

from __future__ import annotations

import asyncio
import time

import orjson
import redis.asyncio as aioredis

from relayq.config.settings import Settings
from relayq.observability.consumers import Consumer, consumers, last_seen
from relayq.queueing.broker import Enqueuer
from relayq.recovery.handback import Heartbeat
from relayq.redis.keys import RedisKeys
from relayq.store import Database
from tests.services import run

PREFIX = "heartbeat-test"
KEYS = RedisKeys(PREFIX)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def test_a_silent_worker_is_handed_back_once_and_live_ones_are_left_alone(
    redis_server: str, database_url: str
) -> None:
    url = f"{redis_server}/15"

    async def scenario() -> dict[str, object]:
        redis = aioredis.Redis.from_url(url)
        await redis.flushdb()
        database = Database(database_url)
        settings = Settings(redis_url=url)
        enqueuer = Enqueuer(settings=settings)
        queue = settings.queue_for("mock")

        def heartbeat(instance: str) -> Heartbeat:
            return Heartbeat(
                redis,
                database=database,
                enqueuer=enqueuer,
                key_prefix=PREFIX,
                instance=instance,
                # Silent after three beats (3 s): far above a sweep's time (and the
                # reads after it) under the parallel suite's load.
                interval=1.0,
                host="here",
                queues=lambda: [queue],
            )

        sweeper, live, dead = heartbeat("sweeper"), heartbeat("live"), heartbeat("dead")
        try:
            for beat in (sweeper, live, dead):
                await beat.beat()
            # What the dead one took: a sync job's whole message, to be sent again.
            direct = {"job": {"id": "job-of-the-dead", "provider": "mock", "priority": 5}}
            await redis.hset(KEYS.taken("dead"), "job-of-the-dead", orjson.dumps(direct))
            before = await sweeper.sweep()  # every one beat within three beats
            await asyncio.sleep(3.2)  # the dead one misses its beats; the others beat on
            await sweeper.beat()
            await live.beat()
            swept = await sweeper.sweep()
            await sweeper.beat()
            again = await live.sweep()  # a second sweeper finds nothing left to do
            return {
                "before": before,
                "swept": swept,
                "again": again,
                "workers": sorted(_text(k) for k in await redis.hkeys(KEYS.workers)),
                "taken_left": await redis.exists(KEYS.taken("dead")),
                "alive": await redis.exists(KEYS.alive("live")),
                "consumers": sorted(_text(k) for k in await redis.hkeys(KEYS.consumers)),
                # The broker's lists for the mock's queue (one per priority band).
                "queued": [_text(k) for k in await redis.keys(f"{queue}*")],
            }
        finally:
            enqueuer.close()
            await database.aclose()
            await redis.flushdb()
            await redis.aclose()

    seen = run(scenario())
    assert seen["before"] == []
    assert seen["swept"] == ["dead"]
    assert seen["again"] == []
    assert seen["workers"] == ["live", "sweeper"]
    assert seen["taken_left"] == 0
    assert seen["alive"] == 1
    assert seen["consumers"] == ["live", "sweeper"], "a handed-back process consumes nothing"
    assert seen["queued"], "the dead worker's sync job was not sent again"


def test_a_worker_that_stops_cleanly_leaves_the_hash_of_workers(
    redis_server: str, database_url: str
) -> None:
    url = f"{redis_server}/15"

    async def scenario() -> tuple[list[bytes | str], int]:
        redis = aioredis.Redis.from_url(url)
        database = Database(database_url)
        enqueuer = Enqueuer(settings=Settings(redis_url=url))
        beat = Heartbeat(
            redis,
            database=database,
            enqueuer=enqueuer,
            key_prefix=PREFIX,
            instance="leaving",
            interval=5,
            host="here",
            queues=lambda: ["llm.mock"],
        )
        try:
            await beat.beat()
            await beat.stop()
            left = [*await redis.hkeys(KEYS.workers)]
            left += await redis.hkeys(KEYS.consumers)
            return left, await redis.exists(KEYS.alive("leaving"))
        finally:
            enqueuer.close()
            await database.aclose()
            await redis.flushdb()
            await redis.aclose()

    assert run(scenario()) == ([], 0)


def test_each_beat_publishes_the_host_and_the_queues_the_process_consumes_now(
    redis_server: str, database_url: str
) -> None:
    url = f"{redis_server}/15"

    async def scenario() -> tuple[list[Consumer], list[Consumer], float, float]:
        redis = aioredis.Redis.from_url(url)
        await redis.flushdb()
        database = Database(database_url)
        enqueuer = Enqueuer(settings=Settings(redis_url=url))
        queues = ["llm.mock", "webhooks"]

        def heartbeat(instance: str, host: str) -> Heartbeat:
            return Heartbeat(
                redis,
                database=database,
                enqueuer=enqueuer,
                key_prefix=PREFIX,
                instance=instance,
                interval=5,
                host=host,
                queues=lambda: list(queues),
            )

        try:
            before = time.time()
            await heartbeat("one", "host-a").beat()
            await heartbeat("two", "host-b").beat()
            first = await consumers(redis, key_prefix=PREFIX)
            queues.append("llm.openai")  # a provider added by a reload
            await heartbeat("one", "host-a").beat()
            return first, await consumers(redis, key_prefix=PREFIX), before, time.time()
        finally:
            enqueuer.close()
            await database.aclose()
            await redis.flushdb()
            await redis.aclose()

    first, then, before, after = run(scenario())
    by_instance = {c.instance: c for c in first}
    assert set(by_instance) == {"one", "two"}
    assert by_instance["one"].host == "host-a"
    assert by_instance["two"].host == "host-b"
    assert by_instance["one"].queues == ("llm.mock", "webhooks")
    assert all(before <= c.beat_at <= after for c in first)
    one = next(c for c in then if c.instance == "one")
    assert one.queues == ("llm.mock", "webhooks", "llm.openai")


def test_a_queues_last_consumer_beat_is_the_latest_of_those_consuming_it() -> None:
    found = [
        Consumer(instance="a", host="h", queues=("llm.mock", "webhooks"), beat_at=10.0),
        Consumer(instance="b", host="h", queues=("llm.mock",), beat_at=20.0),
        Consumer(instance="c", host="h", queues=("llm.openai",), beat_at=5.0),
    ]
    assert last_seen(found, ["llm.mock", "llm.openai", "llm.idle"]) == {
        "llm.mock": 20.0,
        "llm.openai": 5.0,
        "llm.idle": None,
    }
