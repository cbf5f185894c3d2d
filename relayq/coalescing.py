"""Work of many concurrent callers done together: one batch at a time, no timer.

Some per-call costs do not grow with the work: a thread hop, a pool checkout
and a round trip per Redis pipeline. Under load, paid per job, they cost
more than the jobs' own work. A :class:`Coalescer` queues what callers ask
for and hands everything queued to ``handle`` at once. A caller alone is
handled at once; while a batch is being handled, newcomers gather for the
next. So batches grow with load and a quiet process sees no added latency.

Batches are handled one after the other, in arrival order, so a caller that
awaits each call in turn keeps its order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["Coalescer"]

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class _Queued(Generic[T, R]):
    item: T
    done: asyncio.Future[R]


class Coalescer(Generic[T, R]):
    """Calls ``handle(items)`` (one result per item, in order) for the items queued meanwhile.

    If ``handle`` raises, every caller of that batch gets the exception.
    Use it on one event loop.
    """

    def __init__(self, handle: Callable[[list[T]], Awaitable[list[R]]]) -> None:
        self._handle = handle
        self._queued: list[_Queued[T, R]] = []
        self._sender: asyncio.Task[None] | None = None
        self.batches = 0
        """How many batches were handled (for tests and metrics)."""

    async def submit(self, item: T) -> R:
        """Queue ``item``; its result once its batch is handled."""
        return await self.submit_nowait(item)

    def submit_nowait(self, item: T) -> asyncio.Future[R]:
        """Queue ``item`` now (in call order); the future of its result."""
        done: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queued.append(_Queued(item, done))
        sender = self._sender
        if sender is None or sender.done() or sender.get_loop() is not done.get_loop():
            self._sender = asyncio.create_task(self._send())
        return done

    async def _send(self) -> None:
        while self._queued:
            batch, self._queued = self._queued, []
            try:
                results = await self._handle([queued.item for queued in batch])
                self.batches += 1
            except asyncio.CancelledError:  # the loop is stopping: nobody is left waiting
                for queued in [*batch, *self._queued]:
                    queued.done.cancel()
                raise
            except Exception as exc:
                for queued in batch:
                    if not queued.done.done():
                        queued.done.set_exception(exc)
                continue
            for queued, result in zip(batch, results, strict=True):
                if not queued.done.done():  # its caller may have been cancelled
                    queued.done.set_result(result)
