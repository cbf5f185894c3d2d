"""Planning deliveries: which endpoints hear of a job's outcome, and with what body.

:func:`plan_deliveries` runs inside the transaction that writes the outcome,
so an outcome and its deliveries are stored together or not at all: a
worker that dies right after the commit loses nothing, as the reconciler
publishes the deliveries' messages (an outbox, like the job pipeline's).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from relayq.schemas.webhooks import WebhookEvent, WebhookSpec
from relayq.store.deliveries import add_delivery
from relayq.store.endpoints import get_endpoint
from relayq.store.models import Attempt, Job
from relayq.store.views import job_public

__all__ = [
    "add_deliveries",
    "event_for",
    "job_snapshot",
    "plan_deliveries",
    "targets",
    "webhook_payload",
]


def event_for(status: str) -> WebhookEvent | None:
    """The webhook event of a job status; None for a status that sends none."""
    try:
        return WebhookEvent(f"job.{status}")
    except ValueError:
        return None


def _timestamp(now: float) -> str:
    return (
        datetime.fromtimestamp(now, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    )


def webhook_payload(event: WebhookEvent, data: dict[str, Any], *, now: float) -> dict[str, Any]:
    """Standard Webhooks' body: ``{type, timestamp, data}``."""
    return {"type": event.value, "timestamp": _timestamp(now), "data": data}


async def targets(
    session: AsyncSession, *, key_id: str, webhook: dict[str, Any] | None, event: WebhookEvent
) -> list[tuple[str, str | None]]:
    """``(url, endpoint_id)`` to send ``event`` to: the job's (batch's) webhook, else the key's."""
    if webhook is not None:
        spec = WebhookSpec.model_validate(webhook)
        return [(spec.url, None)] if event in spec.events else []
    endpoint = await get_endpoint(session, key_id=key_id)
    if endpoint is None or not endpoint.enabled or event.value not in endpoint.events:
        return []
    return [(endpoint.url, endpoint.id)]


async def job_snapshot(session: AsyncSession, *, job_id: str) -> tuple[Job, list[Attempt]] | None:
    """The job as this transaction sees it (fresh, not from the identity map) and its attempts."""
    query = select(Job).where(Job.id == job_id).execution_options(populate_existing=True)
    job = (await session.execute(query)).scalar_one_or_none()
    if job is None:
        return None
    attempts = select(Attempt).where(Attempt.job_id == job_id).order_by(Attempt.id)
    return job, list((await session.execute(attempts)).scalars())


async def plan_deliveries(session: AsyncSession, *, job_id: str, now: float) -> list[str]:
    """Add the deliveries of the job's current (terminal) status to the session.

    Call it in the transaction that wrote the status, before its commit.
    The body is fixed now: ``data`` is the job as ``GET /v1/jobs/{id}``
    returns it at this moment, and every attempt sends the same bytes.
    Returns the new deliveries' ids.
    """
    snapshot = await job_snapshot(session, job_id=job_id)
    if snapshot is None:
        return []
    job, attempts = snapshot
    event = event_for(job.status)
    if event is None or job.batch_id is not None:  # a batch's requests: the batch tells
        return []
    found = await targets(session, key_id=job.key_id, webhook=job.webhook, event=event)
    if not found:
        return []
    data = job_public(job, attempts).model_dump(mode="json")
    return add_deliveries(
        session, found, event=event, data=data, key_id=job.key_id, job_id=job.id, now=now
    )


def add_deliveries(
    session: AsyncSession,
    found: list[tuple[str, str | None]],
    *,
    event: WebhookEvent,
    data: dict[str, Any],
    key_id: str,
    now: float,
    job_id: str | None = None,
    batch_id: str | None = None,
) -> list[str]:
    """Add one delivery of ``event`` (body fixed now) per target in ``found``; their ids."""
    payload = webhook_payload(event, data, now=now)
    return [
        add_delivery(
            session,
            key_id=key_id,
            job_id=job_id,
            batch_id=batch_id,
            event=event.value,
            url=url,
            endpoint_id=endpoint_id,
            payload=payload,
            now=now,
        )
        for url, endpoint_id in found
    ]
