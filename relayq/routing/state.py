"""What routing strategies read, shared by every process through Redis.

``in_flight`` counts each deployment's unfinished jobs: the API adds one when
it assigns a job, the worker removes one when the job ends, and the
reconciler periodically replaces the counts with the truth from SQL, so a
crashed process skews them for one reconcile interval at most. ``latency`` is
each deployment's moving average (EWMA) of successful call latencies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from relayq.redis.keys import RedisKeys
from relayq.redis.pipeline import CommandBatch

__all__ = ["EWMA_ALPHA", "DeploymentRef", "RoutingState", "deployment_field"]

EWMA_ALPHA = 0.3
"""Weight of the newest latency sample in the moving average."""

_EWMA = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
local sample = tonumber(ARGV[2])
local alpha = tonumber(ARGV[3])
if old then sample = alpha * sample + (1 - alpha) * tonumber(old) end
redis.call('HSET', KEYS[1], ARGV[1], tostring(sample))
return tostring(sample)
"""


class DeploymentRef(Protocol):
    @property
    def provider(self) -> str: ...

    @property
    def model(self) -> str: ...


def deployment_field(provider: str, model: str) -> str:
    """The hash field naming one deployment."""
    return f"{provider}|{model}"


class RoutingState:
    def __init__(
        self, redis: aioredis.Redis, *, key_prefix: str, batch: CommandBatch | None = None
    ) -> None:
        """``batch``: the pipelines to share (a worker's tick); else the state's own."""
        self._redis = redis
        self._batch = batch or CommandBatch(redis)
        keys = RedisKeys(key_prefix)
        self._in_flight_key = keys.routing_in_flight
        self._latency_key = keys.routing_latency
        self._ewma = redis.register_script(_EWMA)

    async def in_flight(self, deployments: Sequence[DeploymentRef]) -> list[int]:
        fields = [deployment_field(d.provider, d.model) for d in deployments]
        values = await self._redis.hmget(self._in_flight_key, fields)
        return [max(0, int(v)) if v is not None else 0 for v in values]

    async def every_in_flight(self) -> dict[str, int]:
        """Unfinished jobs of every deployment, by ``provider|model`` field."""
        values = await self._redis.hgetall(self._in_flight_key)
        return {(k.decode() if isinstance(k, bytes) else str(k)): int(v) for k, v in values.items()}

    async def latencies(self, deployments: Sequence[DeploymentRef]) -> list[float | None]:
        fields = [deployment_field(d.provider, d.model) for d in deployments]
        values = await self._redis.hmget(self._latency_key, fields)
        return [float(v) if v is not None else None for v in values]

    async def assigned(self, *, provider: str, model: str) -> None:
        """A job was assigned to this deployment: in the next shared pipeline, as the
        API assigns a job per request (a connection checked out each cost more than
        the command)."""
        field = deployment_field(provider, model)
        (reply,) = await self._batch.execute(
            lambda pipe: pipe.hincrby(self._in_flight_key, field, 1)
        )
        if isinstance(reply, Exception):
            raise reply

    async def assigned_many(self, counts: Mapping[tuple[str, str], int]) -> None:
        """Count many new jobs at once (a batch's released requests), in one round trip."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for (provider, model), n in counts.items():
                pipe.hincrby(self._in_flight_key, deployment_field(provider, model), n)
            await pipe.execute()

    async def finished(self, *, provider: str, model: str, latency_ms: float | None) -> None:
        """A job on this deployment ended; a successful call's latency feeds the EWMA."""
        field = deployment_field(provider, model)

        def add(pipe: Pipeline) -> None:
            pipe.hincrby(self._in_flight_key, field, -1)
            if latency_ms is not None:
                self._batch.script(
                    pipe, self._ewma, [self._latency_key], [field, latency_ms, EWMA_ALPHA]
                )

        for reply in await self._batch.execute(add):
            if isinstance(reply, Exception):
                raise reply

    async def reset_in_flight(self, counts: Mapping[tuple[str, str], int]) -> None:
        """Replace every count with ``counts`` (from SQL), atomically."""
        mapping: dict[Any, Any] = {deployment_field(p, m): n for (p, m), n in counts.items()}
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._in_flight_key)
            if mapping:
                pipe.hset(self._in_flight_key, mapping=mapping)
            await pipe.execute()
