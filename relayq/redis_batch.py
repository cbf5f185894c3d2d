"""Redis commands of many concurrent callers sent together, one pipeline at a time.

Each pipeline costs redis-py a pool checkout, a connection check and a
round trip, whatever it carries: at hundreds of jobs in flight that cost,
paid per event, was the largest single share of a worker's Redis time.
:class:`CommandBatch` queues what callers ask for and sends everything
queued as one pipeline. Nothing waits for a timer: a caller alone is sent at
once; while a pipeline is on the wire, newcomers gather for the next one.
So batches grow with load and a quiet process sees no added latency.

Each caller's commands stay together and in order, and pipelines go out one
after the other, so a caller that awaits each call in turn (a job emitting
its events) keeps its order in Redis.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

__all__ = ["CommandBatch"]


@dataclass
class _Queued:
    add: Callable[[Pipeline], object]
    done: asyncio.Future[list[Any]]


class CommandBatch:
    """Sends queued commands in shared pipelines (not transactions) on one event loop."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self._queued: list[_Queued] = []
        self._sender: asyncio.Task[None] | None = None
        self.pipelines_sent = 0
        """How many pipelines went out (for tests and metrics)."""

    async def execute(self, add: Callable[[Pipeline], object]) -> list[Any]:
        """Queue the commands ``add`` puts on a pipeline; their replies, in order.

        A reply is an exception object where that command failed (the others
        still ran); a failed round trip raises for every caller in it.
        """
        done: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._queued.append(_Queued(add, done))
        sender = self._sender
        if sender is None or sender.done() or sender.get_loop() is not done.get_loop():
            self._sender = asyncio.create_task(self._send())
        return await done

    async def _send(self) -> None:
        while self._queued:
            batch, self._queued = self._queued, []
            try:
                spans = []
                async with self._redis.pipeline(transaction=False) as pipe:
                    for queued in batch:
                        start = len(pipe.command_stack)
                        queued.add(pipe)
                        spans.append((start, len(pipe.command_stack)))
                    replies = await pipe.execute(raise_on_error=False)
                self.pipelines_sent += 1
            except asyncio.CancelledError:  # the loop is stopping: nobody is left waiting
                for queued in [*batch, *self._queued]:
                    queued.done.cancel()
                raise
            except Exception as exc:  # the round trip failed: every caller hears of it
                for queued in batch:
                    if not queued.done.done():
                        queued.done.set_exception(exc)
                continue
            for queued, (start, end) in zip(batch, spans, strict=True):
                if not queued.done.done():  # its caller may have been cancelled
                    queued.done.set_result(replies[start:end])
