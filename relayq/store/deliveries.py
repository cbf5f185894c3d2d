"""Webhook deliveries: added, listed, claimed per attempt, and ended.

Deliveries change state as jobs do: by conditional statements. A claim takes
a pending, due delivery whose ``run`` still equals the message's (the
fencing token) and no live lease holds; an outcome is written only while
that claim is the latest. So however many messages a delivery gets (a
republish, a redelivery), it is attempted by one worker at a time and its
success is recorded once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from relayq.ids import new_id
from relayq.schemas.webhooks import DeliveryStatus
from relayq.store.models import (
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)

__all__ = [
    "DeliveryAttempt",
    "DeliveryClaim",
    "DeliveryOutcome",
    "NotDue",
    "add_delivery",
    "claim_delivery",
    "end_delivery",
    "list_deliveries",
    "record_attempt",
]

_PENDING = DeliveryStatus.PENDING.value


@dataclass(frozen=True, kw_only=True)
class DeliveryClaim:
    """A worker's hold on one attempt of a delivery."""

    id: str
    key_id: str
    endpoint_id: str | None
    url: str
    payload: dict[str, Any]
    run: int
    """This attempt's number, and the token its outcome is written under."""


@dataclass(frozen=True, kw_only=True)
class NotDue:
    """The delivery's next attempt is ``wait`` seconds away: the message came early."""

    wait: float


@dataclass(frozen=True, kw_only=True)
class DeliveryAttempt:
    """One attempt to deliver: the request made and what it met."""

    url: str
    status_code: int | None
    error: str | None
    latency_ms: float
    started_at: float


@dataclass(frozen=True, kw_only=True)
class DeliveryOutcome:
    status: DeliveryStatus
    next_attempt_at: float | None = None
    """When to try again (status pending)."""
    reason: str | None = None
    disable_endpoint: str | None = None
    """Disable the key's endpoint with this reason (it answered 410 Gone)."""


def add_delivery(
    session: AsyncSession,
    *,
    key_id: str,
    job_id: str | None = None,
    batch_id: str | None = None,
    event: str,
    url: str,
    endpoint_id: str | None,
    payload: dict[str, Any],
    now: float,
) -> str:
    """Add a pending delivery, due now, to the session (the caller commits)."""
    row = WebhookDelivery(
        id=new_id("msg", now=now),
        job_id=job_id,
        batch_id=batch_id,
        key_id=key_id,
        endpoint_id=endpoint_id,
        event=event,
        url=url,
        payload=payload,
        status=_PENDING,
        run=0,
        next_attempt_at=now,
        created_at=now,
    )
    session.add(row)
    return row.id


async def list_deliveries(
    session: AsyncSession, *, job_id: str, limit: int, after: str | None = None
) -> tuple[list[WebhookDelivery], dict[str, list[WebhookAttempt]], bool]:
    """A page of the job's deliveries, oldest first, with each one's attempts."""
    query = select(WebhookDelivery).where(WebhookDelivery.job_id == job_id)
    if after is not None:
        query = query.where(WebhookDelivery.id > after)
    query = query.order_by(WebhookDelivery.id).limit(limit + 1)
    rows = list((await session.execute(query)).scalars())
    page = rows[:limit]
    attempts: dict[str, list[WebhookAttempt]] = {row.id: [] for row in page}
    if page:
        found = (
            select(WebhookAttempt)
            .where(WebhookAttempt.delivery_id.in_(list(attempts)))
            .order_by(WebhookAttempt.id)
        )
        for attempt in (await session.execute(found)).scalars():
            attempts[attempt.delivery_id].append(attempt)
    return page, attempts, len(rows) > limit


async def claim_delivery(
    session: AsyncSession, *, delivery_id: str, run: int, now: float, lease_seconds: float
) -> DeliveryClaim | NotDue | None:
    """Take the next attempt of a delivery for a message carrying token ``run``.

    Returns the claim; :class:`NotDue` when the message came before the
    attempt is due (send it again with a countdown); None when the message
    is stale (the delivery ended, moved on, or another worker holds it).
    """
    claimable = (
        (WebhookDelivery.id == delivery_id)
        & (WebhookDelivery.status == _PENDING)
        & (WebhookDelivery.run == run)
        & (WebhookDelivery.next_attempt_at <= now)
        & (WebhookDelivery.leased_until.is_(None) | (WebhookDelivery.leased_until < now))
    )
    result = await session.execute(
        update(WebhookDelivery)
        .where(claimable)
        .values(run=WebhookDelivery.run + 1, leased_until=now + lease_seconds)
        .returning(
            WebhookDelivery.key_id,
            WebhookDelivery.endpoint_id,
            WebhookDelivery.url,
            WebhookDelivery.payload,
            WebhookDelivery.run,
        )
        .execution_options(synchronize_session=False)
    )
    row = result.one_or_none()
    await session.commit()
    if row is not None:
        return DeliveryClaim(
            id=delivery_id,
            key_id=row.key_id,
            endpoint_id=row.endpoint_id,
            url=row.url,
            payload=row.payload,
            run=row.run,
        )
    query = select(WebhookDelivery.next_attempt_at).where(
        WebhookDelivery.id == delivery_id,
        WebhookDelivery.status == _PENDING,
        WebhookDelivery.run == run,
        WebhookDelivery.next_attempt_at > now,
    )
    due = (await session.execute(query)).scalar_one_or_none()
    return None if due is None else NotDue(wait=due - now)


def _held(claim: DeliveryClaim) -> Any:
    return (
        (WebhookDelivery.id == claim.id)
        & (WebhookDelivery.run == claim.run)
        & (WebhookDelivery.status == _PENDING)
    )


async def record_attempt(
    session: AsyncSession,
    *,
    claim: DeliveryClaim,
    attempt: DeliveryAttempt,
    outcome: DeliveryOutcome,
    now: float,
) -> bool:
    """Record an attempt and, if ``claim`` is still the latest, the delivery's new state.

    One transaction, so an outcome is never without its attempt. Returns
    whether the outcome was written.
    """
    session.add(
        WebhookAttempt(
            delivery_id=claim.id,
            number=claim.run,
            url=attempt.url,
            status_code=attempt.status_code,
            error=attempt.error[:1000] if attempt.error else None,
            latency_ms=attempt.latency_ms,
            created_at=attempt.started_at,
        )
    )
    ended = outcome.status is not DeliveryStatus.PENDING
    result = await session.execute(
        update(WebhookDelivery)
        .where(_held(claim))
        .values(
            status=outcome.status.value,
            reason=outcome.reason,
            next_attempt_at=outcome.next_attempt_at,
            enqueued_at=None,
            leased_until=None,
            finished_at=now if ended else None,
        )
        .execution_options(synchronize_session=False)
    )
    written = bool(result.rowcount)  # type: ignore[attr-defined]
    if written and outcome.disable_endpoint is not None and claim.endpoint_id is not None:
        await session.execute(
            update(WebhookEndpoint)
            .where(WebhookEndpoint.id == claim.endpoint_id, WebhookEndpoint.enabled.is_(True))
            .values(enabled=False, disabled_reason=outcome.disable_endpoint, disabled_at=now)
            .execution_options(synchronize_session=False)
        )
    await session.commit()
    return written


async def end_delivery(
    session: AsyncSession, *, claim: DeliveryClaim, reason: str, now: float
) -> None:
    """Give up a delivery without an attempt (its endpoint was deleted or disabled)."""
    await session.execute(
        update(WebhookDelivery)
        .where(_held(claim))
        .values(
            status=DeliveryStatus.FAILED.value,
            reason=reason,
            next_attempt_at=None,
            leased_until=None,
            finished_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    await session.commit()
