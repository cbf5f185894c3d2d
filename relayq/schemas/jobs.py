"""Job schemas: what callers send and what they get back."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Discriminator, Field, Tag, field_validator

from relayq.schemas.chat import ChatCompletionRequest
from relayq.schemas.completions import TextCompletionRequest
from relayq.schemas.embeddings import EmbeddingRequest
from relayq.schemas.images import ImageGenerationRequest
from relayq.schemas.params import KIND_TAG_PREFIX
from relayq.schemas.responses import ResponsesRequest
from relayq.schemas.spans import Span, span_seconds
from relayq.schemas.webhooks import JobWebhookSpec, WebhookSpec

__all__ = [
    "JOB_OPTIONS",
    "KIND_TAG",
    "TERMINAL_STATUSES",
    "AttemptPublic",
    "CallRequest",
    "CompletionJobCreate",
    "EmbeddingJobCreate",
    "ImageJobCreate",
    "JobBody",
    "JobCreate",
    "JobCreateBody",
    "JobKind",
    "JobList",
    "JobOptions",
    "JobPublic",
    "JobStatus",
    "ResponsesJobCreate",
]


CallRequest = (
    ChatCompletionRequest
    | EmbeddingRequest
    | TextCompletionRequest
    | ImageGenerationRequest
    | ResponsesRequest
)
"""What a job asks its provider, by its kind: its body without the job options."""


class JobStatus(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


TERMINAL_STATUSES = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.EXPIRED}
)


class JobKind(str, Enum):
    """What a job asks its provider for: a chat completion, embeddings, a legacy
    (text) completion, images, or a response (OpenAI's Responses API)."""

    CHAT = "chat"
    EMBEDDINGS = "embeddings"
    COMPLETIONS = "completions"
    IMAGES = "images"
    RESPONSES = "responses"


JOB_OPTIONS = frozenset(
    {"kind", "priority", "metadata", "cache", "webhook", "expires_at", "completion_window"}
)
"""Fields of a job body that configure the job, not the provider call."""

_METADATA_PAIRS = 16
_METADATA_KEY_CHARS = 64
_METADATA_VALUE_CHARS = 512


KIND_TAG = KIND_TAG_PREFIX
"""How :data:`JobBody`'s members are tagged (``kind=chat``): a validation error's
location holds the tag, which :func:`relayq.schemas.params.param_path` leaves out."""


class JobOptions(BaseModel):
    """The fields every job body takes beside its provider request."""

    priority: int = Field(default=5, ge=0, le=9)
    """0 (lowest) to 9 (highest); higher-priority jobs leave the queue first."""
    metadata: dict[str, str] = Field(default_factory=dict)
    """Up to 16 string pairs, as on OpenAI objects; returned with the job."""
    expires_at: float | None = Field(default=None, gt=0)
    """Unix time after which the job, if not yet started, expires instead of running."""
    completion_window: Span | None = None
    """The same as a span from now, like OpenAI batches' ``24h`` (also ``90s``, ``30m``)."""
    cache: bool | None = None
    """Use the response cache for this job (true), or not (false); default: the route's."""
    webhook: JobWebhookSpec | None = None
    """Where to send this job's events, signed (docs/webhooks.md); default: the key's endpoint."""

    @field_validator("metadata")
    @classmethod
    def _metadata_limits(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > _METADATA_PAIRS:
            raise ValueError(f"at most {_METADATA_PAIRS} metadata pairs are allowed")
        for key, item in value.items():
            if len(key) > _METADATA_KEY_CHARS:
                raise ValueError(f"metadata key {key[:20]!r}... exceeds 64 characters")
            if len(item) > _METADATA_VALUE_CHARS:
                raise ValueError(f"metadata value of {key!r} exceeds 512 characters")
        return value

    def deadline(self, now: float) -> float | None:
        """When the job expires: the earlier of ``expires_at`` and the completion window."""
        deadlines = [self.expires_at] if self.expires_at is not None else []
        if self.completion_window is not None:
            deadlines.append(now + span_seconds(self.completion_window))
        return min(deadlines) if deadlines else None


class JobCreate(ChatCompletionRequest, JobOptions):
    """The body of ``POST /v1/jobs`` for a chat completion: a chat-completions body plus
    job options (``kind`` absent or ``"chat"``)."""

    kind: Literal["chat"] = Field(default="chat", exclude=True)
    """``chat`` (the default): never stored or hashed, so a body without it is the same job."""

    @property
    def job_kind(self) -> JobKind:
        return JobKind.CHAT

    def completion_request(self) -> ChatCompletionRequest:
        """The completion part of the body, without the job options."""
        data = self.model_dump(mode="json", exclude_none=True, exclude=set(JOB_OPTIONS))
        return ChatCompletionRequest.model_validate(data)

    def call_request(self) -> ChatCompletionRequest:
        """What the provider is asked: :meth:`completion_request`."""
        return self.completion_request()


class EmbeddingJobCreate(EmbeddingRequest, JobOptions):
    """The body of ``POST /v1/jobs`` for embeddings: ``{"kind": "embeddings"}``, an
    embeddings body (``model``, ``input``, ``dimensions``, ``encoding_format``) and job
    options."""

    kind: Literal["embeddings"]

    @property
    def job_kind(self) -> JobKind:
        return JobKind.EMBEDDINGS

    def call_request(self) -> EmbeddingRequest:
        """The embeddings part of the body, without the job options."""
        data = self.model_dump(mode="json", exclude_none=True, exclude=set(JOB_OPTIONS))
        return EmbeddingRequest.model_validate(data)


class CompletionJobCreate(TextCompletionRequest, JobOptions):
    """The body of ``POST /v1/jobs`` for a legacy completion: ``{"kind": "completions"}``,
    a ``/v1/completions`` body and job options."""

    kind: Literal["completions"]

    @property
    def job_kind(self) -> JobKind:
        return JobKind.COMPLETIONS

    def call_request(self) -> TextCompletionRequest:
        """The completion part of the body, without the job options."""
        data = self.model_dump(mode="json", exclude_none=True, exclude=set(JOB_OPTIONS))
        return TextCompletionRequest.model_validate(data)


class ImageJobCreate(ImageGenerationRequest, JobOptions):
    """The body of ``POST /v1/jobs`` for image generation: ``{"kind": "images"}``, a
    ``/v1/images/generations`` body and job options."""

    kind: Literal["images"]

    @property
    def job_kind(self) -> JobKind:
        return JobKind.IMAGES

    def call_request(self) -> ImageGenerationRequest:
        """The image generation part of the body, without the job options."""
        data = self.model_dump(mode="json", exclude_none=True, exclude=set(JOB_OPTIONS))
        return ImageGenerationRequest.model_validate(data)


class ResponsesJobCreate(ResponsesRequest, JobOptions):
    """The body of ``POST /v1/jobs`` for a response: ``{"kind": "responses"}``, a
    ``/v1/responses`` body (``store: false``) and job options. Its ``metadata`` is both
    the job's and the response's (OpenAI's Responses body has one of its own)."""

    kind: Literal["responses"]
    metadata: dict[str, str] = Field(default_factory=dict)

    @property
    def job_kind(self) -> JobKind:
        return JobKind.RESPONSES

    def call_request(self) -> ResponsesRequest:
        """The Responses part of the body: without the job options, ``metadata`` kept."""
        options = set(JOB_OPTIONS) - {"metadata"}
        data = self.model_dump(mode="json", exclude_none=True, exclude=options)
        if not data.get("metadata"):
            data.pop("metadata", None)
        return ResponsesRequest.model_validate(data)


JobCreateBody = (
    JobCreate | EmbeddingJobCreate | CompletionJobCreate | ImageJobCreate | ResponsesJobCreate
)
"""Any job body, parsed."""


def _kind_of(value: Any) -> str:
    """A job body's tag: its ``kind`` field, ``chat`` when absent (see ``KIND_TAG``)."""
    if isinstance(value, dict):
        kind = value.get("kind")
        return KIND_TAG + ("chat" if kind is None else str(kind))
    return KIND_TAG + str(getattr(value, "kind", "chat"))


JobBody = Annotated[
    Annotated[JobCreate, Tag(KIND_TAG + "chat")]
    | Annotated[EmbeddingJobCreate, Tag(KIND_TAG + "embeddings")]
    | Annotated[CompletionJobCreate, Tag(KIND_TAG + "completions")]
    | Annotated[ImageJobCreate, Tag(KIND_TAG + "images")]
    | Annotated[ResponsesJobCreate, Tag(KIND_TAG + "responses")],
    Discriminator(
        _kind_of,
        custom_error_type="invalid_job_kind",
        custom_error_message=(
            "kind must be 'chat' (the default), 'embeddings', 'completions', 'images' or "
            "'responses'"
        ),
    ),
]
"""The body of ``POST /v1/jobs``: chat unless ``kind`` says otherwise."""


class AttemptPublic(BaseModel):
    """One provider call made for a job."""

    object: Literal["job.attempt"] = "job.attempt"
    provider: str
    model: str
    status: str
    latency_ms: float
    error: dict[str, Any] | None = None
    created_at: float


class JobPublic(BaseModel):
    """A job as the API returns it."""

    id: str
    object: Literal["job"] = "job"
    status: JobStatus
    kind: JobKind = JobKind.CHAT
    """``chat``, ``embeddings``, ``completions``, ``images`` or ``responses``: what the job asks its
    provider for (its ``request`` and ``response`` are that endpoint's; an images job's
    response references its images' files instead of carrying their bytes)."""
    model: str
    provider: str
    priority: int
    metadata: dict[str, str]
    request: dict[str, Any]
    response: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    usage: dict[str, Any] | None = None
    cost_usd: float | None = None
    """What its usage cost, in US dollars, at the price of the deployment that served it
    (relayq's extension): 0 for a cached answer, null without usage or without a price."""
    cached: bool = False
    """Answered from the response cache: no provider call was made."""
    webhook: WebhookSpec | None = None
    """The job's own webhook, if it was given one."""
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    attempts: list[AttemptPublic] | None = None
    """Present when one job is retrieved; absent from listings."""
    batch_id: str | None = None
    """The batch this job is a request of, if any."""
    custom_id: str | None = None
    """Its ``custom_id`` in that batch."""


class JobList(BaseModel):
    """A page of jobs, newest first, in OpenAI's list shape."""

    object: Literal["list"] = "list"
    data: list[JobPublic]
    first_id: str | None
    last_id: str | None
    has_more: bool
