"""API key repository."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from relayq.ids import new_id
from relayq.keys import generate_key, hash_key
from relayq.schemas.scopes import ALL_SCOPES, DEFAULT_SCOPES, parse_scopes
from relayq.store.models import ApiKey

__all__ = [
    "JWT_SOURCE",
    "CreatedKey",
    "create_key",
    "find_active_key",
    "list_keys",
    "revoke_key",
    "tenant_key",
]

JWT_SOURCE = "jwt"
"""``api_keys.source`` of a JWT tenant's row."""


@dataclass(frozen=True)
class CreatedKey:
    id: str
    name: str
    secret: str


async def create_key(
    session: AsyncSession,
    *,
    name: str,
    secret: str | None = None,
    admin: bool = False,
    scopes: Iterable[str] | None = None,
    requests_per_minute: int | None = None,
    max_concurrent_jobs: int | None = None,
    tokens_per_minute: int | None = None,
) -> CreatedKey:
    """Store a new key (or the given ``secret``) and return its secret once.

    ``scopes`` defaults to every scope but ``admin`` (every scope with ``admin``)."""
    secret = secret or generate_key()
    if scopes is None:
        scopes = ALL_SCOPES if admin else DEFAULT_SCOPES
    else:
        scopes = parse_scopes(list(scopes))
    row = ApiKey(
        id=new_id("key"),
        name=name,
        key_hash=hash_key(secret),
        hint=secret[-4:],
        created_at=time.time(),
        scopes=list(scopes),
        requests_per_minute=requests_per_minute,
        max_concurrent_jobs=max_concurrent_jobs,
        tokens_per_minute=tokens_per_minute,
    )
    session.add(row)
    await session.commit()
    return CreatedKey(id=row.id, name=name, secret=secret)


async def find_active_key(session: AsyncSession, *, secret: str) -> ApiKey | None:
    """The unrevoked key whose secret is ``secret``, if any.

    A JWT tenant's row is never found here: its ``key_hash`` is a digest of a name
    anyone may know, not of a secret."""
    query = select(ApiKey).where(
        ApiKey.key_hash == hash_key(secret),
        ApiKey.revoked_at.is_(None),
        ApiKey.source != JWT_SOURCE,
    )
    return (await session.execute(query)).scalar_one_or_none()


async def tenant_key(session: AsyncSession, *, subject: str, name: str) -> ApiKey:
    """The row of the JWT tenant ``subject`` (``issuer|tenant``), made on its first call.

    Every job, batch and file row names the key that owns it, so a tenant is a key row
    (``source='jwt'``) with no secret and no scopes of its own: a token's claims give
    those. Two first calls at once both insert; the one that loses reads the winner's
    row. A revoked row is returned as it is: the caller refuses it.
    """
    query = select(ApiKey).where(ApiKey.subject == subject)
    found = (await session.execute(query)).scalar_one_or_none()
    if found is not None:
        return found
    row = ApiKey(
        id=new_id("key"),
        name=name[:200],
        key_hash=hash_key(f"{JWT_SOURCE}:{subject}"),
        hint=name[-4:],
        created_at=time.time(),
        scopes=[],
        source=JWT_SOURCE,
        subject=subject,
    )
    session.add(row)
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        return (await session.execute(query)).scalar_one()
    return row


async def list_keys(session: AsyncSession) -> list[ApiKey]:
    return list((await session.execute(select(ApiKey).order_by(ApiKey.id))).scalars())


async def revoke_key(session: AsyncSession, *, key_id: str) -> bool:
    """Revoke a key; False if no active key has that id."""
    result = await session.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=time.time())
    )
    await session.commit()
    return bool(result.rowcount)  # type: ignore[attr-defined]
