"""Batch objects as OpenAI's Batch API returns them, and what callers send."""

from __future__ import annotations

from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from relayq.schemas.files import ExpiresAfter
from relayq.schemas.jobs import JobKind
from relayq.schemas.spans import Span, span_seconds
from relayq.schemas.webhooks import BatchWebhookSpec

__all__ = [
    "ACTIVE_BATCH_STATUSES",
    "BATCH_ENDPOINTS",
    "CHAT_ENDPOINT",
    "COMPLETIONS_ENDPOINT",
    "EMBEDDINGS_ENDPOINT",
    "FINAL_BATCH_STATUSES",
    "IMAGES_ENDPOINT",
    "BatchCreate",
    "BatchErrorItem",
    "BatchErrors",
    "BatchList",
    "BatchObject",
    "BatchStatus",
    "BatchUsage",
    "InlineRequest",
    "InputTokensDetails",
    "OutputTokensDetails",
    "RequestCounts",
    "endpoint_kind",
]

CHAT_ENDPOINT = "/v1/chat/completions"
EMBEDDINGS_ENDPOINT = "/v1/embeddings"
COMPLETIONS_ENDPOINT = "/v1/completions"
IMAGES_ENDPOINT = "/v1/images/generations"
BATCH_ENDPOINTS = (CHAT_ENDPOINT, EMBEDDINGS_ENDPOINT, COMPLETIONS_ENDPOINT, IMAGES_ENDPOINT)
"""The endpoints a batch's requests may call."""

_KINDS = {
    EMBEDDINGS_ENDPOINT: JobKind.EMBEDDINGS,
    COMPLETIONS_ENDPOINT: JobKind.COMPLETIONS,
    IMAGES_ENDPOINT: JobKind.IMAGES,
}


def endpoint_kind(endpoint: str) -> JobKind:
    """The kind of job a batch's requests to ``endpoint`` are (chat unless another's)."""
    return _KINDS.get(endpoint, JobKind.CHAT)


class BatchStatus(str, Enum):
    VALIDATING = "validating"
    FAILED = "failed"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


FINAL_BATCH_STATUSES = frozenset(
    {BatchStatus.FAILED, BatchStatus.COMPLETED, BatchStatus.EXPIRED, BatchStatus.CANCELLED}
)
ACTIVE_BATCH_STATUSES = frozenset(
    {BatchStatus.IN_PROGRESS, BatchStatus.CANCELLING, BatchStatus.FINALIZING}
)
"""Statuses the scheduler moves on (validating is the preparation task's)."""


class InlineRequest(BaseModel):
    """One request of an inline batch, in Anthropic's Message Batches shape."""

    custom_id: str = Field(min_length=1, max_length=512)
    params: dict[str, Any]
    """A body of the batch's endpoint: ``/v1/chat/completions`` or ``/v1/embeddings``."""


class BatchCreate(BaseModel):
    """The body of ``POST /v1/batches``: an uploaded file's id, or the requests inline."""

    input_file_id: str | None = None
    """A file uploaded with ``purpose=batch``: one request per line."""
    requests: list[InlineRequest] | None = Field(default=None, min_length=1)
    """The requests themselves, for callers without files (instead of ``input_file_id``)."""
    endpoint: str = "/v1/chat/completions"
    completion_window: Span = "24h"
    """How long the batch may take: OpenAI's ``24h``, or another span (``90s``, ``30m``)."""
    metadata: dict[str, str] | None = None
    webhook: BatchWebhookSpec | None = None
    """Where to send the batch's ``batch.*`` event (default: the key's endpoint)."""
    output_expires_after: ExpiresAfter | None = None
    """When the output and error files expire, from their creation (default: the
    deployment's ``retention.batch_output_days``, 30 days)."""

    @model_validator(mode="after")
    def _one_source(self) -> BatchCreate:
        if (self.input_file_id is None) == (self.requests is None):
            raise ValueError("give either input_file_id or requests, not both and not neither")
        return self

    def window_seconds(self) -> float:
        return span_seconds(self.completion_window)


class BatchErrorItem(BaseModel):
    code: str
    message: str
    param: str | None = None
    line: int | None = None
    """1-based line of the input file (the request's position, for inline requests)."""


class BatchErrors(BaseModel):
    object: Literal["list"] = "list"
    data: list[BatchErrorItem]


class RequestCounts(BaseModel):
    total: int = 0
    completed: int = 0
    """Requests that succeeded."""
    failed: int = 0
    """Requests that failed or expired."""


class InputTokensDetails(BaseModel):
    cached_tokens: int = 0
    """Prompt tokens the vendors served from their prompt caches."""


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class BatchUsage(BaseModel):
    """The tokens of a batch's requests, in OpenAI's shape: summed over its requests
    that reported usage (those that succeeded, and any that failed with usage)."""

    input_tokens: int = 0
    input_tokens_details: InputTokensDetails = Field(default_factory=InputTokensDetails)
    output_tokens: int = 0
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)
    total_tokens: int = 0


class BatchObject(BaseModel):
    id: str
    object: Literal["batch"] = "batch"
    endpoint: str
    errors: BatchErrors | None = None
    input_file_id: str
    completion_window: str
    status: BatchStatus
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    request_counts: RequestCounts
    usage: BatchUsage = Field(default_factory=BatchUsage)
    cost_usd: float | None = None
    """What its requests cost, in US dollars (relayq's extension): the sum of their
    ``cost_usd``; null while none has a cost (no usage yet, or no price)."""
    metadata: dict[str, str] | None = None


class BatchList(BaseModel):
    object: Literal["list"] = "list"
    data: list[BatchObject]
    first_id: str | None
    last_id: str | None
    has_more: bool
