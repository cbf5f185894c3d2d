"""Recording, a tick at a time, that the broker took jobs' messages.

After publishing a job's message the API marks the job ``enqueued_at`` so
the reconciler leaves it be. One transaction per job costs a database
session per request; instead the marks gather here and go out in one
``UPDATE … WHERE id IN (…)`` per tick. A mark lost to a crash only means
the reconciler publishes that job again after its grace period, and a
duplicate message is harmless (the claim skips it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from relayq.store import Database
from relayq.store.jobs import mark_enqueued

__all__ = ["EnqueueMarks"]

log = logging.getLogger(__name__)


class EnqueueMarks:
    def __init__(
        self,
        database: Database,
        *,
        interval: float = 0.02,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._database = database
        self._interval = interval
        self._clock = clock
        self._pending: list[str] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def add(self, job_id: str) -> None:
        """Mark ``job_id`` at the next tick (without a running flusher: right away, later)."""
        self._pending.append(job_id)
        self._wake.set()

    def start(self) -> None:
        """Start flushing (call on the running loop)."""
        self._task = asyncio.create_task(self._run())

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()

    async def flush(self) -> None:
        ids, self._pending = self._pending, []
        if not ids:
            return
        try:
            async with self._database.session() as session:
                await mark_enqueued(session, job_ids=ids, now=self._clock())
        except Exception as exc:  # the reconciler publishes these again; nothing is lost
            log.warning("%d jobs not marked enqueued: %s", len(ids), exc)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(self._interval)
            await self.flush()
