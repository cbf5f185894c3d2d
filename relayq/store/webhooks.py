"""Webhook repository: the key's endpoint and secrets, deliveries and their attempts.

Deliveries change state as jobs do: by conditional statements. A claim takes
a pending, due delivery whose ``run`` still equals the message's (the
fencing token) and no live lease holds; an outcome is written only while
that claim is the latest. So however many messages a delivery gets (a
republish, a redelivery), it is attempted by one worker at a time and its
success is recorded once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, or_, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from relayq.ids import new_id
from relayq.keys import new_secret
from relayq.schemas.webhooks import DeliveryStatus
from relayq.store.models import (
    Attempt,
    Job,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookSecret,
)

__all__ = [
    "AttemptRecord",
    "DeliveryClaim",
    "DeliveryOutcome",
    "NotDue",
    "Unsent",
    "add_delivery",
    "claim_delivery",
    "delete_endpoint",
    "end_delivery",
    "ensure_secrets",
    "find_unsent",
    "forget_enqueued",
    "get_endpoint",
    "get_endpoint_by_id",
    "job_snapshot",
    "list_deliveries",
    "mark_deliveries_enqueued",
    "put_endpoint",
    "record_attempt",
    "release_deliveries",
    "release_unclaimed_deliveries",
    "rotate_secret",
    "secrets_in_force",
    "unsent_for",
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
class Unsent:
    """A pending delivery and the token its next message must carry."""

    delivery_id: str
    run: int


@dataclass(frozen=True, kw_only=True)
class AttemptRecord:
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


# Endpoints and secrets.


async def get_endpoint(session: AsyncSession, *, key_id: str) -> WebhookEndpoint | None:
    query = select(WebhookEndpoint).where(WebhookEndpoint.key_id == key_id)
    return (await session.execute(query)).scalar_one_or_none()


async def get_endpoint_by_id(session: AsyncSession, *, endpoint_id: str) -> WebhookEndpoint | None:
    return await session.get(WebhookEndpoint, endpoint_id, populate_existing=True)


async def put_endpoint(
    session: AsyncSession, *, key_id: str, url: str, events: Sequence[str], now: float
) -> tuple[WebhookEndpoint, str | None]:
    """Set the key's endpoint (enabled again) and commit.

    Returns the endpoint and the key's new signing secret when the key had
    none yet (shown to the caller once), else None.
    """
    for _ in range(2):
        endpoint = await get_endpoint(session, key_id=key_id)
        if endpoint is None:
            endpoint = WebhookEndpoint(id=new_id("whep", now=now), key_id=key_id, created_at=now)
            session.add(endpoint)
        endpoint.url = url
        endpoint.events = list(events)
        endpoint.enabled = True
        endpoint.disabled_reason = None
        endpoint.disabled_at = None
        endpoint.updated_at = now
        created = await _ensure_secret(session, key_id=key_id, now=now)
        try:
            await session.commit()
        except IntegrityError:
            # A concurrent PUT created the key's endpoint first: update that one.
            await session.rollback()
            continue
        return endpoint, created
    raise RuntimeError(f"could not store the webhook endpoint of {key_id}")


async def delete_endpoint(session: AsyncSession, *, key_id: str) -> str | None:
    """Remove the key's endpoint; its pending deliveries end at their next claim."""
    result = await session.execute(
        delete(WebhookEndpoint)
        .where(WebhookEndpoint.key_id == key_id)
        .returning(WebhookEndpoint.id)
    )
    deleted = result.scalar_one_or_none()
    await session.commit()
    return deleted


async def secrets_in_force(session: AsyncSession, *, key_id: str, now: float) -> list[str]:
    """The key's secrets that sign now, newest first."""
    query = (
        select(WebhookSecret.secret)
        .where(
            WebhookSecret.key_id == key_id,
            or_(WebhookSecret.expires_at.is_(None), WebhookSecret.expires_at > now),
        )
        .order_by(WebhookSecret.id.desc())
    )
    return list((await session.execute(query)).scalars())


async def _ensure_secret(session: AsyncSession, *, key_id: str, now: float) -> str | None:
    """Create the key's first secret if no secret is in force (caller commits)."""
    if await secrets_in_force(session, key_id=key_id, now=now):
        return None
    secret = new_secret()
    session.add(WebhookSecret(key_id=key_id, secret=secret, created_at=now))
    return secret


async def rotate_secret(
    session: AsyncSession, *, key_id: str, now: float, overlap: float
) -> tuple[WebhookSecret, float | None]:
    """A new current secret; the ones in force sign ``overlap`` seconds more. Commits.

    Returns the new secret and when the previous ones stop signing (None
    when there were none). Secrets that ended are deleted.
    """
    ends = now + overlap
    previous = await secrets_in_force(session, key_id=key_id, now=now)
    await session.execute(
        update(WebhookSecret)
        .where(
            WebhookSecret.key_id == key_id,
            or_(WebhookSecret.expires_at.is_(None), WebhookSecret.expires_at > ends),
        )
        .values(expires_at=ends)
        .execution_options(synchronize_session=False)
    )
    await session.execute(
        delete(WebhookSecret).where(WebhookSecret.key_id == key_id, WebhookSecret.expires_at <= now)
    )
    row = WebhookSecret(key_id=key_id, secret=new_secret(), created_at=now)
    session.add(row)
    await session.commit()
    return row, (ends if previous else None)


async def ensure_secrets(session: AsyncSession, *, key_id: str, now: float) -> list[str]:
    """The key's secrets in force, creating (and committing) a first one if it has none."""
    found = await secrets_in_force(session, key_id=key_id, now=now)
    if found:
        return found
    created = await _ensure_secret(session, key_id=key_id, now=now)
    await session.commit()
    return [created] if created else await secrets_in_force(session, key_id=key_id, now=now)


# Planning (in the transaction that writes the job's outcome).


async def job_snapshot(session: AsyncSession, *, job_id: str) -> tuple[Job, list[Attempt]] | None:
    """The job as this transaction sees it (fresh, not from the identity map) and its attempts."""
    query = select(Job).where(Job.id == job_id).execution_options(populate_existing=True)
    job = (await session.execute(query)).scalar_one_or_none()
    if job is None:
        return None
    attempts = select(Attempt).where(Attempt.job_id == job_id).order_by(Attempt.id)
    return job, list((await session.execute(attempts)).scalars())


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


# Listing.


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


# Attempts.


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
    attempt: AttemptRecord,
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


# The outbox.


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
