"""Run-job messages published from the event loop, many per thread hop.

Celery's publisher blocks, so the API publishes from a thread. A thread hop
per job (and up to a handful of publishes at once on the default executor)
cost the API a hand-off of the GIL each way per request. :class:`JobPublisher`
queues the jobs of concurrent requests and publishes all that are queued in
one hop: alone, a job goes at once; while a hop is under way, newcomers
gather for the next one. Each caller hears whether its own message was taken.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from relayq.queueing import Enqueuer

__all__ = ["JobPublisher"]

log = logging.getLogger(__name__)


@dataclass
class _Queued:
    job: tuple[str, str, int]
    taken: asyncio.Future[bool]


class JobPublisher:
    """Publishes ``(job_id, provider, priority)`` messages through ``enqueuer``, in batches."""

    def __init__(self, enqueuer: Enqueuer) -> None:
        self._enqueuer = enqueuer
        self._queued: list[_Queued] = []
        self._sender: asyncio.Task[None] | None = None
        self.hops = 0
        """Thread hops made (for tests and metrics)."""

    async def publish(self, *, job_id: str, provider: str, priority: int) -> bool:
        """Publish one job's message; whether the broker took it (False: the reconciler will)."""
        taken: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queued.append(_Queued((job_id, provider, priority), taken))
        sender = self._sender
        if sender is None or sender.done() or sender.get_loop() is not taken.get_loop():
            self._sender = asyncio.create_task(self._send())
        return await taken

    async def _send(self) -> None:
        while self._queued:
            batch, self._queued = self._queued, []
            try:
                sent = set(
                    await asyncio.to_thread(self._enqueuer.send_many, [q.job for q in batch])
                )
                self.hops += 1
            except asyncio.CancelledError:
                for queued in [*batch, *self._queued]:
                    queued.taken.cancel()
                raise
            except Exception as exc:  # the reconciler publishes whatever was not taken
                log.warning("%d jobs stored but not enqueued yet: %s", len(batch), exc)
                sent = set()
            for queued in batch:
                if not queued.taken.done():
                    queued.taken.set_result(queued.job[0] in sent)
