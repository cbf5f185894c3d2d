"""``/metrics``: Prometheus metrics of this API process and of the shared state.

Public, or for admin keys only (``api.metrics_access``): :func:`metrics_router`.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import ServicesDep, admin_caller
from relayq.config.settings import MetricsAccess
from relayq.observability.metrics import BreakerReading, SharedState
from relayq.queueing.broker import queue_depths
from relayq.resilience.resilience import deployment_id
from relayq.store.counts import count_queued_and_running

__all__ = ["metrics_router"]


def metrics_router(access: MetricsAccess) -> APIRouter:
    """The ``/metrics`` route, asking for an admin key when ``access`` says so."""
    guard = [Depends(admin_caller)] if access is MetricsAccess.ADMIN else []
    router = APIRouter(tags=["health"], dependencies=guard)
    router.add_api_route("/metrics", metrics, methods=["GET"], include_in_schema=False)
    return router


async def metrics(services: ServicesDep) -> Response:
    """Counters of this process, then queued/running jobs, queues and breakers."""
    services.state_collector.state = await _read_state(services)
    return Response(generate_latest(services.exposed), media_type=CONTENT_TYPE_LATEST)


async def _read_state(services: ServicesDep) -> SharedState:
    async with services.database.session() as session:
        active = await count_queued_and_running(session)
    routing = services.router.routing
    deployments = sorted(
        {deployment_id(d.provider, d.model) for r in routing.routes.values() for d in r.deployments}
    )
    settings = services.settings
    queues = [settings.queue_for(name) for name in sorted(routing.providers)]
    queues.append(settings.webhooks.queue)
    breakers = await services.breaker.status(deployments)
    return SharedState(
        active_jobs=active,
        queue_depths=await queue_depths(services.redis, queues),
        in_flight=await services.routing_state.every_in_flight(),
        breakers=[BreakerReading(b.deployment, b.state.value, b.window_failures) for b in breakers],
    )
