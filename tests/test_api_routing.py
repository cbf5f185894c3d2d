"""The routes every job or call takes are matched first, and the routers' order decides
nothing else (see the comment in ``api.app.create_app``)."""

from __future__ import annotations

import re

from starlette.routing import BaseRoute, Match

from api.app import create_app
from relayq.config.settings import Settings


def _routers(app_routes: list[BaseRoute]) -> list[tuple[int, BaseRoute]]:
    """Every route, with the index of the included router it belongs to (-1: the app's own)."""
    found: list[tuple[int, BaseRoute]] = []
    for index, route in enumerate(app_routes):
        included = getattr(route, "original_router", None)
        if included is None:
            found.append((-1, route))
        else:
            found += [(index, inner) for inner in included.routes]
    return found


def _example(path: str) -> str:
    """A concrete path for ``path``'s pattern (``{x:path}`` as two segments)."""
    return re.sub(r"\{[^}]+\}", "abc", re.sub(r"\{[^}:]+:path\}", "a/b", path))


def _scope(method: str, path: str) -> dict[str, object]:
    return {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}


def test_no_path_is_matched_by_routes_of_two_routers() -> None:
    routes = _routers(create_app(Settings(), configure_logs=False).router.routes)
    with_paths = [(router, route) for router, route in routes if hasattr(route, "path_regex")]

    assert len(with_paths) > 40
    for _, route in with_paths:
        example = _example(route.path)  # type: ignore[attr-defined]
        owners = {router for router, other in with_paths if other.path_regex.fullmatch(example)}
        assert len(owners) == 1, f"{example} is matched by routes of {len(owners)} routers"


def test_the_job_and_call_routes_are_tried_before_the_admin_api() -> None:
    app = create_app(Settings(), configure_logs=False)
    routes = [route for _, route in _routers(app.router.routes)]

    def tried_before(method: str, path: str) -> int:
        for position, route in enumerate(routes):
            if route.matches(_scope(method, path))[0] is Match.FULL:
                return position
        raise AssertionError(f"no route for {method} {path}")

    first_admin = min(
        position
        for position, route in enumerate(routes)
        if getattr(route, "path", "").startswith("/v1/admin/")
    )
    for method, path in [
        ("POST", "/v1/jobs"),
        ("GET", "/v1/jobs/job_1"),
        ("POST", "/v1/chat/completions"),
        ("GET", "/v1/jobs/job_1/events"),
        ("POST", "/v1/embeddings"),
        ("POST", "/v1/completions"),
        ("POST", "/v1/messages"),
        ("POST", "/v1/responses"),
    ]:
        assert tried_before(method, path) < first_admin, f"{method} {path}"
    # POST /v1/jobs comes right after FastAPI's own documentation routes.
    assert tried_before("POST", "/v1/jobs") <= 4
