"""Traces: one trace from the caller's request through the queue to the provider call.

In production the spans are made in two processes; here the API app and the
executor run in this one, on real SQLite and Redis, and a message goes from
one to the other through the real broker list (Celery's) or lane stream
between them. Spans are read from the SDK's in-memory exporter.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import json
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis as sync_redis
import redis.asyncio as aioredis
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from api.app import create_app
from relayq.config.routes import RetrySettings, RoutingConfig
from relayq.config.settings import BreakerSettings, Settings, TracingSettings
from relayq.direct.replies import Replies
from relayq.events.log import EventLog
from relayq.execution.executor import Executor, RunResult
from relayq.observability import tracing
from relayq.providers import build_providers
from relayq.providers.http import build_http_client
from relayq.queueing.broker import (
    NO_DETAILS,
    RUN_JOB_TASK,
    RUN_MANY_TASK,
    TRACEPARENT_HEADER,
    TRACEPARENTS_HEADER,
    Enqueuer,
    JobDetails,
)
from relayq.redis.keys import RedisKeys
from relayq.redis.pipeline import CommandBatch
from relayq.resilience.breaker import CircuitBreaker
from relayq.resilience.ratelimit import RateLimiter
from relayq.resilience.resilience import Resilience
from relayq.store import Database
from relayq.store.jobs import create_jobs
from relayq.store.keys import create_key
from tests.conftest import key_factory
from tests.executor_routing import ROUTING
from tests.jobs import body, mock_job
from tests.services import run

_REDIS_DB = 12
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
CALLER = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on in this process, its spans kept in memory; off again after the test."""
    exporter = InMemorySpanExporter()
    assert tracing.setup(TracingSettings(enabled=True), service="relayq-test", exporter=exporter)
    try:
        yield exporter
    finally:
        tracing.shutdown()


@pytest.fixture
def settings(private_database_url: str, redis_server: str, tmp_path: Path) -> Iterator[Settings]:
    """An API's settings on a database and Redis database of this module's own."""
    built = Settings(
        database_url=private_database_url,
        redis_url=f"{redis_server}/{_REDIS_DB}",
        key_prefix=f"relayq-tracing-{uuid.uuid4().hex[:8]}",
        files={"storage_dir": tmp_path / "files"},
        tracing={"enabled": True},
    )
    broker = sync_redis.Redis.from_url(built.redis_url)
    broker.flushdb()
    try:
        yield built
    finally:
        broker.flushdb()
        broker.close()


def _by_name(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def _ids(traceparent: str) -> tuple[str, str]:
    """A traceparent's trace id and parent span id, as hex."""
    _, trace_id, span_id, _ = traceparent.split("-")
    return trace_id, span_id


def _hex(span: ReadableSpan) -> tuple[str, str]:
    assert span.context is not None
    return f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}"


def _parent(span: ReadableSpan) -> str | None:
    return f"{span.parent.span_id:016x}" if span.parent is not None else None


@dataclass
class Worker:
    """The worker's side, in-process: an executor on the API's database and Redis."""

    executor: Executor
    database: Database
    redis: aioredis.Redis


@contextlib.asynccontextmanager
async def worker(
    settings: Settings, *, routing: RoutingConfig | None = None, broker: Enqueuer | None = None
) -> AsyncIterator[Worker]:
    """An executor as a worker process builds it (resilience only with a ``broker``)."""
    database = Database(settings.database_url)
    redis = aioredis.Redis.from_url(settings.redis_url)
    http = build_http_client(max_connections=10)
    prefix = settings.key_prefix
    events = EventLog(redis, key_prefix=prefix, max_events=100, retention_seconds=60)
    routing = routing or settings.routing()
    resilience = None
    if broker is not None:
        resilience = Resilience(
            database=database,
            enqueuer=broker,
            limiter=RateLimiter(redis, key_prefix=prefix),
            breaker=CircuitBreaker(redis, key_prefix=prefix, settings=BreakerSettings()),
            retry=RetrySettings(max_attempts_per_deployment=1),
            routing=lambda: routing,
            events=events,
            max_countdown=10,
        )
    executor = Executor(
        database=database,
        providers=build_providers(routing.providers, http),
        lease_seconds=60,
        events=events,
        resilience=resilience,
        replies=Replies(CommandBatch(redis), key_prefix=prefix),
    )
    try:
        yield Worker(executor=executor, database=database, redis=redis)
    finally:
        await http.aclose()
        await redis.aclose()
        await database.aclose()


@contextlib.asynccontextmanager
async def api(settings: Settings, secret: str) -> AsyncIterator[httpx.AsyncClient]:
    """The API app in this process, started as uvicorn starts it (its lifespan)."""
    app = create_app(settings, configure_logs=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {secret}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://relayq.test", headers=headers, timeout=10
        ) as client:
            yield client


def _published(settings: Settings) -> list[dict[str, Any]]:
    """The Celery messages waiting on the mock provider's queue (the broker's lists)."""
    broker = sync_redis.Redis.from_url(settings.redis_url)
    try:
        queue = settings.queue_for("mock")
        return [
            json.loads(m)
            for key in broker.keys(f"{queue}*")
            if broker.type(key) == b"list"
            for m in broker.lrange(key, 0, -1)
        ]
    finally:
        broker.close()


def _check_request_span(server: ReadableSpan, route: str, status: int) -> None:
    assert server.kind is SpanKind.SERVER
    assert server.name == f"POST {route}"
    assert _hex(server)[0] == CALLER_TRACE
    assert _parent(server) == CALLER_SPAN  # the caller's traceparent is honoured
    attributes = dict(server.attributes or {})
    assert attributes["http.request.method"] == "POST"
    assert attributes["http.route"] == route
    assert attributes["http.response.status_code"] == status
    assert str(attributes["relayq.request_id"]).startswith("req")
    assert server.resource.attributes["service.name"] == "relayq-test"


def _check_attempt_and_call(
    exporter: InMemorySpanExporter, parent: ReadableSpan, job_id: str
) -> None:
    """The job's attempt span is ``parent``'s child, its provider call the attempt's."""
    [attempt] = _by_name(exporter, "job attempt")
    [call] = _by_name(exporter, "chat mock")
    assert attempt.kind is SpanKind.CONSUMER
    assert call.kind is SpanKind.CLIENT
    assert _hex(attempt)[0] == _hex(call)[0] == CALLER_TRACE
    assert _parent(attempt) == _hex(parent)[1]
    assert _parent(call) == _hex(attempt)[1]
    assert dict(attempt.attributes or {}) == {
        "relayq.job.id": job_id,
        "relayq.model": "mock",
        "relayq.provider": "mock",
        "relayq.upstream_model": "mock",
        "relayq.attempt": 1,
        "relayq.run": 1,
        "relayq.outcome": "succeeded",
    }
    calls = dict(call.attributes or {})
    assert calls["relayq.provider"] == "mock"
    assert calls["gen_ai.request.model"] == "mock"
    assert calls["gen_ai.usage.output_tokens"] > 0  # type: ignore[operator]
    assert "error.type" not in calls
    assert call.status.status_code is StatusCode.UNSET


@pytest.mark.usefixtures("sqlite_only")
def test_a_job_carries_its_request_span_through_celery_to_its_attempt_and_call(
    spans: InMemorySpanExporter, settings: Settings
) -> None:
    """``POST /v1/jobs`` with a caller's traceparent: the request span continues it, the
    Celery message's header carries the request span, and the worker's attempt and
    provider call spans follow in the same trace."""
    secret = key_factory(settings.database_url)()

    async def main() -> None:
        async with api(settings, secret) as client:
            answer = await client.post("/v1/jobs", json=body(), headers={"traceparent": CALLER})
            assert answer.status_code == 202, answer.text
            job_id = answer.json()["id"]
        [message] = [m for m in _published(settings) if m["headers"]["task"] == RUN_JOB_TASK]
        assert message["headers"]["id"] == job_id
        carried = message["headers"][TRACEPARENT_HEADER]
        [server] = _by_name(spans, "POST /v1/jobs")
        _check_request_span(server, "/v1/jobs", 202)
        assert _ids(carried) == _hex(server)  # the request span is the job's parent
        async with worker(settings) as running:
            assert await running.executor.run(job_id, traceparent=carried) is RunResult.SUCCEEDED
        _check_attempt_and_call(spans, server, job_id)

    run(main())


@pytest.mark.usefixtures("sqlite_only")
def test_a_sync_call_carries_its_request_span_in_its_lane_message(
    spans: InMemorySpanExporter, settings: Settings
) -> None:
    """``POST /v1/chat/completions``: the lane message carries the request span; the
    worker's spans are its children, and the whole trace ends before the answer does."""
    secret = key_factory(settings.database_url)()
    stream = RedisKeys(settings.key_prefix).lane(settings.queue_for("mock"))

    async def main() -> None:
        async with api(settings, secret) as client, worker(settings) as running:
            call = asyncio.ensure_future(
                client.post("/v1/chat/completions", json=body(), headers={"traceparent": CALLER})
            )
            entries: list[Any] = []

            async def read() -> bool:
                entries[:] = await running.redis.xrange(stream) or []
                return bool(entries)

            deadline = time.monotonic() + 5
            while not await read():
                assert time.monotonic() < deadline, "no lane message"
                await asyncio.sleep(0.01)
            [(_, fields)] = entries
            message = orjson.loads(fields[b"m"])
            assert await running.executor.run_direct(message, recorded=True) is (
                RunResult.SUCCEEDED
            )
            answer = await call
            assert answer.status_code == 200, answer.text
        [server] = _by_name(spans, "POST /v1/chat/completions")
        _check_request_span(server, "/v1/chat/completions", 200)
        assert _ids(message["traceparent"]) == _hex(server)
        _check_attempt_and_call(spans, server, message["job"]["id"])

    run(main())


class Recorded(Enqueuer):
    """A broker that keeps what it was asked to publish, for the test to deliver."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, JobDetails]] = []

    def send(
        self,
        *,
        job_id: str,
        provider: str,
        priority: int,
        countdown: float | None = None,
        details: JobDetails = NO_DETAILS,
    ) -> None:
        self.sent.append((job_id, details))


@pytest.mark.usefixtures("sqlite_only")
def test_a_retried_job_s_next_attempt_is_the_child_of_the_one_that_failed(
    spans: InMemorySpanExporter, settings: Settings
) -> None:
    """The failed call's span says why; the re-queued message carries the failed attempt's
    span, and the next attempt (on the next deployment) continues it."""

    async def main() -> None:
        broker = Recorded()
        async with worker(settings, routing=ROUTING, broker=broker) as running:
            async with running.database.session() as session:
                key = await create_key(session, name="tracing")
                request = {"model": "resilient", "messages": [{"role": "user", "content": "x"}]}
                (job,) = await create_jobs(
                    session,
                    jobs=[
                        mock_job(
                            key.id,
                            route="resilient",
                            provider="down",
                            upstream_model="m1",
                            request=request,
                        )
                    ],
                    now=time.time(),
                )
            first = await running.executor.run(job.id, traceparent=CALLER)
            assert first is RunResult.REQUEUED
            [(job_id, details)] = broker.sent
            assert job_id == job.id
            assert details.traceparent is not None
            second = await running.executor.run(job.id, traceparent=details.traceparent)
            assert second is RunResult.SUCCEEDED
        failed, succeeded = sorted(_by_name(spans, "job attempt"), key=lambda s: s.start_time or 0)
        assert _parent(failed) == CALLER_SPAN
        assert _ids(details.traceparent) == _hex(failed)
        assert _parent(succeeded) == _hex(failed)[1]
        assert {_hex(s)[0] for s in spans.get_finished_spans()} == {CALLER_TRACE}
        before, after = dict(failed.attributes or {}), dict(succeeded.attributes or {})
        assert (before["relayq.outcome"], before["relayq.attempt"]) == ("requeued", 1)
        assert (after["relayq.provider"], after["relayq.attempt"]) == ("backup", 2)
        [down] = _by_name(spans, "chat m1")
        assert dict(down.attributes or {})["error.type"] == "provider_unavailable"
        assert down.status.status_code is StatusCode.ERROR
        assert _parent(down) == _hex(failed)[1]
        [up] = _by_name(spans, "chat m2")
        assert _parent(up) == _hex(succeeded)[1]

    run(main())


def test_an_envelope_maps_each_job_to_its_own_traceparent(redis_server: str) -> None:
    """On the wire: a job alone has its traceparent in a header; an envelope maps each of
    its jobs to its own, leaving out those without one."""
    settings = Settings(redis_url=f"{redis_server}/{_REDIS_DB}")
    broker = sync_redis.Redis.from_url(settings.redis_url)
    broker.flushdb()
    enqueuer = Enqueuer(settings=settings)
    first = f"00-{'1' * 32}-{'a' * 16}-01"
    second = f"00-{'2' * 32}-{'b' * 16}-01"
    try:
        enqueuer.send_many([("job_a", "mock", 5)], details={"job_a": JobDetails(traceparent=first)})
        enqueuer.send_many(
            [("job_b", "mock", 5), ("job_c", "mock", 5), ("job_d", "mock", 5)],
            details={
                "job_b": JobDetails(traceparent=first),
                "job_d": JobDetails(traceparent=second),
            },
        )
        headers = {m["headers"]["task"]: m["headers"] for m in _published(settings)}
    finally:
        enqueuer.close()
        broker.flushdb()
        broker.close()
    assert headers[RUN_JOB_TASK][TRACEPARENT_HEADER] == first
    assert headers[RUN_MANY_TASK][TRACEPARENTS_HEADER] == {"job_b": first, "job_d": second}


def test_off_the_helpers_do_nothing() -> None:
    """Tracing off (the default): no span, no traceparent, a shared null context."""
    assert not tracing.enabled()
    assert not tracing.setup(TracingSettings(), service="relayq-test")
    assert tracing.current_traceparent() is None
    with tracing.span("anything", parent=CALLER) as span:
        assert span is None
    assert tracing.span("anything") is tracing.NO_SPAN


def test_enabled_without_the_extra_stops_the_process_with_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As if ``relayq[otel]`` were not installed (a None in sys.modules fails its import)."""
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)
    on = TracingSettings(enabled=True)
    for start in (lambda: tracing.setup(on, service="relayq-api"), lambda: tracing.check(on)):
        with pytest.raises(SystemExit) as stopped:
            start()
        assert isinstance(stopped.value, tracing.TracingUnavailable)
        assert "pip install 'relayq[otel]'" in str(stopped.value)
        assert "\n" not in str(stopped.value)
    assert not tracing.enabled()
    tracing.check(TracingSettings())  # off: nothing to check


def test_off_relayq_imports_nothing_of_opentelemetry() -> None:
    """A fresh process with tracing off: importing the API and the worker loads no
    OpenTelemetry module past those its libraries load themselves (FastAPI and
    redis-py import ``opentelemetry-api``; redis-py also the SDK's metrics when the
    SDK is installed), and nothing of the trace SDK or the exporter."""
    code = """
import sys
import fastapi, redis.asyncio
def loaded():
    return {m for m in sys.modules if m.split(".")[0] == "opentelemetry"}
before = loaded()
import api.app, worker.app, worker.main
after = loaded()
print(sorted(after - before))
print(sorted(m for m in after if m.startswith(("opentelemetry.sdk.trace", "opentelemetry.exp"))))
"""
    found = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert found.stdout.split("\n")[:2] == ["[]", "[]"]


def test_only_relayq_tracing_imports_opentelemetry_and_only_when_set_up() -> None:
    """Every other module calls relayq.observability.tracing; it imports OpenTelemetry inside
    functions (or for the type checker), never when it is imported."""
    root = Path(__file__).parent.parent
    importers = {}
    for package in ("relayq", "api", "worker"):
        for path in (root / package).rglob("*.py"):
            tree = ast.parse(path.read_text())
            top = _module_level_imports(tree)
            names = {n for node in ast.walk(tree) for n in _imported(node)}
            if any(n.split(".")[0] == "opentelemetry" for n in names):
                importers[str(path.relative_to(root))] = {
                    n for n in top if n.split(".")[0] == "opentelemetry"
                }
    assert importers == {"relayq/observability/tracing.py": set()}


def _imported(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.module is not None:
        return [node.module]
    return []


def _module_level_imports(tree: ast.Module) -> list[str]:
    """Imports run when the module is imported (not those under ``if TYPE_CHECKING``)."""
    found: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            continue
        found += _imported(node)
    return found
