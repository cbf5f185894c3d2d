"""Publish a message, then record that the broker took it: the one place that does both.

Every message relayq publishes stands for a row in SQL (a job, a webhook
delivery, a batch to validate) that the reconciler publishes again after a
grace period unless the row is marked as taken by the broker. The steps are
always the same: publish (Celery's publisher blocks, so from a thread, all the
messages of a call in one hop), then mark the rows whose messages the broker
took, in one statement. A publish the broker refuses leaves its rows
unmarked, and the reconciler sends them later; a mark lost to an error only
means a duplicate message later, which the job's claim (or the delivery's
run) makes harmless. So neither step raises: the caller learns what was
taken.

The intake's jobs go through :meth:`Outbox.publish_job`: the jobs of the
requests of one tick share a thread hop (a :class:`~relayq.coalescing.Coalescer`:
no timer, a job alone goes at once), and their marks a statement written in
the background, after a short pause (:data:`_MARK_PAUSE_SECONDS`), not before
the answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from relayq.coalescing import Coalescer
from relayq.queueing.broker import NO_DETAILS, Enqueuer, JobDetails
from relayq.store import Database
from relayq.store.batches import mark_batch_enqueued
from relayq.store.jobs import mark_enqueued

__all__ = ["JobMessage", "Outbox"]

log = logging.getLogger(__name__)

_MARK_PAUSE_SECONDS = 0.02
"""Before each intake mark's ``UPDATE``. Marks are off the request path; under load,
written as fast as they came, they took SQLite's write lock from the worker's
claims and outcomes several times a tick. Paused, those that come meanwhile go in
the next statement."""

T = TypeVar("T")

Publish = Callable[[Sequence[T]], list[T]]
"""Publishes messages for items (blocking); the items the broker took, in order.
It stops at the first refusal: the broker is down, the rest would fail too."""
Mark = Callable[[AsyncSession, list[T], float], Awaitable[None]]
"""Records in one statement that the broker took messages for these items, at a time."""


@dataclass(frozen=True, slots=True)
class JobMessage:
    """A run-job message: ``countdown`` seconds from now, if given (a retry's backoff)."""

    job_id: str
    provider: str
    priority: int
    countdown: float | None = None
    details: JobDetails = NO_DETAILS
    """What the message says of the job beside its id, where known (its request, model,
    key and trace: relayq/queueing/broker.py)."""


class Outbox:
    """Publishes relayq's messages and marks their rows: for the API, workers and reconciler."""

    def __init__(
        self,
        *,
        database: Database,
        enqueuer: Enqueuer,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._database = database
        self._enqueuer = enqueuer
        self._clock = clock
        self._publishes: Coalescer[JobMessage, bool] = Coalescer(self._publish_tick)
        self._marks: Coalescer[str, None] = Coalescer(self._mark_tick)
        self._marking: set[asyncio.Future[None]] = set()

    @property
    def hops(self) -> int:
        """Thread hops :meth:`publish_job` made (for tests and metrics)."""
        return self._publishes.batches

    async def send(
        self, items: Sequence[T], *, publish: Publish[T], mark: Mark[T] | None, what: str
    ) -> list[T]:
        """Publish ``items`` in one thread hop, then ``mark`` those the broker took.

        ``what`` names the items in the log. Returns the items taken; raises nothing
        the broker or the database raise (see the module's docstring).
        """
        if not items:
            return []
        try:
            taken = await asyncio.to_thread(publish, items)
        except Exception as exc:  # the broker's errors are many; all mean "not now"
            log.warning("%d %s not published yet: %s", len(items), what, exc)
            return []
        if len(taken) < len(items):
            log.warning("%d of %d %s not published yet", len(items) - len(taken), len(items), what)
        if taken and mark is not None:
            try:
                async with self._database.session() as session:
                    await mark(session, taken, self._clock())
            except Exception as exc:
                log.warning("%d %s published but not marked: %s", len(taken), what, exc)
        return taken

    async def send_jobs(self, messages: Sequence[JobMessage]) -> list[str]:
        """Publish run-job messages and mark the jobs the broker took; their ids."""
        taken = await self.send(messages, publish=self._publish_jobs, mark=_mark_jobs, what="jobs")
        return [message.job_id for message in taken]

    async def send_job(self, message: JobMessage) -> bool:
        """One run-job message (see :meth:`send_jobs`); whether the broker took it."""
        return bool(await self.send_jobs([message]))

    async def send_batch(self, batch_id: str) -> bool:
        """The message that validates a batch's input; whether the broker took it."""

        def publish(ids: Sequence[str]) -> list[str]:
            self._enqueuer.send_batch(batch_id=batch_id)
            return list(ids)

        async def mark(session: AsyncSession, ids: list[str], now: float) -> None:
            await mark_batch_enqueued(session, batch_id=batch_id, now=now)

        return bool(await self.send([batch_id], publish=publish, mark=mark, what="batches"))

    async def publish_job(self, message: JobMessage) -> bool:
        """The intake's way: publish with the jobs of this tick, mark in the background.

        Whether the broker took it; its mark is written beside the next requests.
        """
        taken = await self._publishes.submit(message)
        if taken:
            marking = asyncio.ensure_future(self._marks.submit(message.job_id))
            self._marking.add(marking)
            marking.add_done_callback(self._marking.discard)
        return taken

    async def aclose(self) -> None:
        """Wait for the marks still on their way."""
        if self._marking:
            await asyncio.gather(*self._marking, return_exceptions=True)

    def _publish_jobs(self, messages: Sequence[JobMessage]) -> list[JobMessage]:
        """Due now: in envelopes by queue and priority. With a countdown: one at a time."""
        now = [(m.job_id, m.provider, m.priority) for m in messages if not m.countdown]
        details = {m.job_id: m.details for m in messages if not m.countdown}
        taken_ids = set(self._enqueuer.send_many(now, details=details)) if now else set()
        if len(taken_ids) < len(now):
            return [m for m in messages if m.job_id in taken_ids]
        for message in messages:
            if not message.countdown:
                continue
            try:
                self._enqueuer.send(
                    job_id=message.job_id,
                    provider=message.provider,
                    priority=message.priority,
                    countdown=message.countdown,
                    details=message.details,
                )
            except Exception as exc:
                log.warning("job %s not published yet: %s", message.job_id, exc)
                break
            taken_ids.add(message.job_id)
        return [m for m in messages if m.job_id in taken_ids]

    async def _publish_tick(self, messages: list[JobMessage]) -> list[bool]:
        taken = {
            m.job_id
            for m in await self.send(messages, publish=self._publish_jobs, mark=None, what="jobs")
        }
        return [message.job_id in taken for message in messages]

    async def _mark_tick(self, job_ids: list[str]) -> list[None]:
        await asyncio.sleep(_MARK_PAUSE_SECONDS)
        try:
            async with self._database.session() as session:
                await mark_enqueued(session, job_ids=job_ids, now=self._clock())
        except Exception as exc:  # the reconciler publishes these again; nothing is lost
            log.warning("%d jobs published but not marked: %s", len(job_ids), exc)
        return [None] * len(job_ids)


async def _mark_jobs(session: AsyncSession, messages: list[JobMessage], now: float) -> None:
    await mark_enqueued(session, job_ids=[m.job_id for m in messages], now=now)
