"""The Grafana dashboard and the Prometheus alert rules in deploy/ ask only for
metrics relayq exports (a renamed metric would leave a panel blank, or an alert
silent, without an error anywhere)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from relayq.observability.metrics import ApiMetrics, SharedState, WorkerMetrics, state_families
from tests.stack import ROOT

DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "relayq.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"

_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "gauge": ("",),
}
_PROMETHEUS_OWN = {"up"}
"""Series Prometheus makes itself for every target."""
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool"}
_KEYWORDS |= {"and", "or", "unless", "offset", "inf", "nan"}


def exported() -> set[str]:
    """Every series name relayq's processes serve (histogram and counter suffixes included)."""
    registry = CollectorRegistry()
    WorkerMetrics(registry)
    ApiMetrics(registry)
    families = [*registry.collect(), *state_families(SharedState({}, {}, {}, []))]
    return {family.name + suffix for family in families for suffix in _SUFFIXES[family.type]}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (enough PromQL for our files)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings: label values, legends
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"\$\w+", "", text)  # Grafana's variables
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        name, rest = match.group(), text[match.end() :].lstrip()
        if rest.startswith("(") or name.lower() in _KEYWORDS:
            continue  # a function, or an operator
        names.add(name)
    return names


def _dashboard_exprs() -> Iterator[tuple[str, str]]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())

    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    for panel in panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]


def _alert_exprs() -> Iterator[tuple[str, str]]:
    rules: dict[str, Any] = yaml.safe_load(ALERTS.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            yield rule["alert"], rule["expr"]


def test_the_name_finder_sees_through_functions_labels_and_groupings() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, provider) (rate(relayq_a_bucket{x="y"}[5m])))'
        " / on (provider) group_left max(relayq_b) > 0 and absent(up)"
    )
    assert metric_names(expr) == {"relayq_a_bucket", "relayq_b", "up"}


@pytest.mark.parametrize(
    ("where", "expr"), [*_dashboard_exprs(), *_alert_exprs()], ids=lambda value: str(value)[:60]
)
def test_every_query_names_a_metric_relayq_exports(where: str, expr: str) -> None:
    names = metric_names(expr)
    assert names, f"{where}: no metric in {expr!r}"
    unknown = names - exported() - _PROMETHEUS_OWN
    assert not unknown, f"{where}: {sorted(unknown)} not exported by relayq"


def test_the_dashboard_has_the_panels_operators_look_for() -> None:
    exprs = " ".join(expr for _, expr in _dashboard_exprs())
    for metric in [
        "relayq_jobs_finished_total",  # throughput
        "relayq_job_duration_seconds_bucket",  # latency
        "relayq_provider_errors_total",  # errors by provider
        "relayq_breaker_state",
        "relayq_queue_messages",  # queue depth
        "relayq_tokens_total",
        "relayq_cost_usd_total",  # cost, at the deployments' prices
        "relayq_deployment_in_flight",
    ]:
        assert metric in exprs
    quantiles = {float(q) for q in re.findall(r"histogram_quantile\(([0-9.]+)", exprs)}
    assert {0.5, 0.95, 0.99} <= quantiles
