"""ORM tables. API schemas live apart from these, in :mod:`relayq.schemas.jobs`."""

from __future__ import annotations

from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "ApiKey",
    "Attempt",
    "AuditEntry",
    "Base",
    "Batch",
    "BudgetSpend",
    "File",
    "Job",
    "UsageDay",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WebhookSecret",
]


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON}


class ApiKey(Base):
    """A caller's credential. Only the SHA-256 of the secret is stored."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hint: Mapped[str] = mapped_column(String(16))
    """The key's last characters, to tell keys apart in listings."""
    created_at: Mapped[float] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float, default=None)
    scopes: Mapped[list[str]] = mapped_column(JSON)
    """What the key may call (:mod:`relayq.auth.scopes`); ``admin`` opens the admin API."""
    models: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    """The models (route names) the key may ask for; None: every model."""
    requests_per_minute: Mapped[int | None] = mapped_column(Integer, default=None)
    max_concurrent_jobs: Mapped[int | None] = mapped_column(Integer, default=None)
    tokens_per_minute: Mapped[int | None] = mapped_column(Integer, default=None)
    """This key's limits; None takes the API's defaults."""
    expires_at: Mapped[float | None] = mapped_column(Float, default=None)
    """The key stops working at this time (None: never)."""
    last_used_at: Mapped[float | None] = mapped_column(Float, default=None)
    """When a request last came with the key (written at most once a minute)."""
    previous_hash: Mapped[str | None] = mapped_column(String(64), default=None, index=True)
    previous_expires_at: Mapped[float | None] = mapped_column(Float, default=None)
    """A rotated key's old secret, which still works until ``previous_expires_at``."""
    budget_period: Mapped[str | None] = mapped_column(String(16), default=None)
    """``day`` or ``month`` (UTC): the window ``budget_usd`` and ``budget_tokens`` cover."""
    budget_usd: Mapped[float | None] = mapped_column(Float, default=None)
    budget_tokens: Mapped[int | None] = mapped_column(Integer, default=None)
    """What the key may spend per period; None: no limit of that kind."""
    source: Mapped[str] = mapped_column(String(16), default="key", server_default="key")
    """``key``: an API key with a secret; ``jwt``: the tenant of verified JWTs (no secret:
    ``key_hash`` is a digest of ``subject``), which owns the jobs its tokens make."""
    subject: Mapped[str | None] = mapped_column(String(400), default=None, unique=True)
    """For ``jwt`` rows: ``issuer|tenant``."""

    @property
    def admin(self) -> bool:
        """May use the admin API."""
        return "admin" in self.scopes


class Job(Base):
    """One completion job and its outcome.

    ``run`` counts claims: each worker that takes the job increments it and
    writes the outcome only while it still matches (a fencing token), so a
    job is finished once however many workers ran it.
    """

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"))
    status: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(16), default="chat", server_default="chat")
    """What the job asks its provider for: ``chat`` or ``embeddings`` (its request's shape)."""
    model: Mapped[str] = mapped_column(String(200))
    route: Mapped[str] = mapped_column(String(200))
    provider: Mapped[str] = mapped_column(String(100))
    upstream_model: Mapped[str] = mapped_column(String(200))
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    response: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    usage: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    priority: Mapped[int] = mapped_column(Integer)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), default=None)
    request_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    cached: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    """Answered from the response cache, without a provider call."""
    cache_key: Mapped[str | None] = mapped_column(String(200), default=None)
    cache_ttl: Mapped[float | None] = mapped_column(Float, default=None)
    """Where and for how long to cache a successful answer (None: not cached)."""
    webhook: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    """The job's own webhook ``{url, events}``; None: the key's default endpoint, if any."""
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """Provider calls made for the job, across its deployments."""
    deployment_index: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """Which of its route's deployments the job is on (fallback moves it on)."""
    deployment_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    first_deployment: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """The deployment the route's strategy chose; fallback wraps around to it."""
    not_before: Mapped[float | None] = mapped_column(Float, default=None)
    """A retry or a rate-limit wait: the job is not to run before this time."""
    expires_at: Mapped[float | None] = mapped_column(Float, default=None)
    """A queued job not started by this time expires instead of running."""
    run: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[float] = mapped_column(Float)
    enqueued_at: Mapped[float | None] = mapped_column(Float, default=None)
    started_at: Mapped[float | None] = mapped_column(Float, default=None)
    finished_at: Mapped[float | None] = mapped_column(Float, default=None)
    lease_expires_at: Mapped[float | None] = mapped_column(Float, default=None)
    batch_id: Mapped[str | None] = mapped_column(ForeignKey("batches.id"), default=None)
    """The batch the job is a request of (None: a job of its own)."""
    custom_id: Mapped[str | None] = mapped_column(String(512), default=None)
    """The request's ``custom_id`` in its batch."""
    held: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    """A batch request the scheduler has not released to its queue yet (no message)."""
    owner: Mapped[str | None] = mapped_column(String(64), default=None)
    """The worker process (its instance id) whose claim holds the job while it runs: its
    supervisor hands the job back at once if that process dies."""
    reply_to: Mapped[str | None] = mapped_column(String(200), default=None)
    """The reply stream of the API process whose caller waits on this job (a sync chat
    completion): every run sends its deltas and its end there."""
    cost_usd: Mapped[float | None] = mapped_column(Float, default=None)
    """What the job cost at the price of the deployment that served it (None: unpriced)."""
    reserved_usd: Mapped[float | None] = mapped_column(Float, default=None)
    reserved_tokens: Mapped[int | None] = mapped_column(Integer, default=None)
    """The worst case the job reserved from its key's budget at submit."""
    budget_window: Mapped[str | None] = mapped_column(String(16), default=None)
    """The budget window (``2026-12-05`` or ``2026-12``) holding the job's reservation,
    until it is settled (cost booked) or refunded; None: nothing reserved or settled."""

    __table_args__ = (
        UniqueConstraint("key_id", "idempotency_key", name="uq_jobs_key_idempotency"),
        Index("ix_jobs_key_id_id", "key_id", "id"),
        Index("ix_jobs_status_enqueued", "status", "enqueued_at"),
        Index("ix_jobs_status_lease", "status", "lease_expires_at"),
        Index("ix_jobs_owner_status", "owner", "status"),
        # Covers the scheduler's and the request counts' grouped count of a batch's jobs.
        Index("ix_jobs_batch_status", "batch_id", "status", "held", "provider"),
        Index("ix_jobs_finished_at", "finished_at"),
        Index("ix_jobs_budget_window", "budget_window"),
    )


class File(Base):
    """An uploaded or generated file; its bytes live in the file storage, not in SQL."""

    __tablename__ = "files"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"))
    purpose: Mapped[str] = mapped_column(String(32))
    filename: Mapped[str] = mapped_column(String(512))
    bytes: Mapped[int] = mapped_column(Integer)
    lines: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float | None] = mapped_column(Float, default=None)
    """When the file goes: its own ``expires_after``, else the retention settings'
    default for its kind (None: kept until deleted). An expired file is not found,
    and the purge deletes its row and its bytes."""
    deleted_at: Mapped[float | None] = mapped_column(Float, default=None)

    __table_args__ = (
        Index("ix_files_key_id_id", "key_id", "id"),
        Index("ix_files_expires_at", "expires_at"),
    )


class Batch(Base):
    """A batch of requests: each one is a job (``jobs.batch_id``) on the provider queues.

    Request counts are not stored: they are counted from the jobs, so they
    are exact whatever runs concurrently.
    """

    __tablename__ = "batches"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"))
    status: Mapped[str] = mapped_column(String(16))
    endpoint: Mapped[str] = mapped_column(String(64))
    input_file_id: Mapped[str] = mapped_column(String(40))
    completion_window: Mapped[str] = mapped_column(String(16))
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON, default=None)
    errors: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    """``{"object": "list", "data": [{code, message, param, line}]}`` when validation failed."""
    webhook: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    models: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    """The models its caller could ask for when it made the batch (a key's allow-list, or
    a JWT's ``models`` claim), which the batch's lines are checked against; None: every
    model."""
    priority: Mapped[int] = mapped_column(Integer)
    total: Mapped[int] = mapped_column(Integer, default=0)
    output_file_id: Mapped[str | None] = mapped_column(String(40), default=None)
    error_file_id: Mapped[str | None] = mapped_column(String(40), default=None)
    output_expires_after: Mapped[int | None] = mapped_column(Integer, default=None)
    """Seconds the output and error files are kept after they are written (the create's
    ``output_expires_after``); None: the retention settings' default."""
    enqueued_at: Mapped[float | None] = mapped_column(Float, default=None)
    """When the broker took the validation message (None: not yet confirmed)."""
    idempotency_key: Mapped[str | None] = mapped_column(String(255), default=None)
    request_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)
    in_progress_at: Mapped[float | None] = mapped_column(Float, default=None)
    finalizing_at: Mapped[float | None] = mapped_column(Float, default=None)
    completed_at: Mapped[float | None] = mapped_column(Float, default=None)
    failed_at: Mapped[float | None] = mapped_column(Float, default=None)
    expired_at: Mapped[float | None] = mapped_column(Float, default=None)
    cancelling_at: Mapped[float | None] = mapped_column(Float, default=None)
    cancelled_at: Mapped[float | None] = mapped_column(Float, default=None)

    __table_args__ = (
        UniqueConstraint("key_id", "idempotency_key", name="uq_batches_key_idempotency"),
        Index("ix_batches_key_id_id", "key_id", "id"),
        Index("ix_batches_status", "status"),
    )


class Attempt(Base):
    """One call to a provider on behalf of a job."""

    __tablename__ = "attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    run: Mapped[int] = mapped_column(Integer)
    provider: Mapped[str] = mapped_column(String(100))
    upstream_model: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))
    latency_ms: Mapped[float] = mapped_column(Float)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    created_at: Mapped[float] = mapped_column(Float)


class WebhookEndpoint(Base):
    """A key's default webhook endpoint (at most one per key)."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"), unique=True)
    url: Mapped[str] = mapped_column(String(2048))
    events: Mapped[list[str]] = mapped_column(JSON)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled_reason: Mapped[str | None] = mapped_column(String(500), default=None)
    disabled_at: Mapped[float | None] = mapped_column(Float, default=None)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class WebhookSecret(Base):
    """A key's signing secret. Kept in clear: signing needs it (only hashes of API keys are).

    ``expires_at`` is None for the current secret; a rotation gives the
    previous ones an end, and they sign beside the new one until then.
    """

    __tablename__ = "webhook_secrets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"), index=True)
    secret: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float | None] = mapped_column(Float, default=None)


class WebhookDelivery(Base):
    """One job event to send to one endpoint, written with the job's outcome (an outbox).

    ``id`` is the ``webhook-id`` of every attempt. ``run`` counts claims, as
    on jobs: a worker sends only while its claim is the latest, so one
    outcome is recorded however many messages arrive. ``endpoint_id`` names
    the key's endpoint it goes to (no foreign key: deleting the endpoint
    ends its pending deliveries); None means the job's own webhook.
    """

    __tablename__ = "webhook_deliveries"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id"), default=None)
    batch_id: Mapped[str | None] = mapped_column(ForeignKey("batches.id"), default=None)
    """A delivery is of a job's event or of a batch's (``batch.completed``...)."""
    key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"))
    endpoint_id: Mapped[str | None] = mapped_column(String(40), default=None)
    event: Mapped[str] = mapped_column(String(40))
    url: Mapped[str] = mapped_column(String(2048))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(500), default=None)
    run: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[float | None] = mapped_column(Float, default=None)
    enqueued_at: Mapped[float | None] = mapped_column(Float, default=None)
    """When the broker took the message for the next attempt (None: not yet)."""
    leased_until: Mapped[float | None] = mapped_column(Float, default=None)
    """Set while an attempt is in flight; a lapsed one means its worker died."""
    created_at: Mapped[float] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float, default=None)

    __table_args__ = (
        Index("ix_webhook_deliveries_job_id_id", "job_id", "id"),
        Index("ix_webhook_deliveries_status_next", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_batch_id", "batch_id"),
    )


class WebhookAttempt(Base):
    """One HTTP request made for a delivery."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(ForeignKey("webhook_deliveries.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    url: Mapped[str] = mapped_column(String(2048))
    status_code: Mapped[int | None] = mapped_column(Integer, default=None)
    error: Mapped[str | None] = mapped_column(String(1000), default=None)
    latency_ms: Mapped[float] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float)


class AuditEntry(Base):
    """One admin action: who did what to which object, and the object before and after."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[float] = mapped_column(Float, index=True)
    actor_key_id: Mapped[str] = mapped_column(String(40))
    action: Mapped[str] = mapped_column(String(64))
    """``key.create``, ``key.update``, ``key.rotate``, ``key.revoke``, ``breaker.reset``,
    ``deployment.drain``, ``deployment.resume``..."""
    target: Mapped[str] = mapped_column(String(200))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    request_id: Mapped[str | None] = mapped_column(String(64), default=None)


class UsageDay(Base):
    """What one key spent on one model in one UTC day (and batch): the usage ledger.

    Booked in the transaction that records each job's outcome, so it is exact
    whatever crashes, and kept after the jobs themselves are purged.
    """

    __tablename__ = "usage_days"

    key_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    day: Mapped[str] = mapped_column(String(10), primary_key=True)
    """``2026-12-05`` (UTC), the day the job finished."""
    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    batch_id: Mapped[str] = mapped_column(String(40), primary_key=True, default="")
    """The batch the jobs belonged to; ``""`` for jobs of their own."""
    requests: Mapped[int] = mapped_column(Integer, default=0)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cached_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)


class BudgetSpend(Base):
    """A key's budget window: what its unfinished jobs reserved and its finished ones spent.

    A job reserves its worst case with a conditional update of this row (so two
    API processes cannot both take the last of a budget) in the transaction
    that inserts it; its outcome's transaction moves the reservation to
    ``spent_*`` at its real cost, and a cancel or failure hands it back.
    """

    __tablename__ = "budget_spend"

    key_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    window: Mapped[str] = mapped_column(String(16), primary_key=True)
    reserved_usd: Mapped[float] = mapped_column(Float, default=0.0)
    reserved_tokens: Mapped[int] = mapped_column(Integer, default=0)
    spent_usd: Mapped[float] = mapped_column(Float, default=0.0)
    spent_tokens: Mapped[int] = mapped_column(Integer, default=0)
