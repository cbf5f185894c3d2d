"""Publishing delivery messages, and sending those the outbox holds.

A message carries a delivery's id and its ``run`` (the fencing token): a
message whose token is no longer the delivery's is stale and dropped, so
duplicates (a republish beside a late original) die out instead of
multiplying. Publishing is best effort everywhere; a delivery whose
message was not confirmed is sent by the reconciler once it is due.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from relayq.config.settings import Settings
from relayq.events.log import JobEvent
from relayq.queueing.broker import Enqueuer
from relayq.queueing.outbox import Outbox
from relayq.store import Database
from relayq.store.unsent import Unsent, mark_deliveries_enqueued, unsent_for

__all__ = [
    "DELIVER_WEBHOOK_TASK",
    "DeliveryPublisher",
    "WebhookEnqueuer",
    "mark_sent",
    "publish_unsent",
]

log = logging.getLogger(__name__)

DELIVER_WEBHOOK_TASK = "relayq.deliver_webhook"


class WebhookEnqueuer(Enqueuer):
    """An :class:`Enqueuer` that publishes delivery messages too. Blocking, like it."""

    def __init__(self, *, settings: Settings) -> None:
        super().__init__(settings=settings)
        self._webhook_queue = settings.webhooks.queue

    def send_deliveries(self, unsent: Sequence[Unsent], countdown: float = 0.0) -> list[Unsent]:
        """Publish a message for each of ``unsent``; those the broker took.

        Stops at the first refusal (the broker is down: the rest would fail too).
        """
        sent: list[Unsent] = []
        for item in unsent:
            try:
                self.send_delivery(delivery_id=item.delivery_id, run=item.run, countdown=countdown)
            except Exception as exc:  # the broker's errors are many; all mean "not now"
                log.warning("webhook delivery %s not published: %s", item.delivery_id, exc)
                break
            sent.append(item)
        return sent

    def send_delivery(self, *, delivery_id: str, run: int, countdown: float = 0.0) -> None:
        """Publish one delivery's message, due in ``countdown`` seconds; raises on failure."""
        self._celery.send_task(
            DELIVER_WEBHOOK_TASK,
            args=[delivery_id, run],
            queue=self._webhook_queue,
            countdown=countdown if countdown > 0 else None,
            retry=False,
        )


async def publish_unsent(
    outbox: Outbox, *, enqueuer: WebhookEnqueuer, unsent: Sequence[Unsent]
) -> tuple[int, int]:
    """Publish a message for each of ``unsent`` and mark those the broker took.

    Stops at the first failure (the broker is down). Returns how many were
    sent and how many were not.
    """
    sent = await outbox.send(
        unsent, publish=enqueuer.send_deliveries, mark=mark_sent, what="webhook deliveries"
    )
    return len(sent), len(unsent) - len(sent)


async def mark_sent(session: AsyncSession, sent: list[Unsent], now: float) -> None:
    """The :data:`relayq.queueing.outbox.Mark` of delivery messages."""
    await mark_deliveries_enqueued(session, sent=sent, now=now)


class DeliveryPublisher:
    """An event listener that publishes a job's deliveries as soon as it ends.

    Deliveries are planned with the outcome; without this listener they go
    out when the reconciler next finds them, a grace period later.
    """

    def __init__(self, *, database: Database, enqueuer: WebhookEnqueuer) -> None:
        self._database = database
        self._enqueuer = enqueuer
        self._outbox = Outbox(database=database, enqueuer=enqueuer)

    async def on_job_event(self, event: JobEvent) -> None:
        if not event.terminal:
            return
        if event.deliveries is not None:
            # Known from the outcome's transaction: new deliveries carry run 0.
            unsent = [Unsent(delivery_id=d, run=0) for d in event.deliveries]
        else:
            async with self._database.session() as session:
                unsent = await unsent_for(session, job_id=event.job_id)
        if unsent:
            await publish_unsent(self._outbox, enqueuer=self._enqueuer, unsent=unsent)
