"""``/metrics``: Prometheus metrics of this API process and of the shared state.

Public, or for admin keys only (``api.metrics_access``): :func:`metrics_router`.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import func, select

from api.deps import ServicesDep, admin_key
from relayq.jobs import JobStatus
from relayq.metrics import SharedState
from relayq.resilience import deployment_id
from relayq.settings import MetricsAccess
from relayq.store.models import Job

__all__ = ["metrics_router"]

_PRIORITY_STEPS = range(1, 10)


def metrics_router(access: MetricsAccess) -> APIRouter:
    """The ``/metrics`` route, asking for an admin key when ``access`` says so."""
    guard = [Depends(admin_key)] if access is MetricsAccess.ADMIN else []
    router = APIRouter(tags=["health"], dependencies=guard)
    router.add_api_route("/metrics", metrics, methods=["GET"], include_in_schema=False)
    return router


async def metrics(services: ServicesDep) -> Response:
    """Counters of this process, then queued/running jobs, queues and breakers."""
    services.state_collector.state = await _read_state(services)
    return Response(generate_latest(services.exposed), media_type=CONTENT_TYPE_LATEST)


async def _read_state(services: ServicesDep) -> SharedState:
    async with services.database.session() as session:
        rows = (
            await session.execute(
                select(Job.status, Job.provider, func.count())
                .where(Job.status.in_([JobStatus.QUEUED.value, JobStatus.RUNNING.value]))
                .group_by(Job.status, Job.provider)
            )
        ).all()
    active = {(status, provider): int(count) for status, provider, count in rows}
    routing = services.router.routing
    deployments = sorted(
        {deployment_id(d.provider, d.model) for r in routing.routes.values() for d in r.deployments}
    )
    settings = services.settings
    queues = [settings.queue_for(name) for name in sorted(routing.providers)]
    queues.append(settings.webhooks.queue)
    async with services.redis.pipeline(transaction=False) as pipe:
        for queue in queues:
            pipe.llen(queue)
            for step in _PRIORITY_STEPS:
                pipe.llen(f"{queue}:{step}")
        lengths = await pipe.execute()
    per_queue = len(_PRIORITY_STEPS) + 1
    depths = {q: sum(lengths[i * per_queue : (i + 1) * per_queue]) for i, q in enumerate(queues)}
    in_flight_raw = await services.redis.hgetall(
        f"{services.settings.key_prefix}:routing:in_flight"
    )
    in_flight = {
        (k.decode() if isinstance(k, bytes) else str(k)): int(v) for k, v in in_flight_raw.items()
    }
    return SharedState(
        active_jobs=active,
        queue_depths=depths,
        in_flight=in_flight,
        breakers=await services.breaker.status(deployments),
    )
