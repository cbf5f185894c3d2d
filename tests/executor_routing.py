"""The routing the in-process executor tests run on: a plain route, and one whose first
deployment always fails with a 503 so its jobs fall back to the second."""

from __future__ import annotations

from relayq.config.routes import RoutingConfig

__all__ = ["ROUTING"]

ROUTING = RoutingConfig.model_validate(
    {
        "providers": {
            "down": {"type": "mock", "options": {"fault": "error", "status": 503}},
            "backup": {"type": "mock"},
            "mock": {"type": "mock"},
        },
        "routes": {
            "mock": {"provider": "mock", "model": "mock"},
            "resilient": {
                "strategy": "ordered",
                "deployments": [
                    {"provider": "down", "model": "m1"},
                    {"provider": "backup", "model": "m2"},
                ],
            },
        },
    }
)
