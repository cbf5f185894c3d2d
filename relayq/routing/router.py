"""Model routing: which deployment (provider + upstream model) serves a job.

A requested model name resolves to a route (by name or alias) and the
route's strategy picks one deployment; ``<provider>/<model>`` reaches a model
a provider publishes directly. The choice is made once, at intake, because
it decides the job's queue (``llm.<provider>``). Deployments an operator
drained (:mod:`relayq.routing.drains`) get no new jobs.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from relayq.config.routes import DeploymentSettings, RouteSettings, RoutingConfig, Strategy
from relayq.providers import provider_type
from relayq.providers.base import Provider
from relayq.routing.drains import Drains
from relayq.routing.state import RoutingState, deployment_field
from relayq.schemas.jobs import JobKind

__all__ = ["Deployment", "RouteUnavailable", "Router", "UnknownModel"]

LATENCY_BUFFER = 0.1
"""Deployments within this fraction of the fastest share the traffic, not just the fastest."""


@dataclass(frozen=True, kw_only=True)
class Deployment:
    route: str
    provider: str
    upstream_model: str
    index: int = 0
    """Position in the route's deployments; fallback goes on from here, in order."""


class UnknownModel(LookupError):
    """No route serves the requested model."""

    def __init__(self, model: str, *, available: Sequence[str] = ()) -> None:
        super().__init__(model)
        self.model = model
        self.available = list(available)


class RouteUnavailable(LookupError):
    """Every deployment that could serve the requested model is drained."""

    def __init__(self, model: str, *, drained: Sequence[str]) -> None:
        super().__init__(model)
        self.model = model
        self.drained = list(drained)


PublishedModels = Callable[[str], Awaitable[frozenset[str] | None]]
"""A provider's published model ids (None if it publishes none)."""


class Router:
    """Resolves model names against one :class:`RoutingConfig`."""

    def __init__(
        self,
        routing: RoutingConfig,
        *,
        state: RoutingState | None = None,
        published: PublishedModels | None = None,
        rng: random.Random | None = None,
        drains: Drains | None = None,
    ) -> None:
        """``drains``: the deployments to give no new jobs (none when not given)."""
        self.routing = routing
        self._drains = drains
        self._state = state
        self._published = published
        self._rng = rng or random.Random()
        self._by_name: dict[str, str] = {}
        for name, route in routing.routes.items():
            self._by_name[name] = name
            for alias in route.aliases:
                self._by_name[alias] = name

    @property
    def model_names(self) -> list[str]:
        """Every routable name: routes and their aliases."""
        return sorted(self._by_name)

    def route(self, model: str) -> tuple[str, RouteSettings] | None:
        """The route (canonical name and settings) serving ``model``, if any."""
        name = self._by_name.get(model)
        return None if name is None else (name, self.routing.routes[name])

    def serves_embeddings(self, model: str) -> bool:
        """Whether some deployment of ``model``'s route is on an adapter that serves
        embeddings (asked of the adapter's type: no adapter is built)."""
        return self._some_adapter(model, lambda adapter, _: adapter.max_embedding_inputs > 0)

    def serves_text_completions(self, model: str) -> bool:
        """Whether some deployment of ``model``'s route is on an adapter that passes legacy
        completions (``/v1/completions``) on."""
        return self._some_adapter(model, lambda adapter, _: adapter.serves_text_completions)

    def serves_images(self, model: str) -> bool:
        """Whether some deployment of ``model``'s route is on an adapter that draws images
        (``/v1/images/generations``)."""
        return self._some_adapter(model, lambda adapter, _: adapter.serves_images)

    def speaks_responses(self, model: str) -> bool:
        """Whether some deployment of ``model``'s route is on an adapter that speaks
        OpenAI's Responses API natively (the others serve it translated over chat)."""
        return self._some_adapter(
            model, lambda adapter, options: adapter.speaks_responses_with(options)
        )

    def serves(self, model: str, kind: JobKind) -> bool:
        """Whether ``model``'s route has a deployment that serves ``kind`` (every one serves
        chat, and responses: natively or over chat)."""
        if kind is JobKind.EMBEDDINGS:
            return self.serves_embeddings(model)
        if kind is JobKind.COMPLETIONS:
            return self.serves_text_completions(model)
        if kind is JobKind.IMAGES:
            return self.serves_images(model)
        return True

    def _some_adapter(
        self, model: str, serves: Callable[[type[Provider], dict[str, Any]], bool]
    ) -> bool:
        """Whether ``serves(adapter, options)`` holds for a deployment of ``model``'s route."""
        found = self.route(model)
        if found is None:
            return False
        providers = self.routing.providers
        return any(
            deployment.provider in providers
            and serves(
                provider_type(providers[deployment.provider].type),
                providers[deployment.provider].options,
            )
            for deployment in found[1].deployments
        )

    async def choose(self, model: str, *, drained_too: bool = False) -> Deployment:
        """The deployment that should serve a new job for ``model``.

        Raises :class:`UnknownModel`, or :class:`RouteUnavailable` when every
        deployment of its route is drained (``drained_too``: choose among them
        all the same).
        """
        found = self.route(model)
        if found is not None:
            name, route = found
            deployments: Sequence[DeploymentSettings] = route.deployments
            if not drained_too:
                deployments = self._undrained(model, deployments)
            chosen = await self._pick(deployments, route.strategy)
            return Deployment(
                route=name,
                provider=chosen.provider,
                upstream_model=chosen.model,
                index=route.deployments.index(chosen),
            )
        direct = await self._direct(model, drained_too=drained_too)
        if direct is not None:
            return direct
        raise UnknownModel(model, available=self.model_names)

    async def _direct(self, model: str, *, drained_too: bool) -> Deployment | None:
        provider, _, upstream = model.partition("/")
        settings = self.routing.providers.get(provider)
        if not upstream or settings is None or not settings.list_models or not self._published:
            return None
        published = await self._published(provider)
        if published is None or upstream not in published:
            return None
        field = deployment_field(provider, upstream)
        if not drained_too and self._drains is not None and field in self._drains.drained:
            raise RouteUnavailable(model, drained=[field])
        return Deployment(route=model, provider=provider, upstream_model=upstream)

    def _undrained(
        self, model: str, deployments: Sequence[DeploymentSettings]
    ) -> Sequence[DeploymentSettings]:
        drained = self._drains.drained if self._drains is not None else None
        if not drained:  # the common case: nothing to filter
            return deployments
        kept = [d for d in deployments if deployment_field(d.provider, d.model) not in drained]
        if not kept:
            raise RouteUnavailable(
                model, drained=[deployment_field(d.provider, d.model) for d in deployments]
            )
        return kept

    async def _pick(
        self, deployments: Sequence[DeploymentSettings], strategy: Strategy
    ) -> DeploymentSettings:
        if len(deployments) == 1 or strategy is Strategy.ORDERED:
            return deployments[0]
        if strategy is Strategy.LEAST_IN_FLIGHT and self._state is not None:
            counts = await self._state.in_flight(deployments)
            fewest = min(counts)
            return self._weighted(
                [d for d, n in zip(deployments, counts, strict=True) if n == fewest]
            )
        if strategy is Strategy.LOWEST_LATENCY and self._state is not None:
            return self._fastest(deployments, await self._state.latencies(deployments))
        return self._weighted(deployments)

    def _weighted(self, deployments: Sequence[DeploymentSettings]) -> DeploymentSettings:
        return self._rng.choices(deployments, weights=[d.weight for d in deployments])[0]

    def _fastest(
        self, deployments: Sequence[DeploymentSettings], latencies: Sequence[float | None]
    ) -> DeploymentSettings:
        unmeasured = [d for d, ms in zip(deployments, latencies, strict=True) if ms is None]
        if unmeasured:
            # Measure every deployment before preferring one.
            return self._weighted(unmeasured)
        measured = [ms for ms in latencies if ms is not None]
        ceiling = min(measured) * (1 + LATENCY_BUFFER)
        close = [
            d
            for d, ms in zip(deployments, latencies, strict=True)
            if ms is not None and ms <= ceiling
        ]
        return self._weighted(close)
