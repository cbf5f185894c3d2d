"""Unsent deliveries: pending ones that need a message on the broker (the outbox).

A delivery is planned with its job's outcome and sent afterwards; the
message's confirmation (``enqueued_at``) says whether the broker took it.
The reconciler sends again what was never confirmed, what a dead worker
held, and what is long overdue.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from relayq.schemas.webhooks import DeliveryStatus
from relayq.store.models import (
    WebhookDelivery,
)

__all__ = [
    "Unsent",
    "find_unsent",
    "forget_enqueued",
    "mark_deliveries_enqueued",
    "release_deliveries",
    "release_unclaimed_deliveries",
    "unsent_for",
]

_PENDING = DeliveryStatus.PENDING.value


@dataclass(frozen=True, kw_only=True)
class Unsent:
    """A pending delivery and the token its next message must carry."""

    delivery_id: str
    run: int


async def find_unsent(
    session: AsyncSession, *, now: float, grace: float, republish_after: float, limit: int
) -> list[Unsent]:
    """Pending deliveries that need a message now.

    Those due (for ``grace`` seconds) whose message was never confirmed or
    whose attempt died with its worker (a lapsed lease), and those overdue
    by ``republish_after`` seconds whatever the broker said (a lost message).
    """
    free = WebhookDelivery.leased_until.is_(None) | (WebhookDelivery.leased_until < now)
    due = WebhookDelivery.next_attempt_at <= now - grace
    unconfirmed = WebhookDelivery.enqueued_at.is_(None) | WebhookDelivery.leased_until.is_not(None)
    overdue = WebhookDelivery.next_attempt_at < now - republish_after
    query = (
        select(WebhookDelivery.id, WebhookDelivery.run)
        .where(WebhookDelivery.status == _PENDING, free, (due & unconfirmed) | overdue)
        .order_by(WebhookDelivery.next_attempt_at)
        .limit(limit)
    )
    return [Unsent(delivery_id=r.id, run=r.run) for r in (await session.execute(query)).all()]


async def unsent_for(
    session: AsyncSession, *, job_id: str | None = None, batch_id: str | None = None
) -> list[Unsent]:
    """A job's (or a batch's) pending deliveries that have no confirmed message yet."""
    owner = (
        WebhookDelivery.job_id == job_id
        if job_id is not None
        else WebhookDelivery.batch_id == batch_id
    )
    query = select(WebhookDelivery.id, WebhookDelivery.run).where(
        owner,
        WebhookDelivery.status == _PENDING,
        WebhookDelivery.enqueued_at.is_(None),
        WebhookDelivery.leased_until.is_(None),
    )
    return [Unsent(delivery_id=r.id, run=r.run) for r in (await session.execute(query)).all()]


async def mark_deliveries_enqueued(
    session: AsyncSession, *, sent: Sequence[Unsent], now: float
) -> None:
    """Record that the broker took a message for each of ``sent`` (unless claimed since)."""
    if not sent:
        return
    await session.execute(
        update(WebhookDelivery)
        .where(
            tuple_(WebhookDelivery.id, WebhookDelivery.run).in_(
                [(s.delivery_id, s.run) for s in sent]
            ),
            WebhookDelivery.status == _PENDING,
            WebhookDelivery.leased_until.is_(None) | (WebhookDelivery.leased_until < now),
        )
        .values(enqueued_at=now, leased_until=None)
        .execution_options(synchronize_session=False)
    )
    await session.commit()


async def release_deliveries(session: AsyncSession, *, delivery_ids: Sequence[str]) -> None:
    """A dead worker held these deliveries (taken, perhaps begun): void its message and
    lease, so the reconciler sends each again at its next pass."""
    if not delivery_ids:
        return
    await session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id.in_(list(delivery_ids)), WebhookDelivery.status == _PENDING)
        .values(enqueued_at=None, leased_until=None)
        .execution_options(synchronize_session=False)
    )
    await session.commit()


async def release_unclaimed_deliveries(
    session: AsyncSession, *, delivery_ids: Sequence[str], now: float
) -> list[str]:
    """Messages for these deliveries went with a dead worker before it recorded them as
    taken: void the message of each that no attempt holds (pending, no live lease), so
    the reconciler sends it again at its next pass. One a live worker has claimed since
    keeps its lease. Returns the ids voided."""
    if not delivery_ids:
        return []
    result = await session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id.in_(list(delivery_ids)),
            WebhookDelivery.status == _PENDING,
            WebhookDelivery.enqueued_at.is_not(None),
            WebhookDelivery.leased_until.is_(None) | (WebhookDelivery.leased_until < now),
        )
        .values(enqueued_at=None)
        .returning(WebhookDelivery.id)
        .execution_options(synchronize_session=False)
    )
    voided = list(result.scalars())
    await session.commit()
    return voided


async def forget_enqueued(session: AsyncSession, *, unsent: Unsent) -> None:
    """A message for ``unsent`` was lost: let the reconciler send one when it is due."""
    await session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id == unsent.delivery_id,
            WebhookDelivery.run == unsent.run,
            WebhookDelivery.status == _PENDING,
        )
        .values(enqueued_at=None)
        .execution_options(synchronize_session=False)
    )
    await session.commit()
