"""Providers and model routes: their schema, and the YAML or TOML file that declares them.

A route maps a public model name (and its aliases) to an ordered list of
deployments (provider + upstream model + weight + limits) and a strategy for
picking among them. The same schema is read from the environment
(``RELAYQ_PROVIDERS`` / ``RELAYQ_ROUTES``) or from the file named by
``RELAYQ_CONFIG_FILE``, which workers and the API re-read when it changes.
"""

from __future__ import annotations

import os
import tomllib
from enum import Enum
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    model_validator,
)

from relayq.config.prices import DEFAULT_PRICES, ModelPrice, price_of_model

__all__ = [
    "CacheSettings",
    "ConfigError",
    "DeploymentSettings",
    "ProviderSettings",
    "RetrySettings",
    "RouteSettings",
    "RoutingConfig",
    "Strategy",
    "load_routing_file",
    "resolve_key_env",
]


class ConfigError(ValueError):
    """A configuration that cannot be used, with a message saying where and why."""


class ProviderSettings(BaseModel):
    """One configured upstream: which adapter speaks to it and how to reach it."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(description="Adapter type, e.g. 'mock', 'openai', 'anthropic'.")
    base_url: str | None = None
    """The vendor's API root; each adapter has the vendor's public one as default."""
    api_key: SecretStr | None = None
    """The key itself (environment only); config files name ``api_key_env`` instead."""
    api_key_env: str | None = None
    """The environment variable holding the key, read when settings are built."""
    connect_timeout: float = Field(default=10.0, gt=0)
    read_timeout: float = Field(default=600.0, gt=0)
    total_timeout: float | None = Field(default=None, gt=0)
    """The longest a whole call (a stream included) may take; unbounded when unset."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Extra headers sent with every call (they win over the adapter's own)."""
    options: dict[str, Any] = Field(default_factory=dict)
    """Adapter-specific options (e.g. Azure's ``api_version``), validated by the adapter."""
    list_models: bool = True
    """Offer the models this provider publishes (if it does) as ``<provider>/<model>``."""
    stream_upstream: bool = True
    """Ask the upstream to stream the calls of streamed jobs (the others always ask
    for the whole answer). Off, every call asks for the whole answer and
    relays it as chunks, for servers that cannot stream or stream badly: callers
    still get a stream, but its text arrives in one piece once the answer is done."""


class Strategy(str, Enum):
    """How a route picks one of its deployments for a job."""

    ORDERED = "ordered"
    """Always the first deployment; the others are its fallbacks, in order."""
    WEIGHTED = "weighted"
    """At random, in proportion to each deployment's weight."""
    LEAST_IN_FLIGHT = "least_in_flight"
    """The deployment with the fewest unfinished jobs, across every process."""
    LOWEST_LATENCY = "lowest_latency"
    """The deployment with the lowest moving average (EWMA) latency."""


class DeploymentSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    provider: str
    model: str
    """The model's name at the provider (for Azure, the deployment name)."""
    weight: float = Field(default=1.0, gt=0)
    rpm: int | None = Field(default=None, gt=0)
    """Requests per minute this deployment may take (enforced by the rate limiter)."""
    tpm: int | None = Field(default=None, gt=0)
    """Tokens per minute this deployment may take (enforced by the rate limiter)."""
    price: ModelPrice | None = None
    """What its tokens cost; unset, the routing file's ``prices`` or relayq's defaults
    for its model say (:mod:`relayq.config.prices`)."""


class CacheSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    ttl_seconds: float = Field(default=3600.0, gt=0)


class RouteSettings(BaseModel):
    """A public model name served by one or more deployments."""

    model_config = ConfigDict(extra="forbid")

    deployments: list[DeploymentSettings] = Field(min_length=1)
    strategy: Strategy = Strategy.WEIGHTED
    aliases: list[str] = Field(default_factory=list)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    max_output_tokens: int | None = Field(default=None, gt=0)
    """The completion tokens a request without ``max_tokens`` (or ``max_completion_tokens``)
    is assumed to use at worst, when a key's budget reserves it (relayq/budgets/estimate.py);
    unset, the setting ``RELAYQ_BUDGETS__DEFAULT_MAX_OUTPUT_TOKENS``."""

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, data: Any) -> Any:
        """``{provider, model}`` is shorthand for a route with that one deployment."""
        if isinstance(data, dict) and "deployments" not in data and "provider" in data:
            data = dict(data)
            deployment = {k: data.pop(k) for k in ("provider", "model", "weight") if k in data}
            data["deployments"] = [deployment]
        return data


class RoutingConfig(BaseModel):
    """Providers and routes, checked against each other."""

    model_config = ConfigDict(extra="forbid")

    providers: dict[str, ProviderSettings]
    routes: dict[str, RouteSettings]
    prices: dict[str, ModelPrice] = Field(default_factory=dict)
    """Prices by upstream model name, over relayq's defaults (a deployment's own wins)."""

    _found: dict[tuple[str, str], ModelPrice | None] = PrivateAttr(default_factory=dict)

    def price_of(self, deployment: DeploymentSettings) -> ModelPrice | None:
        """``deployment``'s price: its own, else this file's ``prices``, else relayq's
        defaults, by its upstream model (:func:`relayq.config.prices.price_of_model`)."""
        if deployment.price is not None:
            return deployment.price
        key = (deployment.provider, deployment.model)
        if key not in self._found:
            self._found[key] = price_of_model(deployment.model, self.prices) or price_of_model(
                deployment.model, DEFAULT_PRICES
            )
        return self._found[key]

    @model_validator(mode="after")
    def _references_resolve(self) -> RoutingConfig:
        known = ", ".join(sorted(self.providers)) or "none"
        names: dict[str, str] = {}
        for route_name, route in self.routes.items():
            for deployment in route.deployments:
                if deployment.provider not in self.providers:
                    raise ValueError(
                        f"route {route_name!r} names provider {deployment.provider!r}, which "
                        f"is not defined (defined providers: {known})"
                    )
            for name in [route_name, *route.aliases]:
                if name in names and names[name] != route_name:
                    raise ValueError(
                        f"model name {name!r} is claimed by routes {names[name]!r} "
                        f"and {route_name!r}"
                    )
                names[name] = route_name
        return self


class RetrySettings(BaseModel):
    max_attempts_per_deployment: int = Field(default=3, ge=1)
    """Calls to one deployment for one job before falling back to the next."""
    max_attempts: int = Field(default=10, ge=1)
    """Calls for one job across all its deployments."""
    backoff_base_seconds: float = Field(default=1.0, gt=0)
    backoff_max_seconds: float = Field(default=60.0, gt=0)


def resolve_key_env(
    providers: dict[str, ProviderSettings], environ: dict[str, str] | None = None
) -> dict[str, ProviderSettings]:
    """Providers with ``api_key`` filled from the variable ``api_key_env`` names."""
    source = os.environ if environ is None else environ
    resolved = {}
    for name, provider in providers.items():
        if provider.api_key is None and provider.api_key_env and provider.api_key_env in source:
            provider = provider.model_copy(
                update={"api_key": SecretStr(source[provider.api_key_env])}
            )
        resolved[name] = provider
    return resolved


def _parse(path: Path) -> Any:
    text = path.read_text()
    if path.suffix in {".yaml", ".yml"}:
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if path.suffix == ".toml":
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    raise ConfigError(f"{path}: use a .yaml, .yml or .toml file")


def _describe(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        lines.append(f"  {where}: {error['msg']}" if where else f"  {error['msg']}")
    return "\n".join(lines)


def load_routing_file(path: Path) -> RoutingConfig:
    """Read and validate a routing file; a :class:`ConfigError` says what and where."""
    try:
        data = _parse(path)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with 'providers' and 'routes'")
    for secret_field in _inline_keys(data):
        raise ConfigError(
            f"{path}: providers.{secret_field}.api_key: keys are never stored in the config "
            "file; name the environment variable holding it with api_key_env"
        )
    try:
        config = RoutingConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: invalid configuration:\n{_describe(exc)}") from exc
    return config.model_copy(update={"providers": resolve_key_env(config.providers)})


def _inline_keys(data: dict[str, Any]) -> list[str]:
    providers = data.get("providers")
    if not isinstance(providers, dict):
        return []
    return [
        name for name, value in providers.items() if isinstance(value, dict) and "api_key" in value
    ]
