"""Redis commands of many concurrent callers sent together, one pipeline at a time.

Each pipeline costs redis-py a pool checkout, a connection check and a
round trip, whatever it carries: at hundreds of jobs in flight that cost,
paid per event, was the largest single share of a worker's Redis time.
:class:`CommandBatch` sends the commands of every caller queued meanwhile as
one pipeline (a :class:`relayq.coalescing.Coalescer`: no timer, so a caller
alone is sent at once). Each caller's commands stay together and in order,
and pipelines go out one after the other, so a caller that awaits each call
in turn (a job emitting its events) keeps its order in Redis.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from relayq.coalescing import Coalescer

__all__ = ["CommandBatch"]

Commands = Callable[[Pipeline], object]
"""Puts one caller's commands on a pipeline."""


class CommandBatch:
    """Sends queued commands in shared pipelines (not transactions) on one event loop."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self._coalescer: Coalescer[Commands, list[Any]] = Coalescer(self._send)

    @property
    def pipelines_sent(self) -> int:
        """How many pipelines went out (for tests and metrics)."""
        return self._coalescer.batches

    async def execute(self, add: Commands) -> list[Any]:
        """Queue the commands ``add`` puts on a pipeline; their replies, in order.

        A reply is an exception object where that command failed (the others
        still ran); a failed round trip raises for every caller in it.
        """
        return await self._coalescer.submit(add)

    async def _send(self, batch: list[Commands]) -> list[list[Any]]:
        spans = []
        async with self._redis.pipeline(transaction=False) as pipe:
            for add in batch:
                start = len(pipe.command_stack)
                add(pipe)
                spans.append((start, len(pipe.command_stack)))
            replies = await pipe.execute(raise_on_error=False)
        return [replies[start:end] for start, end in spans]
