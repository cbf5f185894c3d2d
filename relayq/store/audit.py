"""The audit log: every admin action, who did it, when, and the object before and after."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from relayq.store.models import AuditEntry

__all__ = ["AuditRecord", "list_audit", "record_audit"]


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """What to log of one admin action."""

    actor_key_id: str
    action: str
    """``key.create``, ``key.update``, ``key.rotate``, ``key.revoke``, ``breaker.reset``,
    ``deployment.drain``, ``deployment.resume``..."""
    target: str
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    request_id: str | None = None


def record_audit(session: AsyncSession, record: AuditRecord, *, now: float | None = None) -> None:
    """Add ``record`` to ``session``: it is written with the change it describes, in the
    caller's transaction, so the log holds every change made and no change not made."""
    session.add(
        AuditEntry(
            at=time.time() if now is None else now,
            actor_key_id=record.actor_key_id,
            action=record.action,
            target=record.target,
            before=record.before,
            after=record.after,
            request_id=record.request_id,
        )
    )


async def list_audit(
    session: AsyncSession,
    *,
    limit: int,
    after: int | None = None,
    target: str | None = None,
    action: str | None = None,
) -> tuple[list[AuditEntry], bool]:
    """Entries newest first (ids below ``after``), optionally for one target or action;
    and whether more follow."""
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit + 1)
    if after is not None:
        query = query.where(AuditEntry.id < after)
    if target is not None:
        query = query.where(AuditEntry.target == target)
    if action is not None:
        query = query.where(AuditEntry.action == action)
    rows = list((await session.execute(query)).scalars())
    return rows[:limit], len(rows) > limit
