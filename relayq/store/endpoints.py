"""Webhook endpoints and signing secrets: one endpoint per key, secrets that rotate.

A key's first secret is created with its first endpoint (shown once). A
rotation keeps the secrets in force signing for an overlap, so receivers can
change theirs without missing a delivery.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from relayq.ids import new_id
from relayq.keys import new_secret
from relayq.store.models import (
    WebhookEndpoint,
    WebhookSecret,
)

__all__ = [
    "delete_endpoint",
    "ensure_secrets",
    "get_endpoint",
    "get_endpoint_by_id",
    "put_endpoint",
    "rotate_secret",
    "secrets_in_force",
]


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
