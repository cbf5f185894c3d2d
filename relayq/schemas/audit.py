"""The audit log as the admin API shows it (``GET /v1/admin/audit``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

__all__ = ["AuditEntryObject", "AuditList"]


class AuditEntryObject(BaseModel):
    """One admin action: who (``actor_key_id``), what (``action`` on ``target``), when
    (``at``, Unix seconds), and the object before and after it (null: none)."""

    id: int
    object: Literal["audit_entry"] = "audit_entry"
    at: float
    actor_key_id: str
    """The key (or JWT tenant) that acted; ``cli`` for the ``relayq keys`` command."""
    action: str
    """``key.create``, ``key.update``, ``key.rotate``, ``key.revoke``, ``breaker.reset``..."""
    target: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    request_id: str | None
    """The request that made the change (its ``x-request-id``)."""


class AuditList(BaseModel):
    """A page of entries, newest first; the next page is ``after`` = ``last_id``."""

    object: Literal["list"] = "list"
    data: list[AuditEntryObject]
    first_id: int | None
    last_id: int | None
    has_more: bool
