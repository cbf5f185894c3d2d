"""Webhook schemas: endpoints, secrets and deliveries as callers send and see them."""

from __future__ import annotations

from enum import Enum
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from relayq.schemas.destinations import MAX_URL_LENGTH, parse_destination

__all__ = [
    "BATCH_EVENTS",
    "DEFAULT_EVENTS",
    "JOB_EVENTS",
    "BatchWebhookSpec",
    "DeliveryStatus",
    "JobWebhookSpec",
    "SecretRotation",
    "WebhookAttemptPublic",
    "WebhookDeleted",
    "WebhookDeliveryList",
    "WebhookDeliveryPublic",
    "WebhookEndpointPublic",
    "WebhookEvent",
    "WebhookSecretPublic",
    "WebhookSpec",
]


class WebhookEvent(str, Enum):
    """Events a webhook can be sent for: how a job, or a batch, ended.

    ``job.queued`` and ``job.started`` are not offered: they happen while a
    caller is still watching the job (the 202 answer, the SSE stream), and a
    delivery is planned in the transaction that writes a job's outcome. The
    requests of a batch send no ``job.*`` events: their batch sends one
    ``batch.*`` event when it ends.
    """

    SUCCEEDED = "job.succeeded"
    FAILED = "job.failed"
    CANCELLED = "job.cancelled"
    EXPIRED = "job.expired"
    BATCH_COMPLETED = "batch.completed"
    BATCH_FAILED = "batch.failed"
    BATCH_EXPIRED = "batch.expired"
    BATCH_CANCELLED = "batch.cancelled"


DEFAULT_EVENTS = tuple(WebhookEvent)
"""What an endpoint gets when it names no events: every one, of jobs and of batches."""
JOB_EVENTS = tuple(e for e in WebhookEvent if e.value.startswith("job."))
BATCH_EVENTS = tuple(e for e in WebhookEvent if e.value.startswith("batch."))


def _default_events() -> list[WebhookEvent]:
    return list(DEFAULT_EVENTS)


class WebhookSpec(BaseModel):
    """Where to send a job's events (``webhook`` in ``POST /v1/jobs``, or the key's default)."""

    url: str = Field(max_length=MAX_URL_LENGTH)
    """An http or https URL; private, loopback and link-local addresses are refused."""
    events: list[WebhookEvent] = Field(default_factory=_default_events, min_length=1)
    """The events to send; default: every terminal one."""

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parse_destination(value)
        return value

    @field_validator("events")
    @classmethod
    def _unique(cls, value: list[WebhookEvent]) -> list[WebhookEvent]:
        return list(dict.fromkeys(value))


class JobWebhookSpec(WebhookSpec):
    """A job's own webhook (``webhook`` in ``POST /v1/jobs``)."""

    events: list[WebhookEvent] = Field(default_factory=lambda: list(JOB_EVENTS), min_length=1)
    """The events to send; default: every ``job.*`` one."""


class BatchWebhookSpec(WebhookSpec):
    """A batch's own webhook (``webhook`` in ``POST /v1/batches``)."""

    events: list[WebhookEvent] = Field(default_factory=lambda: list(BATCH_EVENTS), min_length=1)
    """The events to send; default: every ``batch.*`` one."""


class WebhookEndpointPublic(BaseModel):
    """The key's default endpoint: used for jobs that name no ``webhook`` of their own."""

    object: Literal["webhook.endpoint"] = "webhook.endpoint"
    id: str
    url: str
    events: list[WebhookEvent]
    enabled: bool
    disabled_reason: str | None = None
    """Why deliveries stopped (an endpoint answering 410 Gone is disabled)."""
    disabled_at: float | None = None
    created_at: float
    updated_at: float
    secret: str | None = None
    """The key's new signing secret, shown once: only when this call created it."""


class WebhookDeleted(BaseModel):
    object: Literal["webhook.endpoint.deleted"] = "webhook.endpoint.deleted"
    id: str
    deleted: bool = True


class SecretRotation(BaseModel):
    """The body of ``POST /v1/webhook/secret`` (optional)."""

    overlap_seconds: float | None = Field(default=None, ge=0, le=7 * 24 * 3600)
    """How long the previous secret keeps signing beside the new one; default: the server's."""


class WebhookSecretPublic(BaseModel):
    object: Literal["webhook.secret"] = "webhook.secret"
    secret: str
    """``whsec_`` + base64: verify signatures with it. Shown only this once."""
    created_at: float
    previous_expires_at: float | None = None
    """When the secret this one replaces stops signing (None: there was none)."""


class DeliveryStatus(str, Enum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class WebhookAttemptPublic(BaseModel):
    """One HTTP request made for a delivery."""

    object: Literal["webhook.attempt"] = "webhook.attempt"
    number: int
    url: str
    status_code: int | None = None
    """The receiver's answer; None when there was none (timeout, connection error)."""
    error: str | None = None
    latency_ms: float
    created_at: float
    """When the attempt started."""


class WebhookDeliveryPublic(BaseModel):
    """One event sent to one endpoint; ``id`` is the ``webhook-id`` header of every attempt."""

    object: Literal["webhook.delivery"] = "webhook.delivery"
    id: str
    job_id: str | None = None
    batch_id: str | None = None
    """The job, or the batch, whose event this is."""
    event: WebhookEvent
    endpoint: Literal["job", "key"]
    """``job``: the job's (or batch's) own webhook; ``key``: the key's default endpoint."""
    url: str
    status: DeliveryStatus
    reason: str | None = None
    """Why a delivery failed for good."""
    attempts: list[WebhookAttemptPublic]
    next_attempt_at: float | None = None
    created_at: float
    finished_at: float | None = None


class WebhookDeliveryList(BaseModel):
    """A job's deliveries, oldest first, in OpenAI's list shape."""

    object: Literal["list"] = "list"
    data: list[WebhookDeliveryPublic]
    first_id: str | None
    last_id: str | None
    has_more: bool
