"""The routing the in-process executor tests run on: a plain route, one whose first
deployment always fails with a 503 so its jobs fall back to the second, one with that
failing deployment alone, one limited to a request a minute, and (with :func:`with_openai`)
routes on the fake OpenAI server."""

from __future__ import annotations

from typing import Any

from relayq.config.routes import RoutingConfig

__all__ = ["ROUTING", "with_openai"]

_PROVIDERS: dict[str, Any] = {
    "down": {"type": "mock", "options": {"fault": "error", "status": 503}},
    "backup": {"type": "mock"},
    "mock": {"type": "mock"},
}
_ROUTES: dict[str, Any] = {
    "mock": {"provider": "mock", "model": "mock"},
    "resilient": {
        "strategy": "ordered",
        "deployments": [
            {"provider": "down", "model": "m1"},
            {"provider": "backup", "model": "m2"},
        ],
    },
    "down-only": {"provider": "down", "model": "m1"},
    "paced": {"deployments": [{"provider": "mock", "model": "paced", "rpm": 1}]},
}

ROUTING = RoutingConfig.model_validate({"providers": _PROVIDERS, "routes": _ROUTES})


def with_openai(base_url: str, api_key: str) -> RoutingConfig:
    """:data:`ROUTING` and the ``openai`` adapter on the fake at ``base_url``: route ``gpt``
    alone, and ``gpt-then-backup`` (falling back to the mock ``backup``)."""
    openai = {"type": "openai", "base_url": base_url, "api_key": api_key}
    routes = {
        "gpt": {"provider": "openai", "model": "gpt-4o-mini"},
        "gpt-then-backup": {
            "strategy": "ordered",
            "deployments": [
                {"provider": "openai", "model": "gpt-4o-mini"},
                {"provider": "backup", "model": "m2"},
            ],
        },
    }
    return RoutingConfig.model_validate(
        {"providers": {**_PROVIDERS, "openai": openai}, "routes": {**_ROUTES, **routes}}
    )
