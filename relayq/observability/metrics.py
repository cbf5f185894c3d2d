"""Prometheus metrics.

Two kinds: counters and histograms each process keeps of its own work
(:class:`WorkerMetrics`, :class:`ApiMetrics`), and gauges of the shared state
read at scrape time from SQL and Redis (:func:`state_families`): active jobs,
queue depths, in-flight counts and circuit breakers.

Each event is counted in the process where it happens, so a process's series
add up across processes (``sum()``); the shared-state gauges are the same on
every API replica (``max()``). Labels are bounded: ``model`` is a route name from
the config, ``provider`` a configured provider, ``deployment`` ``provider|model``,
``code`` one of the error tree's codes, ``key_id`` an API key's id (on tokens only).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

from relayq.observability.tally import CounterTally, HistogramTally

__all__ = [
    "BREAKER_STATE_VALUES",
    "ApiMetrics",
    "BreakerReading",
    "SharedState",
    "StateCollector",
    "WorkerMetrics",
    "state_families",
]

BREAKER_STATE_VALUES = {"closed": 0, "half_open": 1, "open": 2}
"""``relayq_breaker_state``'s value for each breaker state."""

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)
_WAIT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
"""Queue waits: milliseconds on an idle system, hours for a batch behind others."""
_DURATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 3600, 14400, 86400)

M = TypeVar("M", bound=MetricWrapperBase)


class _Children(Generic[M]):
    """A labelled metric's children, each looked up once.

    ``.labels()`` takes a lock and builds a key (1-2 µs); a dict hit here costs
    about 0.4 µs. The label sets are bounded (see the module's docstring), so is this.
    """

    def __init__(self, metric: M) -> None:
        self.metric = metric
        self._found: dict[tuple[str, ...], M] = {}

    def __call__(self, *values: str) -> M:
        child = self._found.get(values)
        if child is None:
            child = self._found[values] = self.metric.labels(*values)
        return child


def _no_jobs() -> int:
    return 0


class WorkerMetrics(Collector):
    """What a worker process counts: its jobs' ends, calls, retries, waits and tokens.

    Counted on the process's event loop thread alone, in tallies
    (:mod:`relayq.observability.tally`: a finished job's five counts cost 1.45 µs, not 2.8-7.2);
    served by the process's own metrics port, which reads them at each scrape.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.attempts = CounterTally(
            "relayq_attempts",
            "Provider calls made (and calls skipped, or cancelled), by outcome.",
            ["provider", "model", "status"],
        )
        self.attempt_seconds = HistogramTally(
            "relayq_attempt_seconds",
            "Duration of provider calls.",
            ["provider", "status"],
            _LATENCY_BUCKETS,
        )
        self.provider_errors = CounterTally(
            "relayq_provider_errors",
            "Failed provider calls, by the error's code (rate_limited, timeout, ...).",
            ["provider", "code"],
        )
        self.jobs_finished = CounterTally(
            "relayq_jobs_finished",
            "Jobs this process brought to an end, by status, route and last provider.",
            ["status", "model", "provider"],
        )
        self.queue_wait = HistogramTally(
            "relayq_job_queue_wait_seconds",
            "From a job's acceptance to the claim of the run that ended it.",
            ["provider"],
            _WAIT_BUCKETS,
        )
        self.job_seconds = HistogramTally(
            "relayq_job_duration_seconds",
            "From a job's acceptance to its end (queue, waits, retries and calls).",
            ["provider", "status"],
            _DURATION_BUCKETS,
        )
        self.batch_requests = CounterTally(
            "relayq_batch_requests_finished",
            "A batch's requests (jobs with a batch) brought to an end, by status.",
            ["status"],
        )
        self.tokens = CounterTally(
            "relayq_tokens",
            "Tokens of finished jobs, by route, API key and kind (prompt, completion).",
            ["model", "key_id", "kind"],
        )
        self.cost = CounterTally(
            "relayq_cost_usd",
            "What finished jobs cost in US dollars, by route and API key, at their "
            "deployment's price (deployments without a price are not counted).",
            ["model", "key_id"],
        )
        self.retries = CounterTally(
            "relayq_retries",
            "Jobs put back to call the same deployment again after a failed call.",
            ["provider"],
        )
        self.fallbacks = CounterTally(
            "relayq_fallbacks",
            "Jobs moved to their route's next deployment.",
            ["from_provider", "to_provider"],
        )
        self.rate_limit_waits = CounterTally(
            "relayq_rate_limit_waits",
            "Jobs put back to wait for a deployment's RPM/TPM limit or its provider's cooldown.",
            ["provider"],
        )
        self.rate_limit_wait_seconds = HistogramTally(
            "relayq_rate_limit_wait_seconds",
            "How long those jobs were told to wait.",
            ["provider"],
            _WAIT_BUCKETS,
        )
        self.cooldowns = CounterTally(
            "relayq_cooldowns",
            "Provider-wide cooldowns started by a 429 with Retry-After.",
            ["provider"],
        )
        self.breaker_rejections = CounterTally(
            "relayq_breaker_rejections",
            "Calls a deployment's open (or probing) breaker refused: the job fell back.",
            ["deployment"],
        )
        self.webhook_deliveries = CounterTally(
            "relayq_webhook_deliveries",
            "Webhook delivery messages handled, by outcome (succeeded, retrying, failed, "
            "deferred, skipped).",
            ["outcome"],
        )
        self.purged = CounterTally(
            "relayq_purged",
            "Rows the reconciler's purge deleted as past their retention period, by kind "
            "(jobs, attempts, webhook_deliveries, webhook_attempts, batches, files, audit, "
            "budget_windows).",
            ["kind"],
        )
        self.jobs_in_flight: Callable[[], int] = _no_jobs
        """Read at each scrape (the executor's count, once it exists)."""
        self._tallies: list[CounterTally | HistogramTally] = [
            value
            for value in vars(self).values()
            if isinstance(value, CounterTally | HistogramTally)
        ]
        registry.register(self)

    def collect(self) -> Iterable[Metric]:
        families: list[Metric] = [tally.family() for tally in self._tallies]
        families.append(
            GaugeMetricFamily(
                "relayq_worker_jobs_in_flight",
                "Jobs calling (or about to call) their provider in this process.",
                value=self.jobs_in_flight(),
            )
        )
        return families

    def attempt(self, *, provider: str, model: str, status: str, seconds: float) -> None:
        """One provider call (or a call skipped, or cancelled) and how long it took."""
        self.attempts.inc(provider, model, status)
        self.attempt_seconds.observe(seconds, provider, status)

    def job_finished(
        self,
        *,
        status: str,
        model: str,
        provider: str,
        key_id: str,
        queue_wait: float | None,
        age: float | None,
        prompt_tokens: int | None,
        completion_tokens: int | None,
        batch: bool,
        cost: float | None = None,
    ) -> None:
        """A job ended here: its status, its waits (seconds), its tokens, its cost (USD)."""
        self.jobs_finished.inc(status, model, provider)
        if queue_wait is not None:
            self.queue_wait.observe(max(queue_wait, 0.0), provider)
        if age is not None:
            self.job_seconds.observe(max(age, 0.0), provider, status)
        if prompt_tokens:
            self.tokens.add(prompt_tokens, model, key_id, "prompt")
        if completion_tokens:
            self.tokens.add(completion_tokens, model, key_id, "completion")
        if batch:
            self.batch_requests.inc(status)
        if cost:
            self.cost.add(cost, model, key_id)

    def rate_limited(self, *, provider: str, wait: float) -> None:
        self.rate_limit_waits.inc(provider)
        self.rate_limit_wait_seconds.observe(wait, provider)


class ApiMetrics:
    """What an API process counts: requests by route and status, their duration, and
    response cache lookups."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = _Children(
            Counter(
                "relayq_http_requests_total",
                "HTTP requests answered.",
                ["method", "route", "status"],
                registry=registry,
            )
        )
        self.request_seconds = _Children(
            Histogram(
                "relayq_http_request_seconds",
                "Time to answer (to the first byte for streams).",
                ["method", "route"],
                registry=registry,
            )
        )
        self.cache_lookups = _Children(
            Counter(
                "relayq_cache_lookups_total",
                "Response cache lookups at intake: hit, miss, or error (Redis unavailable).",
                ["result"],
                registry=registry,
            )
        )

    def cache_lookup(self, result: str) -> None:
        self.cache_lookups(result).inc()


@dataclass(frozen=True)
class BreakerReading:
    """One deployment's breaker as the gauges show it."""

    deployment: str
    state: str
    """A :class:`~relayq.resilience.breaker.BreakerState` value (``closed``...)."""
    window_failures: int


@dataclass(frozen=True)
class SharedState:
    """The shared state read at one scrape."""

    active_jobs: dict[tuple[str, str], int]
    """(status, provider) → jobs, for queued and running jobs."""
    queue_depths: dict[str, int]
    in_flight: dict[str, int]
    breakers: Sequence[BreakerReading]


def state_families(state: SharedState) -> Iterable[GaugeMetricFamily]:
    """The shared state as gauge families (read by the API at each scrape)."""
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
