"""Run-job messages published from the event loop, many per thread hop.

Celery's publisher blocks, so the API publishes from a thread. A thread hop
per job (and up to a handful of publishes at once on the default executor)
cost the API a hand-off of the GIL each way per request. :class:`JobPublisher`
publishes the jobs of every request queued meanwhile in one hop (a
:class:`relayq.coalescing.Coalescer`: no timer, so a job alone goes at once).
Each caller hears whether its own message was taken.
"""

from __future__ import annotations

import asyncio
import logging

from relayq.coalescing import Coalescer
from relayq.queueing import Enqueuer

__all__ = ["JobPublisher"]

log = logging.getLogger(__name__)

Message = tuple[str, str, int]
"""``(job_id, provider, priority)``."""


class JobPublisher:
    """Publishes run-job messages through ``enqueuer``, in batches, from the event loop."""

    def __init__(self, enqueuer: Enqueuer) -> None:
        self._enqueuer = enqueuer
        self._coalescer: Coalescer[Message, bool] = Coalescer(self._send)

    @property
    def hops(self) -> int:
        """Thread hops made (for tests and metrics)."""
        return self._coalescer.batches

    async def publish(self, *, job_id: str, provider: str, priority: int) -> bool:
        """Publish one job's message; whether the broker took it (False: the reconciler will)."""
        return await self._coalescer.submit((job_id, provider, priority))

    async def _send(self, batch: list[Message]) -> list[bool]:
        # send_many logs a failed publish and stops there; what it did not send
        # stays unmarked, and the reconciler publishes it.
        try:
            sent = set(await asyncio.to_thread(self._enqueuer.send_many, batch))
        except Exception:
            log.exception("%d jobs stored but not enqueued yet", len(batch))
            sent = set()
        return [message[0] in sent for message in batch]
