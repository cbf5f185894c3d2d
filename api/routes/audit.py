"""``/v1/admin/audit``: the log of admin actions, for callers with the ``admin`` scope."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import AdminCaller, SessionDep
from api.errors import ERROR_RESPONSES
from relayq.schemas.audit import AuditList
from relayq.store.audit import list_audit
from relayq.store.views import audit_entry

__all__ = ["router"]

_LARGEST_ID = 2**31 - 1
"""Audit ids are 32-bit integers (PostgreSQL's ``integer``): a cursor past them names no entry,
and PostgreSQL would refuse to compare with it."""

router = APIRouter(prefix="/v1/admin/audit", tags=["admin"], responses=ERROR_RESPONSES)


@router.get("", response_model=AuditList)
async def list_(
    _: AdminCaller,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: Annotated[
        int | None,
        Query(ge=0, le=_LARGEST_ID, description="Cursor: the last id of the previous page."),
    ] = None,
    target: Annotated[
        str | None, Query(max_length=200, description="Only actions on this object.")
    ] = None,
    action: Annotated[
        str | None, Query(max_length=64, description="Only this action, e.g. key.revoke.")
    ] = None,
) -> AuditList:
    """Who did what to which object, when, and the object before and after; newest
    first. Page with ``after`` = the previous ``last_id``."""
    rows, has_more = await list_audit(
        session, limit=limit, after=after, target=target, action=action
    )
    data = [audit_entry(row) for row in rows]
    return AuditList(
        data=data,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
        has_more=has_more,
    )
