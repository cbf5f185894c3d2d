"""``/v1/batches``: OpenAI's Batch API (and inline requests), on the job queues.

Creating a batch stores it as ``validating`` and publishes one message; a
worker validates every line and stores the requests as jobs (see
relayq/batches/preparation.py), and the batch scheduler runs them and
writes the result files (relayq/batches/scheduler.py). ``GET
/v1/batches/{id}/events`` streams the batch's progress as server-sent events.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response
from fastapi.responses import StreamingResponse

from api.deps import BatchesCaller, ReadCaller, ServicesDep, SessionDep, key_budget
from api.errors import ERROR_RESPONSES, APIError, file_not_found
from api.pages import After, cursor_page
from api.services import Services
from api.sse import HEARTBEAT, sse_message
from relayq.auth.caller import Caller
from relayq.batches.activity import BatchActivity
from relayq.batches.inline import store_inline_requests
from relayq.ids import new_id
from relayq.intake.intake import request_hash
from relayq.schemas.batches import (
    BATCH_ENDPOINTS,
    FINAL_BATCH_STATUSES,
    BatchCreate,
    BatchList,
    BatchObject,
    BatchStatus,
)
from relayq.schemas.destinations import check_webhook_url
from relayq.schemas.files import FilePurpose
from relayq.store.batches import (
    add_batch,
    batch_totals,
    cancel_batch,
    find_by_idempotency_key,
    get_batch,
    list_batches,
)
from relayq.store.files import get_file
from relayq.store.models import Batch
from relayq.store.spend import refuse_if_used_up
from relayq.store.views import batch_object

__all__ = ["router"]

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/batches", tags=["batches"], responses=ERROR_RESPONSES)

_SSE = {"content-type": "text/event-stream", "cache-control": "no-cache", "x-accel-buffering": "no"}


def _not_found(batch_id: str) -> APIError:
    return APIError(
        404, f"No batch found with id '{batch_id}'.", code="batch_not_found", param="batch_id"
    )


@router.post("", response_model=BatchObject)
async def create(
    body: BatchCreate,
    key: BatchesCaller,
    services: ServicesDep,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> BatchObject:
    """Create a batch from an uploaded file (``input_file_id``) or inline ``requests``.

    It starts ``validating``: every line is checked by a worker, and a batch
    with any bad line ends ``failed`` with each one listed in ``errors``.
    With an ``Idempotency-Key`` header, the same key and body return the
    first batch again (``Idempotent-Replayed: true``), so a create whose
    answer was lost can be retried; the same key with another body is a 409.
    """
    if body.endpoint not in BATCH_ENDPOINTS:
        raise APIError(
            400,
            f"Invalid endpoint '{body.endpoint}': relayq batches support "
            f"{', '.join(BATCH_ENDPOINTS)}.",
            code="invalid_endpoint",
            param="endpoint",
        )
    if body.webhook is not None:
        allow_private = services.settings.webhooks.allow_private_destinations
        await check_webhook_url(body.webhook.url, allow_private=allow_private, param="webhook.url")
    now = time.time()
    budget = key_budget(key)
    if budget is not None:  # 429 insufficient_quota at once when nothing is left
        async with services.database.session() as session:
            await refuse_if_used_up(session, key_id=key.id, limits=budget, now=now)
    batch = Batch(
        id=new_id("batch", now=now),
        key_id=key.id,
        status=BatchStatus.VALIDATING.value,
        endpoint=body.endpoint,
        completion_window=body.completion_window,
        metadata_=body.metadata,
        webhook=None if body.webhook is None else body.webhook.model_dump(mode="json"),
        models=None if key.models is None else sorted(key.models),
        priority=services.settings.batches.priority,
        total=0,
        idempotency_key=idempotency_key,
        request_hash=None if idempotency_key is None else request_hash(body),
        created_at=now,
        expires_at=now + body.window_seconds(),
        output_expires_after=(
            None if body.output_expires_after is None else body.output_expires_after.seconds
        ),
    )
    # Sessions one after another, never nested: a process may hold one connection only.
    async with services.database.session() as session:
        # Before anything is written: a replay must not store its inline requests again.
        # A key reused with another body raises IdempotencyConflict (a 409).
        earlier = None if idempotency_key is None else await find_by_idempotency_key(session, batch)
    if earlier is None:
        if body.requests is not None:
            batch.input_file_id = await store_inline_requests(
                storage=services.storage,
                database=services.database,
                key_id=key.id,
                endpoint=body.endpoint,
                requests=[(request.custom_id, request.params) for request in body.requests],
                now=now,
                lifetime=services.settings.retention.file_seconds(),
            )
        else:
            assert body.input_file_id is not None
            batch.input_file_id = await _checked_input(services, key, body.input_file_id)
    async with services.database.session() as session:
        if earlier is None:
            stored, created = await add_batch(session, batch)
        else:
            stored, created = earlier, False
        totals = (await batch_totals(session, batches=[stored]))[stored.id]
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
        return batch_object(stored, totals)
    # Not taken: the batch is stored, and a worker's scheduler sends it later.
    await services.outbox.send_batch(batch.id)
    return batch_object(batch, totals)


async def _checked_input(services: Services, key: Caller, file_id: str) -> str:
    async with services.database.session() as session:
        row = await get_file(session, file_id=file_id, key_id=key.id, now=time.time())
    if row is None:
        raise file_not_found(file_id, param="input_file_id")
    if row.purpose != FilePurpose.BATCH.value:
        raise APIError(
            400,
            f"File '{file_id}' has purpose '{row.purpose}': a batch's input file must be "
            "uploaded with purpose 'batch'.",
            code="invalid_input_file",
            param="input_file_id",
        )
    return row.id


@router.get("/{batch_id}", response_model=BatchObject)
async def retrieve(batch_id: str, key: ReadCaller, session: SessionDep) -> BatchObject:
    batch = await get_batch(session, batch_id=batch_id, key_id=key.id)
    if batch is None:
        raise _not_found(batch_id)
    totals = await batch_totals(session, batches=[batch])
    return batch_object(batch, totals[batch.id])


@router.get("", response_model=BatchList)
async def list_(
    key: ReadCaller,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: After = None,
) -> BatchList:
    """The caller's batches, newest first; page with ``after`` = the previous ``last_id``."""
    rows, has_more = await list_batches(session, key_id=key.id, limit=limit, after=after)
    totals = await batch_totals(session, batches=rows)
    data = [batch_object(row, totals[row.id]) for row in rows]
    return cursor_page(BatchList, data, has_more=has_more)


@router.post("/{batch_id}/cancel", response_model=BatchObject)
async def cancel(
    batch_id: str, key: BatchesCaller, session: SessionDep, services: ServicesDep
) -> BatchObject:
    """Cancel a batch: queued requests end at once, running ones finish.

    The batch is ``cancelling`` until they have, then ``cancelled`` with
    the results of what ran. Cancelling a cancelled batch is a no-op.
    """
    changed = await cancel_batch(session, batch_id=batch_id, key_id=key.id, now=time.time())
    batch = await get_batch(session, batch_id=batch_id, key_id=key.id)
    if batch is None:
        raise _not_found(batch_id)
    await session.refresh(batch)
    status = BatchStatus(batch.status)
    # Cancelled already: cancelling, or finalizing its results after a cancel, or done.
    being_cancelled = status in (BatchStatus.CANCELLING, BatchStatus.CANCELLED) or (
        status is BatchStatus.FINALIZING and batch.cancelling_at is not None
    )
    if not changed and not being_cancelled:
        raise APIError(
            409,
            f"Batch '{batch_id}' is {status.value}; only a validating or in-progress batch "
            "can be cancelled.",
            code="batch_not_cancellable",
        )
    totals = await batch_totals(session, batches=[batch])
    answer = batch_object(batch, totals[batch.id])
    if changed:  # the scheduler ends a cancelled batch: wake it, once the answer is read
        await BatchActivity(services.redis, key_prefix=services.settings.key_prefix).note()
    return answer


@router.get(
    "/{batch_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "Progress."}},
)
async def events(batch_id: str, key: ReadCaller, services: ServicesDep) -> StreamingResponse:
    """The batch's progress as server-sent events, until it ends.

    Each event's data is the whole batch object: ``batch.<status>`` when its
    status changes, ``batch.progress`` when its request counts do. The
    first event is the batch as it is now.
    """
    async with services.database.session() as session:
        batch = await get_batch(session, batch_id=batch_id, key_id=key.id)
    if batch is None:
        raise _not_found(batch_id)
    return StreamingResponse(_progress(services, batch_id, key.id), headers=_SSE)


async def _progress(services: Services, batch_id: str, key_id: str) -> AsyncIterator[str]:
    """Poll the batch (one grouped query each time) and send what changed."""
    numbers = itertools.count(1)
    last: BatchObject | None = None
    quiet_since = time.monotonic()
    heartbeat = services.settings.events.heartbeat_seconds
    yield "retry: 3000\n\n"
    while True:
        async with services.database.session() as session:
            batch = await get_batch(session, batch_id=batch_id, key_id=key_id)
            if batch is None:
                return
            now = batch_object(batch, (await batch_totals(session, batches=[batch]))[batch.id])
        if last is None or now.status != last.status:
            kind = f"batch.{now.status.value}"
        elif now.request_counts != last.request_counts:
            kind = "batch.progress"
        else:
            kind = ""
        if kind:
            data = now.model_dump(mode="json")
            yield sse_message(id=str(next(numbers)), event=kind, data=data)
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= heartbeat:
            yield HEARTBEAT
            quiet_since = time.monotonic()
        if now.status in FINAL_BATCH_STATUSES:
            return
        last = now
        await asyncio.sleep(services.settings.batches.progress_seconds)
