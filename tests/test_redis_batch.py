"""Commands of concurrent callers share pipelines; each caller gets its own replies, in order."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError

from relayq.redis.pipeline import CommandBatch
from tests.services import free_port

_DB = 15  # a logical database of its own


@pytest.fixture
def redis_db_url(redis_server: str) -> Iterator[str]:
    url = f"{redis_server}/{_DB}"
    yield url

    async def flush() -> None:
        client = aioredis.Redis.from_url(url)
        await client.flushdb()
        await client.aclose()

    asyncio.run(flush())


def test_concurrent_callers_share_pipelines_and_get_their_own_replies(redis_db_url: str) -> None:
    async def scenario() -> None:
        client = aioredis.Redis.from_url(redis_db_url)
        batch = CommandBatch(client)
        try:
            alone = await batch.execute(lambda pipe: pipe.set("alone", "1"))
            assert alone == [True]
            assert batch.pipelines_sent == 1

            async def caller(index: int) -> list[object]:
                def add(pipe: Pipeline) -> None:
                    pipe.incrby(f"n:{index}", index)
                    pipe.get(f"n:{index}")

                return await batch.execute(add)

            replies = await asyncio.gather(*(caller(i) for i in range(200)))
            assert replies == [[i, str(i).encode()] for i in range(200)]
            # 200 callers at once: far fewer round trips than callers.
            assert batch.pipelines_sent - 1 < 20
        finally:
            await client.aclose()

    asyncio.run(scenario())


def test_one_callers_commands_keep_their_order(redis_db_url: str) -> None:
    async def scenario() -> None:
        client = aioredis.Redis.from_url(redis_db_url)
        batch = CommandBatch(client)

        async def writer(name: str) -> None:
            for n in range(50):

                def add(pipe: Pipeline, n: int = n) -> None:
                    pipe.xadd(name, {"n": n})

                await batch.execute(add)

        try:
            await asyncio.gather(*(writer(f"stream:{w}") for w in range(10)))
            for w in range(10):
                entries = await client.xrange(f"stream:{w}")
                numbers = [int((fields or {})[b"n"]) for _, fields in entries or []]
                assert numbers == list(range(50))
        finally:
            await client.aclose()

    asyncio.run(scenario())


def test_a_failing_command_fails_alone_and_a_lost_server_fails_everyone(
    redis_db_url: str,
) -> None:
    async def scenario() -> None:
        client = aioredis.Redis.from_url(redis_db_url)
        batch = CommandBatch(client)
        try:
            await client.set("text", "not a number")
            bad, good = await asyncio.gather(
                batch.execute(lambda pipe: pipe.incr("text")),
                batch.execute(lambda pipe: pipe.incr("counter")),
            )
            assert isinstance(bad[0], Exception)
            assert good == [1]
        finally:
            await client.aclose()

        nowhere = aioredis.Redis(port=free_port(), socket_connect_timeout=1)
        lost = CommandBatch(nowhere)
        try:
            results = await asyncio.gather(
                *(lost.execute(lambda pipe: pipe.ping()) for _ in range(3)),
                return_exceptions=True,
            )
            assert all(isinstance(r, RedisConnectionError) for r in results), results
        finally:
            await nowhere.aclose()

    asyncio.run(scenario())


def test_scripts_share_the_pipeline_and_survive_a_lost_script_cache(redis_db_url: str) -> None:
    """EVALSHA in the tick's pipeline; after SCRIPT FLUSH (a restarted server) the calls
    that met NOSCRIPT run again as EVAL, and the others are not run twice."""

    async def scenario() -> None:
        client = aioredis.Redis.from_url(redis_db_url)
        batch = CommandBatch(client)
        incr = client.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
        try:
            await client.script_load(incr.script)
            assert await batch.run_script(incr, ["counted"], [2]) == 2
            await client.script_flush()

            def add(pipe: Pipeline) -> None:
                pipe.incr("plain")
                batch.script(pipe, incr, ["counted"], [3])

            assert await batch.execute(add) == [1, 5]
            # Loaded again by the EVAL: the next EVALSHA finds it.
            assert await client.script_exists(incr.sha) == [True]
            assert await batch.run_script(incr, ["counted"], [1]) == 6
            assert await client.get("plain") == b"1"
        finally:
            await client.aclose()

    asyncio.run(scenario())
