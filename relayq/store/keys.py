"""API key repository: creating, finding, changing and revoking keys.

A key is found by the SHA-256 of its secret, or of its previous secret while
a rotation's overlap lasts (:func:`key_state` says whether a key found may
call). Functions that change a key change its row in the caller's session and
leave the commit to the caller, so an admin action commits its audit entry
with it (:mod:`relayq.store.key_admin`); ``create_key`` and ``revoke_key``
commit unless told not to.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from relayq.budgets.reservations import BudgetLimits
from relayq.ids import new_id
from relayq.keys import generate_key, hash_key
from relayq.schemas.keys import KeyUpdate
from relayq.schemas.scopes import ALL_SCOPES, DEFAULT_SCOPES, parse_scopes
from relayq.schemas.spans import span_seconds
from relayq.store.models import ApiKey

__all__ = [
    "JWT_SOURCE",
    "LAST_USED_EVERY_SECONDS",
    "CreatedKey",
    "KeyState",
    "create_key",
    "find_active_key",
    "find_key",
    "get_key",
    "key_state",
    "list_keys",
    "page_keys",
    "revoke_key",
    "rotate_key",
    "tenant_key",
    "touch_keys",
    "update_key",
]

JWT_SOURCE = "jwt"
"""``api_keys.source`` of a JWT tenant's row."""
LAST_USED_EVERY_SECONDS = 60.0
"""``last_used_at`` is written at most this often per key."""


@dataclass(frozen=True)
class CreatedKey:
    id: str
    name: str
    secret: str
    row: ApiKey


class KeyState(StrEnum):
    """Whether a secret may call, and if not, why not."""

    ACTIVE = "active"
    UNKNOWN = "unknown"
    REVOKED = "revoked"
    EXPIRED = "expired"
    ROTATED = "rotated"
    """The old secret of a rotated key, after its overlap."""


def key_state(key: ApiKey | None, *, digest: str, now: float) -> KeyState:
    """The state of ``key``, found by the secret whose hash is ``digest``, at ``now``.

    Cheap enough for every request: the API's key cache keeps a found row for a few
    seconds, and its expiry and overlap are checked against the clock each time.
    """
    if key is None:
        return KeyState.UNKNOWN
    if key.revoked_at is not None:
        return KeyState.REVOKED
    if key.expires_at is not None and key.expires_at <= now:
        return KeyState.EXPIRED
    if key.key_hash != digest and (
        key.previous_hash != digest
        or key.previous_expires_at is None
        or key.previous_expires_at <= now
    ):
        return KeyState.ROTATED
    return KeyState.ACTIVE


async def create_key(
    session: AsyncSession,
    *,
    name: str,
    secret: str | None = None,
    admin: bool = False,
    scopes: Iterable[str] | None = None,
    models: Sequence[str] | None = None,
    requests_per_minute: int | None = None,
    max_concurrent_jobs: int | None = None,
    tokens_per_minute: int | None = None,
    budget_period: str | None = None,
    budget_usd: float | None = None,
    budget_tokens: int | None = None,
    expires_at: float | None = None,
    now: float | None = None,
    commit: bool = True,
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
        created_at=time.time() if now is None else now,
        scopes=list(scopes),
        models=None if models is None else list(models),
        requests_per_minute=requests_per_minute,
        max_concurrent_jobs=max_concurrent_jobs,
        tokens_per_minute=tokens_per_minute,
        budget_period=budget_period,
        budget_usd=budget_usd,
        budget_tokens=budget_tokens,
        expires_at=expires_at,
        source="key",
    )
    if budget is not None:
        row.budget_period = budget.period.value
        row.budget_usd, row.budget_tokens = budget.usd, budget.tokens
    session.add(row)
    if commit:
        await session.commit()
    else:
        await session.flush()
    return CreatedKey(id=row.id, name=name, secret=secret, row=row)


async def find_key(session: AsyncSession, *, digest: str) -> ApiKey | None:
    """The key whose secret, or previous secret, hashes to ``digest``, in whatever state.

    A JWT tenant's row is never found here: its ``key_hash`` is a digest of a name
    anyone may know, not of a secret."""
    query = select(ApiKey).where(
        or_(ApiKey.key_hash == digest, ApiKey.previous_hash == digest),
        ApiKey.source != JWT_SOURCE,
    )
    rows = list((await session.execute(query)).scalars())
    # The current secret first: a previous hash never equals another key's current one,
    # short of a SHA-256 collision, but the order makes the answer certain.
    rows.sort(key=lambda row: row.key_hash != digest)
    return rows[0] if rows else None


async def find_active_key(
    session: AsyncSession, *, secret: str, now: float | None = None
) -> ApiKey | None:
    """The key ``secret`` may call as now: not revoked, not expired, and either its
    current secret or its previous one within the rotation's overlap."""
    digest = hash_key(secret)
    key = await find_key(session, digest=digest)
    state = key_state(key, digest=digest, now=time.time() if now is None else now)
    return key if state is KeyState.ACTIVE else None


async def get_key(session: AsyncSession, *, key_id: str, for_update: bool = False) -> ApiKey | None:
    """One key by id; ``for_update`` locks its row (PostgreSQL) until the commit."""
    query = select(ApiKey).where(ApiKey.id == key_id)
    if for_update:
        query = query.with_for_update()
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


async def page_keys(
    session: AsyncSession, *, limit: int, after: str | None = None, revoked: bool | None = None
) -> tuple[list[ApiKey], bool]:
    """A page of keys, newest first, after the cursor ``after``; ``revoked`` True: only
    revoked keys, False: only unrevoked ones. And whether more follow."""
    query = select(ApiKey).order_by(ApiKey.id.desc()).limit(limit + 1)
    if after is not None:
        query = query.where(ApiKey.id < after)
    if revoked is True:
        query = query.where(ApiKey.revoked_at.is_not(None))
    elif revoked is False:
        query = query.where(ApiKey.revoked_at.is_(None))
    rows = list((await session.execute(query)).scalars())
    return rows[:limit], len(rows) > limit


_UPDATABLE = (
    "name",
    "scopes",
    "models",
    "requests_per_minute",
    "max_concurrent_jobs",
    "tokens_per_minute",
    "budget_period",
    "budget_usd",
    "budget_tokens",
    "expires_at",
)


def update_key(row: ApiKey, changes: KeyUpdate, *, now: float) -> None:
    """Set the fields ``changes`` gives on ``row`` (``expires_in`` as an ``expires_at``
    from ``now``); the caller commits."""
    given = changes.model_fields_set
    for field in _UPDATABLE:
        if field in given:
            value = getattr(changes, field)
            setattr(row, field, value.value if isinstance(value, StrEnum) else value)
    if changes.expires_in is not None:
        row.expires_at = now + span_seconds(changes.expires_in)


def rotate_key(row: ApiKey, *, overlap_seconds: float, now: float) -> str:
    """Give ``row`` a new secret and return it; the old one keeps working until
    ``now + overlap_seconds`` (with 0, it stops at once). A secret kept from an earlier
    rotation stops at once. The caller commits."""
    secret = generate_key()
    if overlap_seconds > 0:
        row.previous_hash = row.key_hash
        row.previous_expires_at = now + overlap_seconds
    else:
        row.previous_hash = None
        row.previous_expires_at = None
    row.key_hash = hash_key(secret)
    row.hint = secret[-4:]
    return secret


async def revoke_key(
    session: AsyncSession, *, key_id: str, now: float | None = None, commit: bool = True
) -> bool:
    """Revoke a key; False if no unrevoked key has that id."""
    result = await session.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=time.time() if now is None else now)
    )
    if commit:
        await session.commit()
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def touch_keys(session: AsyncSession, *, key_ids: Sequence[str], now: float) -> None:
    """Set ``last_used_at`` of ``key_ids`` to ``now`` where it is older than a minute (or
    unset), in one statement: every API process writes each key at most once a minute,
    and this keeps several processes from writing it more often. Commits."""
    await session.execute(
        update(ApiKey)
        .where(
            ApiKey.id.in_(key_ids),
            or_(
                ApiKey.last_used_at.is_(None),
                ApiKey.last_used_at < now - LAST_USED_EVERY_SECONDS,
            ),
        )
        .values(last_used_at=now)
        .execution_options(synchronize_session=False)
    )
    await session.commit()
