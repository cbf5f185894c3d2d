"""The FastAPI application factory: ``uvicorn api.app:create_app --factory``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

import relayq
from api.controls import document_controls
from api.errors import install_error_handlers
from api.limits import BodySizeLimit
from api.observability import REQUEST_ID_HEADER, RequestObserver
from api.request_checks import RequestChecks
from api.routes import (
    admin,
    audit,
    batches,
    budget,
    chat,
    completions,
    embeddings,
    events,
    files,
    health,
    images,
    jobs,
    keys,
    message_batches,
    messages,
    metrics,
    models,
    responses,
    usage,
    webhooks,
)
from api.services import Services
from api.sync_calls import JOB_HEADER
from relayq.config.settings import Settings
from relayq.heap import settle
from relayq.observability.logs import configure_logging
from relayq.observability.metrics import ApiMetrics
from relayq.observability.tracing import setup as setup_tracing

__all__ = ["create_app"]


CORS_REQUEST_HEADERS = [
    "anthropic-beta",
    "anthropic-version",
    "authorization",
    "content-type",
    "idempotency-key",
    "last-event-id",
    "x-api-key",
    "x-request-id",
]
"""What a browser page may send, beyond the headers browsers always allow."""
CORS_EXPOSED_HEADERS = [REQUEST_ID_HEADER, JOB_HEADER, "idempotent-replayed", "retry-after"]
"""What a browser page may read of an answer."""


def create_app(settings: Settings | None = None, *, configure_logs: bool = True) -> FastAPI:
    """Build the API; settings come from the environment unless given.

    Logging is configured here, not at startup: uvicorn builds the app
    (``--factory``) before it logs that it started, so its own lines are JSON
    too. ``configure_logs=False`` leaves the process's logging alone (the
    OpenAPI export, tests building an app in-process).
    """
    settings = settings or Settings()
    if configure_logs:
        configure_logging(settings.log_level)
    # Here, not in the lifespan: a process without the otel extra stops before it serves.
    setup_tracing(settings.tracing, service="relayq-api")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = Services(settings)
        services.start()
        await services.read_drains()
        app.state.services = services
        settle()
        try:
            yield
        finally:
            await services.aclose()

    app = FastAPI(
        title="relayq",
        version=relayq.__version__,
        summary="Queue-backed LLM completion jobs with an OpenAI-compatible face.",
        lifespan=lifespan,
        # FastAPI's own OpenTelemetry hooks ask the global providers on every
        # request whether they are set up (environment lookups each time: a few
        # percent of a job's API profile). relayq exports nothing through them.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    install_error_handlers(app)
    # Added first, so it runs inside the size limit: it reads whole bodies.
    app.add_middleware(RequestChecks)
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.api.max_body_bytes,
        per_path={
            # The file itself, plus room for the multipart framing.
            "/v1/files": settings.files.max_bytes + 64 * 1024,
            "/v1/batches": settings.batches.max_inline_bytes,
            "/v1/messages/batches": settings.batches.max_inline_bytes,
        },
    )

    def api_metrics() -> ApiMetrics | None:
        services: Services | None = getattr(app.state, "services", None)
        return services.api_metrics if services is not None else None

    if settings.api.cors_origins:
        # Inside the observer: a preflight's answer carries the request id too.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.api.cors_origins,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=CORS_REQUEST_HEADERS,
            expose_headers=CORS_EXPOSED_HEADERS,
            max_age=600,
        )
    # Outermost: the request id (and span, when tracing) covers every line logged while
    # the request runs.
    app.add_middleware(RequestObserver, metrics=api_metrics, access_log=settings.api.access_log)
    # A request is matched against the routes in the order they are included, one at a
    # time (each route tried costs about a microsecond here: POST /v1/jobs came after 20
    # others, 34 us of matching). The routes every job or call takes come first. No two
    # routers' paths overlap, so the order decides nothing else.
    app.include_router(jobs.router)
    app.include_router(chat.router)
    app.include_router(events.router)
    app.include_router(embeddings.router)
    app.include_router(completions.router)
    app.include_router(images.router)
    app.include_router(messages.router)
    app.include_router(responses.router)
    app.include_router(models.router)
    app.include_router(health.router)
    if settings.api.metrics:
        app.include_router(metrics.metrics_router(settings.api.metrics_access))
    app.include_router(admin.router)
    app.include_router(keys.router)
    app.include_router(audit.router)
    app.include_router(message_batches.router)
    app.include_router(webhooks.router)
    app.include_router(files.router)
    app.include_router(batches.router)
    app.include_router(usage.router)
    app.include_router(budget.router)
    document_controls(app)
    return app
