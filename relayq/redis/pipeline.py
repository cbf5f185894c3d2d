"""Redis commands of many concurrent callers sent together, one pipeline at a time.

Each pipeline costs redis-py a pool checkout, a connection check and a
round trip, whatever it carries: at hundreds of jobs in flight that cost,
paid per event, was the largest single share of a worker's Redis time.
:class:`CommandBatch` sends the commands of every caller queued meanwhile as
one pipeline (a :class:`relayq.coalescing.Coalescer`: no timer, so a caller
alone is sent at once). Each caller's commands stay together and in order,
and pipelines go out one after the other, so a caller that awaits each call
in turn (a job emitting its events) keeps its order in Redis.

Lua scripts (the breaker's, the limiters', the key counts') go in the same
pipelines as ``EVALSHA`` (:meth:`CommandBatch.script`). A server that lost
its script cache (a restart, a flush) answers ``NOSCRIPT`` without running
the script; those calls alone are sent again as ``EVAL``, which also loads
the script for the next time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from relayq.coalescing import Coalescer

__all__ = ["CommandBatch"]

Commands = Callable[[Pipeline], object]
"""Puts one caller's commands on a pipeline."""


class CommandBatch:
    """Sends queued commands in shared pipelines (not transactions) on one event loop."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self._coalescer: Coalescer[Commands, list[Any]] = Coalescer(self._send)
        # The scripts queued on the pipeline being built, by command index.
        self._scripts: dict[int, tuple[AsyncScript, tuple[Any, ...]]] = {}

    def script(self, pipe: Pipeline, script: AsyncScript, keys: list[Any], args: list[Any]) -> None:
        """Queue ``script`` on ``pipe`` (within an ``add``): its reply is the script's."""
        call = (len(keys), *keys, *args)
        self._scripts[len(pipe.command_stack)] = (script, call)
        pipe.execute_command("EVALSHA", script.sha, *call)

    async def run_script(self, script: AsyncScript, keys: list[Any], args: list[Any]) -> Any:
        """Run one script call in the next pipeline; its reply (raises its error)."""
        (reply,) = await self.execute(lambda pipe: self.script(pipe, script, keys, args))
        if isinstance(reply, Exception):
            raise reply
        return reply

    @property
    def pipelines_sent(self) -> int:
        """How many pipelines went out (for tests and metrics)."""
        return self._coalescer.batches

    def execute_soon(self, add: Commands) -> asyncio.Future[list[Any]]:
        """:meth:`execute`, queued at once (in call order): the future of its replies."""
        return self._coalescer.submit_nowait(add)

    async def execute(self, add: Commands) -> list[Any]:
        """Queue the commands ``add`` puts on a pipeline; their replies, in order.

        A reply is an exception object where that command failed (the others
        still ran); a failed round trip raises for every caller in it.
        """
        return await self._coalescer.submit(add)

    async def _send(self, batch: list[Commands]) -> list[list[Any]]:
        spans = []
        self._scripts = {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for add in batch:
                start = len(pipe.command_stack)
                add(pipe)
                spans.append((start, len(pipe.command_stack)))
            scripts, self._scripts = self._scripts, {}
            replies = await pipe.execute(raise_on_error=False)
        unknown = [i for i in scripts if isinstance(replies[i], NoScriptError)]
        if unknown:
            async with self._redis.pipeline(transaction=False) as again:
                for index in unknown:
                    script, call = scripts[index]
                    again.execute_command("EVAL", script.script, *call)
                for index, reply in zip(
                    unknown, await again.execute(raise_on_error=False), strict=True
                ):
                    replies[index] = reply
        return [replies[start:end] for start, end in spans]
