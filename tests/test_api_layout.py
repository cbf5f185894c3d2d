"""The API's routes depend on relayq and on the API's shared plumbing, never on each other."""

from __future__ import annotations

import ast

from tests.stack import ROOT

_SHARED = {
    "api.controls",
    "api.deps",
    "api.errors",
    "api.services",
    "api.pages",
    "api.sse",
    "api.observability",
    "api.sync_calls",
}
"""What every route may import from ``api``: the plumbing routes share."""


def _api_imports(source: str) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module is not None:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found.update(name for name in names if name == "api" or name.startswith("api."))
    return found


def test_routes_import_no_other_route() -> None:
    routes = sorted((ROOT / "api" / "routes").glob("*.py"))
    assert len(routes) > 5
    imported = {path.name: _api_imports(path.read_text()) - _SHARED for path in routes}
    assert {name: found for name, found in imported.items() if found} == {}
