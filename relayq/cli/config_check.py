"""``relayq config check``: everything a worker would reject, found before it starts."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from relayq.config.routes import ConfigError, RoutingConfig, load_routing_file
from relayq.providers import provider_type

__all__ = ["CheckReport", "check_routing", "check_routing_file"]


@dataclass
class CheckReport:
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    summary: str = ""
    unpriced: list[str] = field(default_factory=list)
    """Deployments no price covers (``route: provider/model``): their jobs show no cost."""


def check_routing(config: RoutingConfig, *, source: str) -> CheckReport:
    """Adapter types and options, keys that are named but not set, and deployments
    without a price (:meth:`relayq.config.routes.RoutingConfig.price_of`)."""
    report = CheckReport()
    for name, provider in config.providers.items():
        try:
            adapter = provider_type(provider.type)
            adapter.validate_options(provider.options, provider=name)
        except ValueError as exc:
            report.error = f"{source}: providers.{name}: {exc}"
            return report
        # Loading filled api_key from api_key_env where that variable is set.
        if provider.api_key is None and provider.api_key_env:
            report.warnings.append(
                f"providers.{name}: environment variable {provider.api_key_env} is not set"
            )
    aliases = sum(len(route.aliases) for route in config.routes.values())
    report.unpriced = [
        f"{name}: {deployment.provider}/{deployment.model}"
        for name, route in config.routes.items()
        for deployment in route.deployments
        if config.price_of(deployment) is None
    ]
    report.summary = (
        f"{len(config.providers)} providers, {len(config.routes)} routes, {aliases} aliases, "
        f"{len(report.unpriced)} deployments without a price"
    )
    return report


def check_routing_file(path: Path) -> CheckReport:
    try:
        config = load_routing_file(path)
    except ConfigError as exc:
        return CheckReport(error=str(exc))
    return check_routing(config, source=str(path))
