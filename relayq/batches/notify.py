"""Telling a batch's webhook how it ended (``batch.completed`` and the rest).

A delivery is planned in the transaction that writes the batch's final
status, and published right after the commit; one the broker did not take
is sent by the reconciler, as for jobs.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from relayq.queueing.outbox import Outbox
from relayq.schemas.webhooks import WebhookEvent
from relayq.store import Database
from relayq.store.batches import batch_totals, get_batch_by_id
from relayq.store.planning import add_deliveries, targets
from relayq.store.unsent import unsent_for
from relayq.store.views import batch_object
from relayq.webhooks.publishing import WebhookEnqueuer, publish_unsent

__all__ = ["BatchNotifier"]


class BatchNotifier:
    def __init__(self, *, database: Database, enqueuer: WebhookEnqueuer | None) -> None:
        self._database = database
        self._enqueuer = enqueuer
        self._outbox = (
            Outbox(database=database, enqueuer=enqueuer) if enqueuer is not None else None
        )

    async def plan(self, session: AsyncSession, *, batch_id: str, now: float) -> list[str]:
        """Add the deliveries of the batch's (final) status to the session; the caller commits."""
        batch = await get_batch_by_id(session, batch_id=batch_id)
        if batch is None:
            return []
        try:
            event = WebhookEvent(f"batch.{batch.status}")
        except ValueError:
            return []
        found = await targets(session, key_id=batch.key_id, webhook=batch.webhook, event=event)
        if not found:
            return []
        totals = (await batch_totals(session, batches=[batch]))[batch.id]
        data = batch_object(batch, totals).model_dump(mode="json")
        return add_deliveries(
            session, found, event=event, data=data, key_id=batch.key_id, batch_id=batch.id, now=now
        )

    async def publish(self, batch_id: str) -> None:
        """Send the batch's planned deliveries now (else the reconciler does, later)."""
        if self._enqueuer is None or self._outbox is None:
            return
        async with self._database.session() as session:
            unsent = await unsent_for(session, batch_id=batch_id)
        if unsent:
            await publish_unsent(self._outbox, enqueuer=self._enqueuer, unsent=unsent)
