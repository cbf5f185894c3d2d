"""Prometheus metrics.

Two kinds: counters and histograms each process keeps of its own work
(:class:`WorkerMetrics`, :class:`ApiMetrics`), and gauges of the shared state
read at scrape time from SQL and Redis (:func:`state_families`): active jobs,
queue depths, in-flight counts and circuit breakers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from relayq.breaker import BreakerState, BreakerStatus

__all__ = [
    "BREAKER_STATE_VALUES",
    "ApiMetrics",
    "SharedState",
    "StateCollector",
    "WorkerMetrics",
]

BREAKER_STATE_VALUES = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)


class WorkerMetrics:
    """What a worker process counts: attempts, their latency, jobs in flight."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.attempts = Counter(
            "relayq_attempts_total",
            "Provider calls made, by outcome.",
            ["provider", "model", "status"],
            registry=registry,
        )
        self.attempt_seconds = Histogram(
            "relayq_attempt_seconds",
            "Duration of provider calls.",
            ["provider", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.jobs_finished = Counter(
            "relayq_jobs_finished_total",
            "Jobs this process brought to an end, by status.",
            ["status"],
            registry=registry,
        )
        self.in_flight = Gauge(
            "relayq_worker_jobs_in_flight", "Jobs running in this process.", registry=registry
        )


class ApiMetrics:
    """What an API process counts: requests by route and status, and their duration."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "relayq_http_requests_total",
            "HTTP requests answered.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.request_seconds = Histogram(
            "relayq_http_request_seconds",
            "Time to answer (to the first byte for streams).",
            ["method", "route"],
            registry=registry,
        )


@dataclass(frozen=True)
class SharedState:
    """The shared state read at one scrape."""

    active_jobs: dict[tuple[str, str], int]
    """(status, provider) → jobs, for queued and running jobs."""
    queue_depths: dict[str, int]
    in_flight: dict[str, int]
    breakers: Sequence[BreakerStatus]


def state_families(state: SharedState) -> Iterable[GaugeMetricFamily]:
    jobs = GaugeMetricFamily(
        "relayq_jobs", "Queued and running jobs.", labels=["status", "provider"]
    )
    for (job_status, provider), count in sorted(state.active_jobs.items()):
        jobs.add_metric([job_status, provider], count)
    depth = GaugeMetricFamily(
        "relayq_queue_messages", "Messages waiting in each queue.", labels=["queue"]
    )
    for queue, count in sorted(state.queue_depths.items()):
        depth.add_metric([queue], count)
    flight = GaugeMetricFamily(
        "relayq_deployment_in_flight", "Unfinished jobs per deployment.", labels=["deployment"]
    )
    for deployment, count in sorted(state.in_flight.items()):
        flight.add_metric([deployment], count)
    breaker = GaugeMetricFamily(
        "relayq_breaker_state",
        "Circuit breaker per deployment: 0 closed, 1 half-open, 2 open.",
        labels=["deployment"],
    )
    failures = GaugeMetricFamily(
        "relayq_breaker_window_failures",
        "Failures in the breaker's sliding window.",
        labels=["deployment"],
    )
    for status in state.breakers:
        breaker.add_metric([status.deployment], BREAKER_STATE_VALUES[status.state])
        failures.add_metric([status.deployment], status.window_failures)
    return [jobs, depth, flight, breaker, failures]


class StateCollector(Collector):
    """Serves the last :class:`SharedState` read (the API reads it before each scrape)."""

    def __init__(self) -> None:
        self.state: SharedState | None = None

    def collect(self) -> Iterable[GaugeMetricFamily]:
        return [] if self.state is None else state_families(self.state)
