"""``/v1/messages/batches``: Anthropic's Message Batches API, on relayq's batches.

Each request (``custom_id``, ``params``: a ``/v1/messages`` body) is
translated to the canonical chat request and the batch stored as a relayq
batch whose endpoint is ``/v1/messages``: validated, held and released fairly
like any other (:mod:`relayq.batches.message_batches` gives its Anthropic
face). Its results, once it has ended, are JSON lines at
``/v1/messages/batches/{id}/results``. Errors are in Anthropic's shape; the
key may come as ``x-api-key``.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from api.deps import MessageBatchesCaller, MessagesReadCaller, ServicesDep, key_budget
from api.errors import ANTHROPIC_ERROR_RESPONSES, AnthropicErrorsRoute, APIError
from api.services import Services
from relayq.batches.activity import BatchActivity
from relayq.batches.inline import store_inline_requests
from relayq.batches.message_batches import (
    MESSAGES_ENDPOINT,
    has_ended,
    message_batch,
    result_lines,
)
from relayq.ids import new_id
from relayq.schemas.anthropic_batches import MessageBatch, MessageBatchCreate, MessageBatchList
from relayq.schemas.anthropic_translation import Untranslatable, chat_body
from relayq.schemas.batches import BatchStatus
from relayq.store.batches import add_batch, cancel_batch, get_batch, list_batches, tallies
from relayq.store.files import get_file
from relayq.store.models import Batch
from relayq.store.spend import refuse_if_used_up

__all__ = ["router"]

router = APIRouter(
    prefix="/v1/messages/batches",
    tags=["messages"],
    responses=ANTHROPIC_ERROR_RESPONSES,
    route_class=AnthropicErrorsRoute,
)

_WINDOW_SECONDS = 24 * 3600
"""Anthropic's batches end within 24 hours."""


def _not_found(batch_id: str) -> APIError:
    return APIError(404, f"No message batch found with id '{batch_id}'.", param="batch_id")


def _translated(body: MessageBatchCreate) -> list[tuple[str, dict[str, object]]]:
    seen: set[str] = set()
    requests: list[tuple[str, dict[str, object]]] = []
    for index, item in enumerate(body.requests):
        where = f"requests[{index}]"
        if item.custom_id in seen:
            raise APIError(
                400,
                f"Invalid '{where}.custom_id': '{item.custom_id}' is used twice; each must be "
                "unique in the batch.",
                param=f"{where}.custom_id",
            )
        seen.add(item.custom_id)
        if item.params.stream:
            param = f"{where}.params.stream"
            raise APIError(
                400, f"Invalid '{param}': a batch's requests do not stream.", param=param
            )
        try:
            requests.append((item.custom_id, chat_body(item.params)))
        except Untranslatable as exc:
            param = f"{where}.params.{exc.param}"
            raise APIError(400, f"Invalid '{param}': {exc}.", param=param) from exc
    return requests


async def _shown(services: Services, batch: Batch, request: Request) -> MessageBatch:
    """``batch`` as a ``message_batch``: one grouped count (and its file's row before its
    requests are jobs)."""
    lines = batch.total
    async with services.database.session() as session:
        found = await tallies(session, batch_ids=[batch.id])
        if batch.total == 0:  # not prepared (yet): its requests are its file's lines
            row = await get_file(
                session, file_id=batch.input_file_id, key_id=batch.key_id, now=time.time()
            )
            lines = row.lines if row is not None else 0
    url = str(request.url_for("message_batch_results", batch_id=batch.id))
    return message_batch(batch, found, lines=lines, results_url=url)


async def _owned(services: Services, batch_id: str, key_id: str) -> Batch:
    async with services.database.session() as session:
        batch = await get_batch(session, batch_id=batch_id, key_id=key_id)
    if batch is None or batch.endpoint != MESSAGES_ENDPOINT:
        raise _not_found(batch_id)
    return batch


@router.post("", response_model=MessageBatch)
async def create_message_batch(
    body: MessageBatchCreate, key: MessageBatchesCaller, services: ServicesDep, request: Request
) -> MessageBatch:
    """Create a message batch: each request a job, run below interactive priority."""
    requests = _translated(body)
    now = time.time()
    budget = key_budget(key)
    if budget is not None:  # 429 at once when nothing is left (as POST /v1/batches)
        async with services.database.session() as session:
            await refuse_if_used_up(session, key_id=key.id, limits=budget, now=now)
    batch = Batch(
        id=new_id("batch", now=now),
        key_id=key.id,
        status=BatchStatus.VALIDATING.value,
        endpoint=MESSAGES_ENDPOINT,
        completion_window="24h",
        models=None if key.models is None else sorted(key.models),
        priority=services.settings.batches.priority,
        total=0,
        created_at=now,
        expires_at=now + _WINDOW_SECONDS,
    )
    batch.input_file_id = await store_inline_requests(
        storage=services.storage,
        database=services.database,
        key_id=key.id,
        endpoint=MESSAGES_ENDPOINT,
        requests=requests,
        now=now,
        lifetime=services.settings.retention.file_seconds(),
    )
    async with services.database.session() as session:
        await add_batch(session, batch)
    # Not taken: the batch is stored, and a worker's scheduler sends it later.
    await services.outbox.send_batch(batch.id)
    url = str(request.url_for("message_batch_results", batch_id=batch.id))
    return message_batch(batch, [], lines=len(requests), results_url=url)


@router.get("/{batch_id}", response_model=MessageBatch)
async def retrieve_message_batch(
    batch_id: str, key: MessagesReadCaller, services: ServicesDep, request: Request
) -> MessageBatch:
    return await _shown(services, await _owned(services, batch_id, key.id), request)


@router.get("", response_model=MessageBatchList)
async def list_message_batches(
    key: MessagesReadCaller,
    services: ServicesDep,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
    after_id: str | None = None,
    before_id: str | None = None,
) -> MessageBatchList:
    """The caller's message batches, newest first; page with ``after_id`` = ``last_id``."""
    if before_id is not None:
        raise APIError(
            400, "Paging back with 'before_id' is not supported; use 'after_id'.", param="before_id"
        )
    async with services.database.session() as session:
        rows, has_more = await list_batches(
            session, key_id=key.id, limit=limit, after=after_id, endpoint=MESSAGES_ENDPOINT
        )
    data = [await _shown(services, row, request) for row in rows]
    return MessageBatchList.of(data, has_more=has_more)


@router.post("/{batch_id}/cancel", response_model=MessageBatch)
async def cancel_message_batch(
    batch_id: str, key: MessageBatchesCaller, services: ServicesDep, request: Request
) -> MessageBatch:
    """Cancel a batch: its queued requests end at once (canceled), running ones finish.

    Cancelling a batch that is canceling or has ended answers it as it is.
    """
    await _owned(services, batch_id, key.id)
    async with services.database.session() as session:
        changed = await cancel_batch(session, batch_id=batch_id, key_id=key.id, now=time.time())
    if changed:  # the scheduler ends a cancelled batch: wake it
        await BatchActivity(services.redis, key_prefix=services.settings.key_prefix).note()
    return await _shown(services, await _owned(services, batch_id, key.id), request)


@router.get(
    "/{batch_id}/results",
    name="message_batch_results",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-jsonl": {}}, "description": "One line each."}},
)
async def message_batch_results(
    batch_id: str, key: MessagesReadCaller, services: ServicesDep
) -> StreamingResponse:
    """The results of an ended batch: one JSON line per request, ``{"custom_id", "result"}``."""
    batch = await _owned(services, batch_id, key.id)
    if not has_ended(batch):
        raise APIError(
            409,
            f"Message batch '{batch_id}' has not ended: its results are not ready yet.",
            param="batch_id",
        )
    lines = result_lines(database=services.database, storage=services.storage, batch=batch)
    return StreamingResponse(lines, media_type="application/x-jsonl")
