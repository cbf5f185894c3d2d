"""Admin actions on keys, each written with its audit entry in one transaction.

The admin API (``/v1/admin/keys``) and the ``relayq keys`` command act through
these: a change and the entry that records it (who, what, when, the key
before and after, never a secret or a hash) commit together or not at all,
so the log holds every change made and none that was not. A refused action
writes nothing, and neither does one that changes nothing (revoking a
revoked key). An admin may not lock itself out: revoking its own key, taking
the ``admin`` scope from it or expiring it now are refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from relayq.schemas.keys import KeyCreate, KeyCreated, KeyObject, KeySource, KeyUpdate
from relayq.schemas.scopes import DEFAULT_SCOPES, Scope
from relayq.schemas.spans import span_seconds
from relayq.store.audit import AuditRecord, record_audit
from relayq.store.keys import create_key, get_key, rotate_key, update_key
from relayq.store.models import ApiKey
from relayq.store.views import key_object

__all__ = [
    "Actor",
    "KeyChangeRefused",
    "KeyNotFound",
    "KeyRevoked",
    "create",
    "revoke",
    "rotate",
    "update",
]


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts: a key id (``cli`` for the command line) and the request, if any."""

    key_id: str
    request_id: str | None = None


class KeyNotFound(LookupError):
    def __init__(self, key_id: str) -> None:
        super().__init__(key_id)
        self.key_id = key_id


class KeyChangeRefused(ValueError):
    """A change that would leave the key wrong, or lock its caller out (a 400)."""

    def __init__(self, message: str, *, code: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param


class KeyRevoked(KeyChangeRefused):
    """A change to a revoked key (a 409: revoking is final)."""


def _public(row: ApiKey) -> dict[str, Any]:
    return key_object(row).model_dump(mode="json")


def _check_fields(body: KeyCreate | KeyUpdate, row: ApiKey | None) -> None:
    """The checks that span fields (and, for an update, the key as it would be)."""
    if body.expires_at is not None and body.expires_in is not None:
        raise KeyChangeRefused(
            "Give expires_at or expires_in, not both.", code="invalid_value", param="expires_in"
        )
    given = body.model_fields_set

    def after(field: str) -> object:
        return getattr(body, field) if field in given or row is None else getattr(row, field)

    if after("budget_period") is None:
        for amount in ("budget_usd", "budget_tokens"):
            if after(amount) is not None:
                raise KeyChangeRefused(
                    f"A budget needs its period: give budget_period ('day' or 'month') "
                    f"with {amount}.",
                    code="invalid_value",
                    param="budget_period",
                )


def _record(
    session: AsyncSession,
    actor: Actor,
    action: str,
    target: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    now: float,
) -> None:
    record = AuditRecord(
        actor_key_id=actor.key_id,
        action=action,
        target=target,
        before=before,
        after=after,
        request_id=actor.request_id,
    )
    record_audit(session, record, now=now)


async def create(session: AsyncSession, *, actor: Actor, body: KeyCreate, now: float) -> KeyCreated:
    """A new key, with its secret (shown this once); audited as ``key.create``."""
    _check_fields(body, None)
    expires_at = body.expires_at
    if body.expires_in is not None:
        expires_at = now + span_seconds(body.expires_in)
    created = await create_key(
        session,
        name=body.name,
        scopes=DEFAULT_SCOPES if body.scopes is None else body.scopes,
        models=body.models,
        requests_per_minute=body.requests_per_minute,
        max_concurrent_jobs=body.max_concurrent_jobs,
        tokens_per_minute=body.tokens_per_minute,
        budget_period=None if body.budget_period is None else body.budget_period.value,
        budget_usd=body.budget_usd,
        budget_tokens=body.budget_tokens,
        expires_at=expires_at,
        now=now,
        commit=False,
    )
    after = _public(created.row)
    _record(session, actor, "key.create", created.id, None, after, now)
    await session.commit()
    return KeyCreated.model_validate({**after, "secret": created.secret})


async def _changeable(session: AsyncSession, key_id: str) -> ApiKey:
    row = await get_key(session, key_id=key_id, for_update=True)
    if row is None:
        raise KeyNotFound(key_id)
    if row.revoked_at is not None:
        raise KeyRevoked(
            f"Key '{key_id}' is revoked; a revoked key cannot be changed or rotated. "
            "Create a new key instead.",
            code="key_revoked",
        )
    return row


def _check_self_update(actor: Actor, body: KeyUpdate, now: float) -> None:
    """Refuse what would lock the acting admin out of the admin API."""
    given = body.model_fields_set
    if "scopes" in given and body.scopes is not None and Scope.ADMIN.value not in body.scopes:
        raise KeyChangeRefused(
            f"You cannot remove the 'admin' scope from your own key ({actor.key_id}): you "
            "would lose the admin API. Ask another admin, or create another admin key first.",
            code="self_lockout",
            param="scopes",
        )
    expires_at = body.expires_at
    if body.expires_in is not None:
        expires_at = now + span_seconds(body.expires_in)
    if expires_at is not None and expires_at <= now:
        raise KeyChangeRefused(
            f"You cannot expire your own key ({actor.key_id}) now: you would lose the "
            "admin API. Ask another admin.",
            code="self_lockout",
            param="expires_at",
        )


async def update(
    session: AsyncSession, *, actor: Actor, key_id: str, body: KeyUpdate, now: float
) -> KeyObject:
    """The key with the fields ``body`` gives changed; audited as ``key.update``."""
    given = body.model_fields_set
    for required in ("name", "scopes"):
        if required in given and getattr(body, required) is None:
            raise KeyChangeRefused(
                f"{required} cannot be null.", code="invalid_value", param=required
            )
    row = await _changeable(session, key_id)
    _check_fields(body, row)
    if key_id == actor.key_id:
        _check_self_update(actor, body, now)
    before = _public(row)
    update_key(row, body, now=now)
    after = _public(row)
    if after != before:
        _record(session, actor, "key.update", key_id, before, after, now)
    await session.commit()
    return key_object(row)


async def rotate(
    session: AsyncSession, *, actor: Actor, key_id: str, overlap_seconds: float, now: float
) -> KeyCreated:
    """The key with a new secret (shown this once); the old one works for
    ``overlap_seconds`` more. Audited as ``key.rotate``."""
    row = await _changeable(session, key_id)
    if row.source == KeySource.JWT.value:
        raise KeyChangeRefused(
            f"Key '{key_id}' is the tenant of JWT bearer tokens: it has no secret to "
            "rotate (rotate the signing key of the tokens' issuer instead).",
            code="key_not_rotatable",
        )
    before = _public(row)
    secret = rotate_key(row, overlap_seconds=overlap_seconds, now=now)
    after = _public(row)
    _record(session, actor, "key.rotate", key_id, before, after, now)
    await session.commit()
    return KeyCreated.model_validate({**after, "secret": secret})


async def revoke(session: AsyncSession, *, actor: Actor, key_id: str, now: float) -> KeyObject:
    """The key, revoked (at once, for good); revoking a revoked key changes nothing.
    Audited as ``key.revoke``."""
    if key_id == actor.key_id:
        raise KeyChangeRefused(
            f"You cannot revoke your own key ({key_id}): you would lose the admin API. "
            "Ask another admin, or revoke it with another admin key.",
            code="self_lockout",
            param="key_id",
        )
    row = await get_key(session, key_id=key_id, for_update=True)
    if row is None:
        raise KeyNotFound(key_id)
    if row.revoked_at is None:
        before = _public(row)
        row.revoked_at = now
        _record(session, actor, "key.revoke", key_id, before, _public(row), now)
        await session.commit()
    return key_object(row)
