"""API key repository."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from relayq.budgets.reservations import BudgetLimits
from relayq.ids import new_id
from relayq.keys import generate_key, hash_key
from relayq.schemas.scopes import ALL_SCOPES, DEFAULT_SCOPES, parse_scopes
from relayq.store.models import ApiKey

__all__ = ["CreatedKey", "create_key", "find_active_key", "list_keys", "revoke_key"]


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
    budget: BudgetLimits | None = None,
) -> CreatedKey:
    """Store a new key (or the given ``secret``) and return its secret once.

    ``scopes`` defaults to every scope but ``admin`` (every scope with ``admin``);
    ``budget``: what the key may spend per day or month (None: no budget)."""
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
    )
    if budget is not None:
        row.budget_period = budget.period.value
        row.budget_usd, row.budget_tokens = budget.usd, budget.tokens
    session.add(row)
    await session.commit()
    return CreatedKey(id=row.id, name=name, secret=secret)


async def find_active_key(session: AsyncSession, *, secret: str) -> ApiKey | None:
    """The unrevoked key whose secret is ``secret``, if any."""
    query = select(ApiKey).where(ApiKey.key_hash == hash_key(secret), ApiKey.revoked_at.is_(None))
    return (await session.execute(query)).scalar_one_or_none()


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
