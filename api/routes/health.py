"""Health probes: is this API process up, and would a job sent now be run.

- ``/livez``: the process answers; nothing else is checked.
- ``/readyz``: the database and Redis answer, and every provider queue a route
  sends jobs to has a worker that beat within ``health.worker_window_seconds``
  (the workers publish what they consume with each beat: relayq/recovery/handback.py).
- ``/healthz``: the old name, kept for what already calls it (compose files,
  ``relayq dev``): the database answers; Redis is reported, not required.
"""

from __future__ import annotations

import asyncio
import time
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text

from api.deps import ServicesDep
from api.services import Services
from relayq.observability.consumers import Consumer, consumers, last_seen

__all__ = ["Liveness", "Readiness", "ReadinessChecks", "router"]

router = APIRouter(tags=["health"])

_CHECK_SECONDS = 3.0
"""Longest a dependency may take to answer a probe: one that hangs is one that fails."""


class Liveness(BaseModel):
    """``/livez``: the process answers."""

    status: Literal["ok"] = "ok"


class ReadinessChecks(BaseModel):
    """What ``/readyz`` asked, and each answer."""

    database: str
    """``ok``, or ``error: <exception class>``."""
    redis: str
    """``ok``, or ``error: <exception class>``."""
    queues: dict[str, str]
    """Each routed provider's queue: ``ok``, or why it counts as having no consumer."""


class Readiness(BaseModel):
    """``/readyz``: ``ready`` (200) only when every check is ``ok``; else 503."""

    status: Literal["ready", "unready"]
    checks: ReadinessChecks


@router.get("/livez", response_model=Liveness)
async def livez() -> Liveness:
    """200 while the process answers; it asks nothing of the database or Redis."""
    return Liveness()


async def _database(services: Services) -> str:
    try:
        async with asyncio.timeout(_CHECK_SECONDS):
            async with services.database.session() as session:
                await session.execute(text("SELECT 1"))
    except Exception as exc:
        return f"error: {exc.__class__.__name__}"
    return "ok"


async def _redis(services: Services) -> str:
    try:
        async with asyncio.timeout(_CHECK_SECONDS):
            await services.redis.ping()
    except Exception as exc:
        return f"error: {exc.__class__.__name__}"
    return "ok"


async def _consumers(services: Services) -> list[Consumer] | str:
    """The workers' consumer records (the read doubles as Redis's check), or the error."""
    try:
        async with asyncio.timeout(_CHECK_SECONDS):
            return await consumers(services.redis, key_prefix=services.settings.key_prefix)
    except Exception as exc:
        return f"error: {exc.__class__.__name__}"


def _routed_queues(services: Services) -> list[str]:
    """The queues of every provider some route names (fallback deployments included).

    A provider reached only as ``<provider>/<model>`` (its published models) is not
    required: the routes are what the operator declared the service to be.
    """
    config = services.live.config
    providers = {d.provider for route in config.routes.values() for d in route.deployments}
    return sorted(services.settings.queue_for(provider) for provider in providers)


def _queue_checks(services: Services, found: list[Consumer]) -> dict[str, str]:
    window = services.settings.worker_window
    now = time.time()
    checks: dict[str, str] = {}
    for queue, seen in last_seen(found, _routed_queues(services)).items():
        if seen is not None and now - seen <= window:
            checks[queue] = "ok"
        elif seen is None:
            checks[queue] = f"no worker seen in {window:g} s"
        else:
            checks[queue] = f"no worker seen in {window:g} s (last {now - seen:.0f} s ago)"
    return checks


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Something a job needs is missing."}},
)
async def readyz(services: ServicesDep) -> JSONResponse:
    """200 when a job sent now would run: the database and Redis answer, and every
    provider queue a route uses has a worker seen consuming it within
    ``health.worker_window_seconds``. Otherwise 503, saying what is missing.

    Two round trips at most, run at once: ``SELECT 1``, and one ``HGETALL``.
    """
    database, found = await asyncio.gather(_database(services), _consumers(services))
    if isinstance(found, str):
        redis = found
        queues = dict.fromkeys(_routed_queues(services), "unknown: Redis did not answer")
    else:
        redis = "ok"
        queues = _queue_checks(services, found)
    ready = database == "ok" and redis == "ok" and all(v == "ok" for v in queues.values())
    body = Readiness(
        status="ready" if ready else "unready",
        checks=ReadinessChecks(database=database, redis=redis, queues=queues),
    )
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get("/healthz")
async def healthz(services: ServicesDep) -> JSONResponse:
    """200 when the database answers; Redis is reported but not required (an API whose
    broker is down still accepts jobs). The old name: new probes use ``/livez`` and
    ``/readyz``."""
    database, redis = await asyncio.gather(_database(services), _redis(services))
    healthy = database == "ok"
    return JSONResponse(
        {
            "status": "ok" if healthy else "degraded",
            "checks": {"database": database, "redis": redis},
        },
        status_code=200 if healthy else 503,
    )
