"""``/v1/admin``: operators' view of shared state, and their actions on it. Admin keys only.

Every action (a breaker reset, a drain, a resume) is written to the audit log
(:mod:`relayq.store.audit`) with the state before and after, the acting key
and the request id. The change itself is in Redis: it is made inside the audit
entry's transaction, which commits after it, so a change that failed is never
logged.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel

from api.deps import AdminCaller, ServicesDep
from api.errors import ERROR_RESPONSES, APIError
from api.observability import request_id_of
from api.services import Services
from relayq.auth.caller import Caller
from relayq.resilience.breaker import BreakerStatus
from relayq.resilience.resilience import deployment_id
from relayq.store.audit import AuditRecord, record_audit

__all__ = ["router"]

router = APIRouter(prefix="/v1/admin", tags=["admin"], responses=ERROR_RESPONSES)


class BreakerPublic(BaseModel):
    object: Literal["breaker"] = "breaker"
    deployment: str
    state: str
    consecutive_failures: int
    window_failures: int
    window_requests: int
    opened_at: float | None
    next_probe_at: float | None


class BreakerList(BaseModel):
    object: Literal["list"] = "list"
    data: list[BreakerPublic]


class DeploymentPublic(BaseModel):
    """A routed deployment as operators see it."""

    object: Literal["deployment"] = "deployment"
    id: str
    """``provider|model``, as breakers and metrics name it."""
    provider: str
    model: str
    """The upstream model."""
    routes: list[str]
    """The routes (model names callers use) it serves."""
    drained: bool
    """Routing gives it no new jobs; those it has run to their end."""
    drained_at: float | None
    breaker: str
    """Its circuit breaker's state: ``closed``, ``open`` or ``half_open``."""
    in_flight: int
    """Its unfinished jobs (queued or running), as routing counts them."""


class DeploymentList(BaseModel):
    object: Literal["list"] = "list"
    data: list[DeploymentPublic]


def _routed(services: Services) -> dict[str, tuple[str, str, list[str]]]:
    """Every routed deployment: its provider, upstream model and routes, by id."""
    found: dict[str, tuple[str, str, list[str]]] = {}
    for name, route in sorted(services.router.routing.routes.items()):
        for d in route.deployments:
            entry = found.setdefault(deployment_id(d.provider, d.model), (d.provider, d.model, []))
            if name not in entry[2]:
                entry[2].append(name)
    return dict(sorted(found.items()))


def _deployments(services: Services) -> list[str]:
    return list(_routed(services))


def _known(deployment: str, services: Services) -> None:
    if deployment not in _routed(services):
        raise APIError(
            404,
            f"No routed deployment '{deployment}' (use 'provider|model').",
            code="deployment_not_found",
            param="deployment",
        )


def _breaker_state(s: BreakerStatus) -> dict[str, Any]:
    return _breaker_public(s).model_dump(mode="json")


def _breaker_public(s: BreakerStatus) -> BreakerPublic:
    return BreakerPublic(
        deployment=s.deployment,
        state=s.state.value,
        consecutive_failures=s.consecutive_failures,
        window_failures=s.window_failures,
        window_requests=s.window_requests,
        opened_at=s.opened_at,
        next_probe_at=s.next_probe_at,
    )


Change = Callable[[], Awaitable[tuple[dict[str, Any], dict[str, Any]]]]
"""Makes an admin change; returns the state before it and after it."""


async def _audited(
    services: Services,
    request: Request,
    caller: Caller,
    *,
    action: str,
    target: str,
    change: Change,
) -> None:
    """Make ``change`` and log it as ``action`` on ``target``, in one transaction that
    commits once the change is made."""
    async with services.database.session() as session:
        before, after = await change()
        record_audit(
            session,
            AuditRecord(
                actor_key_id=caller.id,
                action=action,
                target=target,
                before=before,
                after=after,
                request_id=request_id_of(request.scope),
            ),
        )
        await session.commit()


@router.get("/breakers", response_model=BreakerList)
async def list_breakers(_: AdminCaller, services: ServicesDep) -> BreakerList:
    """The circuit breaker of every routed deployment, shared by all workers."""
    statuses = await services.breaker.status(_deployments(services))
    return BreakerList(data=[_breaker_public(s) for s in statuses])


@router.post("/breakers/{deployment:path}/reset", response_model=BreakerList)
async def reset_breaker(
    deployment: str, request: Request, caller: AdminCaller, services: ServicesDep
) -> BreakerList:
    """Close one deployment's breaker now (e.g. after fixing its credentials). Audited
    as ``breaker.reset``."""
    _known(deployment, services)

    async def reset() -> tuple[dict[str, Any], dict[str, Any]]:
        (before,) = await services.breaker.status([deployment])
        await services.breaker.reset(deployment)
        (after,) = await services.breaker.status([deployment])
        return _breaker_state(before), _breaker_state(after)

    await _audited(
        services, request, caller, action="breaker.reset", target=deployment, change=reset
    )
    return await list_breakers(caller, services)


@router.get("/deployments", response_model=DeploymentList)
async def list_deployments(_: AdminCaller, services: ServicesDep) -> DeploymentList:
    """Every routed deployment: drained or not, its breaker, its jobs in flight."""
    return DeploymentList(data=await _deployment_list(services))


async def _deployment_list(services: Services) -> list[DeploymentPublic]:
    routed = _routed(services)
    statuses = await services.breaker.status(list(routed))
    drained = await services.drains.every()
    in_flight = await services.routing_state.every_in_flight()
    return [
        DeploymentPublic(
            id=ident,
            provider=provider,
            model=model,
            routes=routes,
            drained=ident in drained,
            drained_at=drained.get(ident),
            breaker=status.state.value,
            in_flight=max(0, in_flight.get(ident, 0)),
        )
        for (ident, (provider, model, routes)), status in zip(routed.items(), statuses, strict=True)
    ]


async def _deployment(deployment: str, services: Services) -> DeploymentPublic:
    return next(d for d in await _deployment_list(services) if d.id == deployment)


def _drain_state(drained_at: float | None) -> dict[str, Any]:
    return {"drained": drained_at is not None, "drained_at": drained_at}


@router.post("/deployments/{deployment:path}/drain", response_model=DeploymentPublic)
async def drain_deployment(
    deployment: str, request: Request, caller: AdminCaller, services: ServicesDep
) -> DeploymentPublic:
    """Give the deployment no new jobs: routing picks the route's other deployments (a
    route whose every deployment is drained answers 503 ``route_unavailable``); the jobs
    it has run to their end. Every API process follows within one pub/sub message.
    Audited as ``deployment.drain``; draining a drained deployment keeps its time."""
    _known(deployment, services)

    async def drain() -> tuple[dict[str, Any], dict[str, Any]]:
        now = time.time()
        before = await services.drains.drain(deployment, now=now)
        return _drain_state(before), _drain_state(now if before is None else before)

    await _audited(
        services, request, caller, action="deployment.drain", target=deployment, change=drain
    )
    return await _deployment(deployment, services)


@router.post("/deployments/{deployment:path}/resume", response_model=DeploymentPublic)
async def resume_deployment(
    deployment: str, request: Request, caller: AdminCaller, services: ServicesDep
) -> DeploymentPublic:
    """Give a drained deployment new jobs again. Audited as ``deployment.resume``."""
    _known(deployment, services)

    async def resume() -> tuple[dict[str, Any], dict[str, Any]]:
        before = await services.drains.resume(deployment)
        return _drain_state(before), _drain_state(None)

    await _audited(
        services, request, caller, action="deployment.resume", target=deployment, change=resume
    )
    return await _deployment(deployment, services)
