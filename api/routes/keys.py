"""``/v1/admin/keys``: API keys over HTTP, for callers with the ``admin`` scope.

A key's secret is in the answer that makes it (create, rotate) and nowhere
else. Every change is written with its audit entry in one transaction
(relayq/store/key_admin.py; read them at ``/v1/admin/audit``), and this
process's key cache forgets the key at once, so a revoke or a rotation holds
from the next request here (and within ``RELAYQ_API__KEY_CACHE_SECONDS`` in
other API processes).
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query, Request, status

from api.deps import AdminCaller, ServicesDep, SessionDep
from api.errors import ERROR_RESPONSES
from api.observability import request_id_of
from api.pages import After, cursor_page
from relayq.auth.caller import Caller
from relayq.schemas.keys import KeyCreate, KeyCreated, KeyList, KeyObject, KeyRotate, KeyUpdate
from relayq.store import key_admin
from relayq.store.key_admin import Actor, KeyNotFound
from relayq.store.keys import get_key, page_keys
from relayq.store.views import key_object

__all__ = ["router"]

router = APIRouter(prefix="/v1/admin/keys", tags=["admin"], responses=ERROR_RESPONSES)


def _actor(caller: Caller, request: Request) -> Actor:
    return Actor(key_id=caller.id, request_id=request_id_of(request.scope))


@router.post("", status_code=status.HTTP_201_CREATED, response_model=KeyCreated)
async def create(
    body: KeyCreate, caller: AdminCaller, session: SessionDep, request: Request
) -> KeyCreated:
    """Create a key. The answer carries its ``secret``: store it now, it is not shown
    again."""
    return await key_admin.create(
        session, actor=_actor(caller, request), body=body, now=time.time()
    )


@router.get("", response_model=KeyList)
async def list_(
    _: AdminCaller,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: After = None,
    revoked: Annotated[
        bool | None, Query(description="true: only revoked keys; false: only usable ones.")
    ] = None,
) -> KeyList:
    """Every key (JWT tenants included), newest first; page with ``after`` = the previous
    ``last_id``."""
    rows, has_more = await page_keys(session, limit=limit, after=after, revoked=revoked)
    return cursor_page(KeyList, [key_object(row) for row in rows], has_more=has_more)


@router.get("/{key_id}", response_model=KeyObject)
async def retrieve(key_id: str, _: AdminCaller, session: SessionDep) -> KeyObject:
    row = await get_key(session, key_id=key_id)
    if row is None:
        raise KeyNotFound(key_id)
    return key_object(row)


@router.patch("/{key_id}", response_model=KeyObject)
async def update(
    key_id: str,
    body: KeyUpdate,
    caller: AdminCaller,
    session: SessionDep,
    services: ServicesDep,
    request: Request,
) -> KeyObject:
    """Change any of a key's fields; a null clears a limit, a budget, the model
    allow-list or the expiry. An admin cannot take ``admin`` from its own key."""
    actor = _actor(caller, request)
    changed = await key_admin.update(
        session, actor=actor, key_id=key_id, body=body, now=time.time()
    )
    services.forget_key(key_id)
    return changed


@router.post("/{key_id}/rotate", response_model=KeyCreated)
async def rotate(
    key_id: str,
    body: KeyRotate,
    caller: AdminCaller,
    session: SessionDep,
    services: ServicesDep,
    request: Request,
) -> KeyCreated:
    """Give the key a new ``secret`` (shown this once); the old one keeps working for
    ``overlap_seconds`` (0: it stops at once)."""
    rotated = await key_admin.rotate(
        session,
        actor=_actor(caller, request),
        key_id=key_id,
        overlap_seconds=body.overlap_seconds,
        now=time.time(),
    )
    services.forget_key(key_id)
    return rotated


@router.delete("/{key_id}", response_model=KeyObject)
async def revoke(
    key_id: str, caller: AdminCaller, session: SessionDep, services: ServicesDep, request: Request
) -> KeyObject:
    """Revoke the key, for good: its requests answer 401 from now on. Revoking a revoked
    key answers it as it is. An admin cannot revoke its own key."""
    revoked = await key_admin.revoke(
        session, actor=_actor(caller, request), key_id=key_id, now=time.time()
    )
    services.forget_key(key_id)
    return revoked
