"""The shared Redis client: commands packed by hiredis, the same commands on the wire."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import DataError
from redis.utils import HIREDIS_AVAILABLE

from relayq.redis.pool import shared_redis


def test_values_of_every_kind_round_trip_and_a_bool_is_refused(redis_url: str) -> None:
    async def run() -> list[bytes | str | None]:
        client = shared_redis(redis_url)
        try:
            # redis[hiredis] is a dependency: redis-py packs every command with it.
            assert HIREDIS_AVAILABLE
            values: list[str | bytes | int | float] = ["é text", b"\x00\xffbytes", 42, 0.3]
            async with client.pipeline(transaction=False) as pipe:
                for index, value in enumerate(values):
                    pipe.set(f"relayq-pool-test:{index}", value, ex=60)
                await pipe.execute()
            read = await client.mget([f"relayq-pool-test:{i}" for i in range(len(values))])
            with pytest.raises(DataError):
                await client.set("relayq-pool-test:bool", True)
            return list(read)
        finally:
            await client.aclose()

    assert asyncio.run(run()) == ["é text".encode(), b"\x00\xffbytes", b"42", b"0.3"]
