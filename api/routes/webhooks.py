"""``/v1/webhook``: the key's default endpoint and signing secret; a job's deliveries."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Body, Query

from api.deps import JobsCaller, ReadCaller, ServicesDep, SessionDep
from api.errors import ERROR_RESPONSES, APIError, job_not_found
from api.pages import After, cursor_page
from relayq.schemas.destinations import check_webhook_url
from relayq.schemas.webhooks import (
    DeliveryStatus,
    SecretRotation,
    WebhookAttemptPublic,
    WebhookDeleted,
    WebhookDeliveryList,
    WebhookDeliveryPublic,
    WebhookEndpointPublic,
    WebhookEvent,
    WebhookSecretPublic,
    WebhookSpec,
)
from relayq.store.deliveries import list_deliveries
from relayq.store.endpoints import delete_endpoint, get_endpoint, put_endpoint, rotate_secret
from relayq.store.jobs import get_job
from relayq.store.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint

__all__ = ["router"]

router = APIRouter(tags=["webhooks"], responses=ERROR_RESPONSES)


def _endpoint_public(endpoint: WebhookEndpoint, secret: str | None = None) -> WebhookEndpointPublic:
    return WebhookEndpointPublic(
        id=endpoint.id,
        url=endpoint.url,
        events=[WebhookEvent(event) for event in endpoint.events],
        enabled=endpoint.enabled,
        disabled_reason=endpoint.disabled_reason,
        disabled_at=endpoint.disabled_at,
        created_at=endpoint.created_at,
        updated_at=endpoint.updated_at,
        secret=secret,
    )


def _delivery_public(
    delivery: WebhookDelivery, attempts: list[WebhookAttempt]
) -> WebhookDeliveryPublic:
    return WebhookDeliveryPublic(
        id=delivery.id,
        job_id=delivery.job_id,
        batch_id=delivery.batch_id,
        event=WebhookEvent(delivery.event),
        endpoint="job" if delivery.endpoint_id is None else "key",
        url=delivery.url,
        status=DeliveryStatus(delivery.status),
        reason=delivery.reason,
        attempts=[
            WebhookAttemptPublic(
                number=a.number,
                url=a.url,
                status_code=a.status_code,
                error=a.error,
                latency_ms=a.latency_ms,
                created_at=a.created_at,
            )
            for a in attempts
        ],
        next_attempt_at=delivery.next_attempt_at,
        created_at=delivery.created_at,
        finished_at=delivery.finished_at,
    )


def _no_endpoint() -> APIError:
    return APIError(
        404,
        "This API key has no webhook endpoint. Set one with PUT /v1/webhook.",
        code="webhook_not_found",
    )


@router.get("/v1/webhook", response_model=WebhookEndpointPublic)
async def retrieve(key: ReadCaller, session: SessionDep) -> WebhookEndpointPublic:
    """The key's default endpoint (never its secret)."""
    endpoint = await get_endpoint(session, key_id=key.id)
    if endpoint is None:
        raise _no_endpoint()
    return _endpoint_public(endpoint)


@router.put("/v1/webhook", response_model=WebhookEndpointPublic)
async def put(
    body: WebhookSpec, key: JobsCaller, session: SessionDep, services: ServicesDep
) -> WebhookEndpointPublic:
    """Set the key's default endpoint, used by jobs without a ``webhook`` of their own.

    Setting it enables it again after a 410 disabled it. The first time a
    key gets an endpoint it also gets a signing secret, returned once in
    ``secret``.
    """
    allow_private = services.settings.webhooks.allow_private_destinations
    await check_webhook_url(body.url, allow_private=allow_private, param="url")
    endpoint, secret = await put_endpoint(
        session,
        key_id=key.id,
        url=body.url,
        events=[event.value for event in body.events],
        now=time.time(),
    )
    return _endpoint_public(endpoint, secret)


@router.delete("/v1/webhook", response_model=WebhookDeleted)
async def delete(key: JobsCaller, session: SessionDep) -> WebhookDeleted:
    """Remove the key's default endpoint; its pending deliveries are not sent."""
    deleted = await delete_endpoint(session, key_id=key.id)
    if deleted is None:
        raise _no_endpoint()
    return WebhookDeleted(id=deleted)


@router.post("/v1/webhook/secret", response_model=WebhookSecretPublic)
async def rotate(
    key: JobsCaller,
    session: SessionDep,
    services: ServicesDep,
    body: Annotated[SecretRotation | None, Body()] = None,
) -> WebhookSecretPublic:
    """Create the key's signing secret, or rotate it. The new secret is shown only here.

    The previous secret keeps signing beside the new one for
    ``overlap_seconds`` (default: the server's, 24 h), so receivers can
    switch without missing a delivery.
    """
    overlap = body.overlap_seconds if body and body.overlap_seconds is not None else None
    row, previous_expires_at = await rotate_secret(
        session,
        key_id=key.id,
        now=time.time(),
        overlap=services.settings.webhooks.secret_overlap_seconds if overlap is None else overlap,
    )
    return WebhookSecretPublic(
        secret=row.secret, created_at=row.created_at, previous_expires_at=previous_expires_at
    )


@router.get("/v1/jobs/{job_id}/webhook-deliveries", response_model=WebhookDeliveryList)
async def deliveries(
    job_id: str,
    key: ReadCaller,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: After = None,
) -> WebhookDeliveryList:
    """The job's webhook deliveries, oldest first, each with every attempt made."""
    if await get_job(session, job_id=job_id, key_id=key.id) is None:
        raise job_not_found(job_id)
    rows, attempts, has_more = await list_deliveries(
        session, job_id=job_id, limit=limit, after=after
    )
    data = [_delivery_public(row, attempts[row.id]) for row in rows]
    return cursor_page(WebhookDeliveryList, data, has_more=has_more)
