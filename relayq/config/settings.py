"""relayq's settings: one object, built once per process and passed explicitly.

Every value can be set through the environment with the ``RELAYQ_`` prefix;
nested values use ``__`` (``RELAYQ_WORKER__CONCURRENCY=200``) and mappings
take JSON (``RELAYQ_ROUTES='{"gpt-4o": {"provider": "openai", "model": "gpt-4o"}}'``).
Nothing else in relayq reads ``os.environ`` (but :mod:`relayq.config.routes`, for
the variables a config file names with ``api_key_env``).
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from relayq.config.auth import AuthSettings, JwtAlgorithm, JwtIssuerSettings
from relayq.config.prices import ModelPrice
from relayq.config.routes import (
    ProviderSettings,
    RetrySettings,
    RouteSettings,
    RoutingConfig,
    load_routing_file,
    resolve_key_env,
)

__all__ = [
    "ApiSettings",
    "AuthSettings",
    "BatchSettings",
    "BreakerSettings",
    "BudgetSettings",
    "FileSettings",
    "HealthSettings",
    "JwtAlgorithm",
    "JwtIssuerSettings",
    "MetricsAccess",
    "ProviderSettings",
    "RetentionSettings",
    "RouteSettings",
    "Settings",
    "TracingSettings",
    "WebhookSettings",
    "WorkerSettings",
]


class BreakerSettings(BaseModel):
    """When a deployment's breaker opens, and how it tries the deployment again."""

    model_config = ConfigDict(extra="forbid")

    failure_threshold: int = Field(default=5, ge=1)
    """Consecutive failures that open the breaker."""
    failure_rate: float = Field(default=0.5, gt=0, le=1)
    """Share of failed calls in the window that opens the breaker (reached, not exceeded)."""
    window_seconds: float = Field(default=60.0, gt=0)
    min_requests: int = Field(default=20, ge=1)
    """Calls the window must hold before its failure rate counts."""
    cooldown_seconds: float = Field(default=30.0, gt=0)
    """How long an open breaker refuses every call before it lets probes through."""
    half_open_probes: int = Field(default=1, ge=1)
    """Probe calls allowed in flight at once while half-open."""
    probe_timeout_seconds: float = Field(default=120.0, gt=0)
    """A probe that has not reported back after this long frees its slot."""


class MetricsAccess(str, Enum):
    """Who may read the API's ``/metrics``."""

    PUBLIC = "public"
    """Anyone who reaches the port (keep it on a private network)."""
    ADMIN = "admin"
    """Callers with an admin key (``Authorization: Bearer <admin key>``)."""


class ApiSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8000
    max_body_bytes: int = Field(default=2 * 1024 * 1024, gt=0)
    """Largest request body accepted; larger ones answer 413."""
    page_size_max: int = 100
    key_requests_per_minute: int | None = Field(default=None, gt=0)
    """Requests per minute each key may make to job-creating routes (a key's own wins)."""
    key_max_concurrent_jobs: int | None = Field(default=None, gt=0)
    """Unfinished jobs each key may have at once (a key's own limit wins)."""
    key_tokens_per_minute: int | None = Field(default=None, gt=0)
    """Tokens each key may use per minute on job-creating routes (a key's own wins)."""
    key_tpm_window_seconds: float = Field(default=60.0, gt=0)
    """The length of a tokens-per-minute window. A minute; tests shorten it to see a
    window end without waiting a minute."""
    metrics: bool = True
    """Serve Prometheus metrics at /metrics."""
    metrics_access: MetricsAccess = MetricsAccess.PUBLIC
    """``admin`` asks /metrics for an admin key, as the admin API does. ``public``
    (the default, as /metrics was before this setting) suits a port only the
    scraper's network reaches."""
    access_log: bool = True
    """One JSON line per request (logger ``relayq.access``), with its request id."""
    key_cache_seconds: float = Field(default=5.0, ge=0)
    """How long the API keeps a found key in memory; a revocation or a new limit
    takes effect within this long. 0 looks every request's key up in SQL."""
    cors_origins: list[str] = Field(default_factory=list)
    """Origins whose browser pages may call the API (``["https://app.example"]``,
    ``["*"]`` for any). None by default: browsers refuse cross-origin calls, since
    an answer carries no ``Access-Control-Allow-Origin``. Callers still send their
    key in ``Authorization``; no cookie is ever honoured."""


class WorkerSettings(BaseModel):
    providers: list[str] | None = None
    """Providers whose queues this worker consumes; all configured ones when unset."""
    concurrency: int = Field(default=200, gt=0)
    """Jobs in flight per worker process, all on its event loop (Celery's prefetch)."""
    lease_seconds: float = Field(default=60.0, gt=0)
    """A running job whose lease is not renewed for this long is run again."""
    reconcile_interval: float = Field(default=5.0, gt=0)
    enqueue_grace_seconds: float = Field(default=10.0, ge=0)
    """A queued job without a confirmed message is re-enqueued after this long."""
    max_connections: int = Field(default=1000, gt=0)
    """Upstream HTTP connections per worker process."""
    task_events: bool = False
    """Send Celery's task events (received, started, succeeded) for every task.

    Off by default: each is a Redis publish from the worker. Flower turns
    them on in the workers it watches while it runs (its ``enable_events``
    option, on by default); ``relayq dev`` and the compose file, which run
    Flower, set this too so that no task goes unseen before Flower's first
    broadcast."""
    instance: str | None = None
    """This worker process's own id, set by its supervisor for each process it starts
    (a new one when unset): the owner of the jobs it claims (see relayq/recovery/handback.py)."""
    heartbeat_seconds: float = Field(default=5.0, gt=0)
    """A worker process says it is alive this often; one silent for three of these is
    taken for dead, and a live worker hands its jobs back (see relayq/recovery/handback.py)."""
    supervise: bool = True
    """``python -m worker`` restarts its Celery worker if it exits unasked.

    See worker/supervisor.py: Celery can exit when the broker drops mid-flight."""
    metrics_port: int = Field(default=0, ge=0)
    """Serve this worker's Prometheus metrics on 127.0.0.1:<port>; 0 turns it off."""
    metrics_host: str = "127.0.0.1"
    visibility_timeout: float = Field(default=300.0, gt=0)
    """Seconds before the broker redelivers an unacknowledged message."""
    webhooks: bool = True
    """Consume the webhooks queue too (deliveries run beside jobs, never in a job's slot)."""
    batches: bool = True
    """Consume the batches queue too (validating input files), and schedule batch requests."""
    admission_cache_seconds: float = Field(default=2.0, ge=0)
    """How long a deployment with no RPM or TPM limit, whose breaker Redis found
    closed with no cooldown, is admitted here without asking Redis again; a breaker
    that opens or a cooldown that starts ends it at once on every listening worker
    (relayq/resilience/clearance.py). 0 asks Redis before every call."""


_SILENT_BEATS = 3
"""Beats a worker may miss before the others take it for dead (relayq/recovery/handback.py)."""


class HealthSettings(BaseModel):
    """``GET /readyz`` and ``relayq health worker``: how recently a worker must have beat."""

    worker_window_seconds: float | None = Field(default=None, gt=0)
    """A worker process counts as consuming its queues while its last beat is at most
    this old. Unset: three of ``worker.heartbeat_seconds`` (15 s), when the other
    workers take it for dead. Keep it above the workers' heartbeat interval, or
    readiness flaps between beats."""


class TracingSettings(BaseModel):
    """OpenTelemetry traces (the ``otel`` extra; docs/production.md, "Traces").

    Where spans go and what is sampled are OpenTelemetry's own variables
    (``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_SERVICE_NAME``, ``OTEL_TRACES_SAMPLER``),
    read by its SDK.
    """

    enabled: bool = False
    """Span each request, job attempt and provider call (off: OpenTelemetry's SDK is
    not even imported)."""


class EventSettings(BaseModel):
    max_per_job: int = Field(default=10_000, gt=0)
    """Events kept per job (approximately); the oldest deltas go first."""
    retention_seconds: float = Field(default=24 * 3600.0, gt=0)
    """How long a job's events stay readable after it ends (Redis expires them itself:
    the purge of :class:`RetentionSettings` has nothing to do for events)."""
    heartbeat_seconds: float = Field(default=15.0, gt=0)
    """Interval of the SSE comment lines that keep idle connections open."""


class ChatSettings(BaseModel):
    """``POST /v1/chat/completions``: a job its caller waits on."""

    priority: int = Field(default=9, ge=0, le=9)
    cancel_on_disconnect: bool = True
    """Cancel the job when the caller goes away before it ends."""
    timeout_seconds: float = Field(default=600.0, gt=0)
    """Longest wait for the job; the job goes on, the caller gets a 504."""


class FileSettings(BaseModel):
    """``/v1/files``: uploaded batch inputs and generated batch results."""

    storage_dir: Path = Path(".relayq/files")
    """Where file contents are kept; the API and every worker must see the same directory."""
    max_bytes: int = Field(default=200 * 1024 * 1024, gt=0)
    """Largest upload, as OpenAI's Batch API allows."""
    max_lines: int = Field(default=50_000, gt=0)
    """Most lines (requests) in a batch input file."""


class BatchSettings(BaseModel):
    """Batches: many requests, each a job below interactive priority, scheduled fairly."""

    priority: int = Field(default=1, ge=0, le=9)
    """Job priority of batch requests (``/v1/jobs`` defaults to 5, chat to 9)."""
    window: int = Field(default=1000, gt=0)
    """Batch requests released to a provider's queue and not finished, at most, at once.

    The scheduler shares it between keys (then between a key's batches) in
    equal parts, so a large batch does not hold a provider for everyone else.
    Keep it above the workers' concurrency for the provider."""
    tick_seconds: float = Field(default=0.5, gt=0)
    """How often the scheduler releases requests and moves batches on."""
    idle_pass_seconds: float = Field(default=10.0, gt=0)
    """With no batch in progress, how often the scheduler looks in SQL all the same
    (a batch that starts or is cancelled wakes it within a tick)."""
    progress_seconds: float = Field(default=1.0, gt=0)
    """How often a batch's SSE progress stream looks at the batch."""
    queue: str = "batches"
    """The Celery queue that carries batch validation."""
    max_errors: int = Field(default=1000, gt=0)
    """Validation errors reported per batch (the rest are counted, not listed)."""
    max_inline_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    """Largest ``POST /v1/batches`` body with inline ``requests``."""


class BudgetSettings(BaseModel):
    """Key budgets (docs/usage.md#budgets)."""

    default_max_output_tokens: int = Field(default=4096, gt=0)
    """The completion tokens a request without ``max_tokens`` reserves, on a route without
    ``max_output_tokens``."""
    sweep_chunk: int = Field(default=500, gt=0)
    """Jobs the reconciler settles per pass when their end left a reservation behind."""


_DAY = 24 * 3600.0


class RetentionSettings(BaseModel):
    """How long what relayq stores is kept; the reconciler purges the rest (docs/production.md,
    "Retention"). Each period is in days; None keeps that kind of row forever.

    Job events are not here: Redis expires them after ``events.retention_seconds``.
    The usage ledger (``usage_days``) is never purged.
    """

    model_config = ConfigDict(extra="forbid")

    jobs_days: float | None = Field(default=30.0, gt=0)
    """Jobs of their own (not a batch's) that ended this long ago go, with their attempts,
    webhook deliveries and delivery attempts. Unfinished jobs are never purged."""
    batches_days: float | None = Field(default=30.0, gt=0)
    """Batches that ended this long ago go, with their requests (jobs) and deliveries.
    A live batch's requests are never purged, however old."""
    files_days: float | None = Field(default=None, gt=0)
    """Default expiry of uploaded files (and of inline batches' input files) when the
    upload names no ``expires_after``; None keeps them until deleted, as OpenAI does for
    user files (OpenAI gives ``purpose=batch`` uploads 30 days: set 30 to match)."""
    batch_output_days: float | None = Field(default=30.0, gt=0)
    """Default expiry of a batch's output and error files when the batch names no
    ``output_expires_after``: 30 days, as OpenAI keeps them."""
    audit_days: float | None = Field(default=365.0, gt=0)
    """Audit log entries older than this go."""
    purge_chunk: int = Field(default=500, gt=0)
    """Rows one purge pass deletes, at most, from each table: a pass stays short, and a
    backlog goes over the following passes."""
    purge_interval_seconds: float = Field(default=60.0, ge=0)
    """How often the reconciler (every ``worker.reconcile_interval`` under its lock) also
    purges; 0 purges on every pass."""

    def file_seconds(self) -> float | None:
        """Seconds an upload without ``expires_after`` is kept (None: until deleted)."""
        return None if self.files_days is None else self.files_days * _DAY

    def image_seconds(self) -> float | None:
        """Seconds a generated image's file is kept: as long as the job that made it
        (``jobs_days``; None: until deleted)."""
        return None if self.jobs_days is None else self.jobs_days * _DAY

    def batch_output_seconds(self) -> float | None:
        """Seconds a batch's output and error files are kept by default (None: until deleted)."""
        return None if self.batch_output_days is None else self.batch_output_days * _DAY


def _standard_schedule() -> list[float]:
    # Standard Webhooks' recommendation: immediately, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
    return [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0]


class WebhookSettings(BaseModel):
    """Signed webhooks for job outcomes (Standard Webhooks); see docs/webhooks.md."""

    queue: str = "webhooks"
    """The Celery queue deliveries go through."""
    retry_schedule: list[NonNegativeFloat] = Field(default_factory=_standard_schedule)
    """Seconds to wait before each retry; the first attempt is immediate.

    A delivery is given up after ``1 + len(retry_schedule)`` failed
    attempts. Each wait is jittered (see ``jitter``).
    """
    jitter: float = Field(default=1.0, ge=0, le=1)
    """Share of each retry wait drawn at random: 1 is full jitter (uniform in [0, wait])."""
    timeout_seconds: float = Field(default=15.0, gt=0)
    """Longest an attempt may take, connecting and waiting for the answer included."""
    max_connections: int = Field(default=100, gt=0)
    """Connections to receivers per worker process."""
    max_retry_after_seconds: float = Field(default=24 * 3600.0, ge=0)
    """A receiver's Retry-After is honoured up to this many seconds."""
    max_countdown_seconds: float = Field(default=900.0, gt=0)
    """Longest countdown put on one message; longer waits are taken in hops.

    Keep it well below ``worker.visibility_timeout``: the Redis transport
    redelivers a message held longer than that.
    """
    secret_overlap_seconds: float = Field(default=24 * 3600.0, ge=0)
    """After a rotation, how long the previous secret keeps signing beside the new one."""
    allow_private_destinations: bool = False
    """Accept endpoints on private, loopback or link-local addresses (tests, dev)."""


def _default_providers() -> dict[str, ProviderSettings]:
    return {"mock": ProviderSettings(type="mock")}


def _default_routes() -> dict[str, RouteSettings]:
    return {"mock": RouteSettings.model_validate({"provider": "mock", "model": "mock"})}


class Settings(BaseSettings):
    """All of relayq's configuration."""

    model_config = SettingsConfigDict(
        env_prefix="RELAYQ_",
        env_nested_delimiter="__",
        extra="ignore",
    )

    database_url: str = "sqlite:///.relayq/relayq.db"
    database_pool_size: int = Field(default=10, gt=0)
    """PostgreSQL connections per process (up to twice as many more under bursts)."""
    redis_url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "relayq"
    """Prefix of every Redis key relayq writes (besides Celery's own)."""
    log_level: str = "INFO"
    data_dir: Path = Path(".relayq")
    """Where the dev stack keeps its embedded Valkey and its dev key."""
    dev_api_key: SecretStr | None = None
    """The dev stack's API key; generated on first start when unset."""
    providers: dict[str, ProviderSettings] = Field(default_factory=_default_providers)
    routes: dict[str, RouteSettings] = Field(default_factory=_default_routes)
    prices: dict[str, ModelPrice] = Field(default_factory=dict)
    """Prices by upstream model (``RELAYQ_PRICES``), over relayq's defaults."""
    api: ApiSettings = Field(default_factory=ApiSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    """JWT issuers beside API keys (``RELAYQ_AUTH__JWT_ISSUERS``, JSON: docs/security.md)."""
    events: EventSettings = Field(default_factory=EventSettings)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    breaker: BreakerSettings = Field(default_factory=BreakerSettings)
    chat: ChatSettings = Field(default_factory=ChatSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    files: FileSettings = Field(default_factory=FileSettings)
    batches: BatchSettings = Field(default_factory=BatchSettings)
    budgets: BudgetSettings = Field(default_factory=BudgetSettings)
    health: HealthSettings = Field(default_factory=HealthSettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)

    config_file: Path | None = None
    """A YAML or TOML file declaring ``providers`` and ``routes`` (then not set here)."""
    config_poll_seconds: float = Field(default=2.0, gt=0)
    """How often workers and the API look for changes to ``config_file``."""
    models_ttl_seconds: float = Field(default=300.0, gt=0)
    """How long model lists fetched from providers are kept."""
    prometheus_multiproc_dir: Path | None = Field(
        default=None, validation_alias="PROMETHEUS_MULTIPROC_DIR"
    )
    """prometheus_client's own variable (no ``RELAYQ_`` prefix), for an API run as
    several processes in one container (``uvicorn --workers N``): each process
    writes its counters there, and /metrics adds up the files of all of them.
    Empty it before the processes start."""

    @model_validator(mode="after")
    def _load_routing(self) -> Settings:
        if self.config_file is not None:
            clash = {"providers", "routes", "prices"} & self.model_fields_set
            if clash:
                raise ValueError(
                    f"set {' and '.join(sorted(clash))} in the config file "
                    f"{self.config_file} or in the environment, not both"
                )
            routing = load_routing_file(self.config_file)
        else:
            routing = RoutingConfig(
                providers=resolve_key_env(self.providers), routes=self.routes, prices=self.prices
            )
        self.providers, self.routes, self.prices = routing.providers, routing.routes, routing.prices
        for name in self.worker.providers or []:
            if name not in self.providers:
                raise ValueError(f"worker.providers names unknown provider {name!r}")
        return self

    def routing(self) -> RoutingConfig:
        """The providers, routes and prices now in force, re-read from the config file if any."""
        if self.config_file is not None:
            return load_routing_file(self.config_file)
        return RoutingConfig(providers=self.providers, routes=self.routes, prices=self.prices)

    @property
    def worker_window(self) -> float:
        """Seconds since its last beat within which a worker counts as consuming its queues."""
        window = self.health.worker_window_seconds
        return window if window is not None else _SILENT_BEATS * self.worker.heartbeat_seconds

    def queue_for(self, provider: str) -> str:
        """The Celery queue a provider's jobs go to."""
        return f"llm.{provider}"

    @property
    def queues(self) -> list[str]:
        """The queues a worker consumes: its providers' (by default, all), webhooks and batches."""
        names = self.worker.providers if self.worker.providers is not None else self.providers
        queues = [self.queue_for(name) for name in sorted(names)]
        if self.worker.webhooks:
            queues.append(self.webhooks.queue)
        if self.worker.batches:
            queues.append(self.batches.queue)
        return queues
