"""``/v1/admin``: operators' view of shared state. Admin keys only."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel

from api.deps import AdminCaller, ServicesDep
from api.errors import ERROR_RESPONSES, APIError
from relayq.resilience.resilience import deployment_id

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


def _deployments(services: ServicesDep) -> list[str]:
    routing = services.router.routing
    found = {
        deployment_id(d.provider, d.model)
        for route in routing.routes.values()
        for d in route.deployments
    }
    return sorted(found)


@router.get("/breakers", response_model=BreakerList)
async def list_breakers(_: AdminCaller, services: ServicesDep) -> BreakerList:
    """The circuit breaker of every routed deployment, shared by all workers."""
    statuses = await services.breaker.status(_deployments(services))
    return BreakerList(
        data=[
            BreakerPublic(
                deployment=s.deployment,
                state=s.state.value,
                consecutive_failures=s.consecutive_failures,
                window_failures=s.window_failures,
                window_requests=s.window_requests,
                opened_at=s.opened_at,
                next_probe_at=s.next_probe_at,
            )
            for s in statuses
        ]
    )


@router.post("/breakers/{deployment:path}/reset", response_model=BreakerList)
async def reset_breaker(deployment: str, key: AdminCaller, services: ServicesDep) -> BreakerList:
    """Close one deployment's breaker now (e.g. after fixing its credentials)."""
    if deployment not in _deployments(services):
        raise APIError(
            404,
            f"No routed deployment '{deployment}' (use 'provider|model').",
            code="deployment_not_found",
            param="deployment",
        )
    await services.breaker.reset(deployment)
    return await list_breakers(key, services)
