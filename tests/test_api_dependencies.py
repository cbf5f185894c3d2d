"""The API's request handling stays on the event loop."""

from __future__ import annotations

import inspect
from collections.abc import Sequence

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from api.app import create_app
from relayq.config.settings import Settings


def _api_routes(routes: Sequence[BaseRoute]) -> list[APIRoute]:
    """The API's routes, through included routers (kept nested by FastAPI)."""
    found: list[APIRoute] = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append(route)
        included = getattr(route, "original_router", None)
        if included is not None:
            found += _api_routes(included.routes)
    return found


def _calls(dependant: Dependant) -> list[object]:
    calls: list[object] = [dependant.call] if dependant.call is not None else []
    for sub in dependant.dependencies:
        calls += _calls(sub)
    return calls


def test_every_route_and_dependency_is_a_coroutine() -> None:
    """FastAPI runs a plain-function handler or dependency in its thread pool:
    a thread hop, and a hand-off of the GIL each way, on every request."""
    app = create_app(Settings(), configure_logs=False)
    routes = _api_routes(app.routes)
    calls = [call for route in routes for call in _calls(route.dependant)]

    assert len(routes) > 20
    blocking = {
        getattr(call, "__qualname__", repr(call))
        for call in calls
        if not (inspect.iscoroutinefunction(call) or inspect.isasyncgenfunction(call))
    }
    assert blocking == set()
