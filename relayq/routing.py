"""Model routing: which provider and upstream model serve a public model name."""

from __future__ import annotations

from dataclasses import dataclass

from relayq.settings import Settings

__all__ = ["Deployment", "UnknownModel", "resolve"]


@dataclass(frozen=True, kw_only=True)
class Deployment:
    route: str
    provider: str
    upstream_model: str


class UnknownModel(LookupError):
    """No route serves the requested model."""

    def __init__(self, model: str) -> None:
        super().__init__(model)
        self.model = model


def resolve(settings: Settings, model: str) -> Deployment:
    """The deployment serving ``model``; raises :class:`UnknownModel`."""
    route = settings.routes.get(model)
    if route is None:
        raise UnknownModel(model)
    return Deployment(route=model, provider=route.provider, upstream_model=route.model)
