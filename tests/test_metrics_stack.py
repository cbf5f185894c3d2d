"""Metrics counted where things happen: a stack of its own runs jobs that succeed,
fail, retry, fall back, wait for a limit, hit the cache, end in a batch and send a
webhook; the API's /metrics (behind an admin key here) and the worker's own port
show each count moved."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from relayq.store import Database
from relayq.store.keys import create_key
from tests.batches import wait_for_batch
from tests.jobs import body, submit, wait_for_status
from tests.services import free_port, run
from tests.stack import Stack, wait_until

# Stacks of their own; what is counted does not depend on the database.
pytestmark = [pytest.mark.slow(seconds=13), pytest.mark.usefixtures("sqlite_only")]

_REDIS_DB = 6

Samples = dict[str, list[tuple[dict[str, str], float]]]


def parse(text: str) -> Samples:
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def total(found: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    return sum(
        value
        for sample_labels, value in found.get(name, [])
        if all(sample_labels.get(k) == v for k, v in labels.items())
    )


@dataclass
class MetricsStack:
    stack: Stack
    worker_metrics: str
    admin: str
    key: str
    key_id: str

    def api(self, **headers: str) -> httpx.Response:
        return httpx.get(f"{self.stack.base_url}/metrics", headers=headers, timeout=10)

    def api_samples(self) -> Samples:
        response = self.api(authorization=f"Bearer {self.admin}")
        assert response.status_code == 200, response.text
        return parse(response.text)

    def worker_samples(self) -> Samples:
        response = httpx.get(self.worker_metrics, timeout=10)
        assert response.status_code == 200
        return parse(response.text)


def _keys(database_url: str) -> tuple[str, str, str]:
    """An admin key's secret, a plain key's secret and its id."""

    async def create() -> tuple[str, str, str]:
        database = Database(database_url)
        try:
            async with database.session() as session:
                admin = await create_key(session, name="scraper", admin=True)
                plain = await create_key(session, name="tenant")
                return admin.secret, plain.secret, plain.id
        finally:
            await database.aclose()

    return run(create())


@pytest.fixture
def metrics_stack(
    private_database_url: str, redis_server: str, logs: Path
) -> Iterator[MetricsStack]:
    redis_url = f"{redis_server}/{_REDIS_DB}"
    flushed = redis.Redis.from_url(redis_url)
    flushed.flushdb()
    flushed.close()
    port = free_port()
    providers = {
        "mock": {"type": "mock", "read_timeout": 5},
        # Every call fails with a 500: retried on its deployment, then the route falls back.
        "broken": {"type": "mock", "read_timeout": 5, "options": {"fault": "error"}},
        "backup": {"type": "mock", "read_timeout": 5},
        "limited": {"type": "mock", "read_timeout": 5},
        "cooling": {"type": "mock", "read_timeout": 5},
    }
    routes = {
        "mock": {"provider": "mock", "model": "mock"},
        "mock-fallback": {
            "strategy": "ordered",
            "deployments": [
                {"provider": "broken", "model": "mock"},
                {"provider": "backup", "model": "mock"},
            ],
        },
        # One call a minute: a second job waits for the limit.
        "mock-limited": {"deployments": [{"provider": "limited", "model": "mock", "rpm": 1}]},
        "mock-cooling": {"provider": "cooling", "model": "mock"},
        # Priced: $2 a million prompt tokens, $8 a million completion tokens.
        "mock-priced": {
            "deployments": [
                {"provider": "mock", "model": "mock", "price": {"input": 2.0, "output": 8.0}}
            ]
        },
        "mock-cached": {
            "provider": "mock",
            "model": "mock",
            "cache": {"enabled": True, "ttl_seconds": 60},
        },
    }
    env = {
        "RELAYQ_PROVIDERS": json.dumps(providers),
        "RELAYQ_ROUTES": json.dumps(routes),
        "RELAYQ_WORKER__PROVIDERS": json.dumps(sorted(providers)),
        "RELAYQ_WORKER__METRICS_PORT": str(port),
        "RELAYQ_API__METRICS_ACCESS": "admin",
        "RELAYQ_RETRY__MAX_ATTEMPTS_PER_DEPLOYMENT": "2",
    }
    admin, key, key_id = _keys(private_database_url)
    with Stack(database_url=private_database_url, redis_url=redis_url, logs=logs, env=env) as stack:
        stack.start_api()
        stack.start_worker()
        yield MetricsStack(
            stack=stack,
            worker_metrics=f"http://127.0.0.1:{port}/metrics",
            admin=admin,
            key=key,
            key_id=key_id,
        )


def _ended(client: httpx.Client, payload: dict[str, Any]) -> dict[str, Any]:
    job = submit(client, payload)
    return wait_for_status(client, job["id"], {"succeeded", "failed", "cancelled"})


def test_jobs_move_the_counts_of_the_process_where_they_happen(
    metrics_stack: MetricsStack,
) -> None:
    headers = {"Authorization": f"Bearer {metrics_stack.key}"}
    with httpx.Client(base_url=metrics_stack.stack.base_url, headers=headers, timeout=10) as client:
        assert _ended(client, body("fine", mock={"tokens": 8}))["status"] == "succeeded"
        priced = _ended(client, body("what does it cost", model="mock-priced"))
        assert priced["status"] == "succeeded"
        refused = _ended(client, body("refused", mock={"fault": "invalid_request"}))
        assert refused["status"] == "failed"
        fell_back = _ended(client, body("falls back", model="mock-fallback"))
        assert fell_back["status"] == "succeeded"
        assert fell_back["provider"] == "backup"
        # A 429 with Retry-After: the provider cools down, and the job is retried.
        slow_down = {"fault": "rate_limit", "retry_after": 1}
        submit(client, body("slow down", model="mock-cooling", mock=slow_down))
        # Two answers cached: the first misses (and runs), the second hits.
        cached = body("cache me", model="mock-cached")
        assert _ended(client, cached)["status"] == "succeeded"
        assert _ended(client, cached)["status"] == "succeeded"
        # The second job for a deployment allowing one call a minute waits.
        limited = body("limited", model="mock-limited")
        assert _ended(client, limited)["status"] == "succeeded"
        submit(client, limited)
        batch = client.post(
            "/v1/batches",
            json={
                "requests": [{"custom_id": f"r{i}", "params": body(f"batch {i}")} for i in range(2)]
            },
        )
        assert batch.status_code == 200, batch.text
        assert wait_for_batch(client, batch.json()["id"])["status"] == "completed"
        # A webhook to a port nobody listens on: its delivery fails and is retried.
        hook = {"url": f"http://127.0.0.1:{free_port()}/hook"}
        assert _ended(client, body("hooked", webhook=hook))["status"] == "succeeded"

        def worker_saw_all() -> bool:
            found = metrics_stack.worker_samples()
            return (
                total(found, "relayq_rate_limit_waits_total", provider="limited") >= 1
                and total(found, "relayq_cooldowns_total", provider="cooling") >= 1
                and total(found, "relayq_webhook_deliveries_total") >= 1
            )

        wait_until(worker_saw_all, timeout=30, interval=0.2)

    found = metrics_stack.worker_samples()
    finished = "relayq_jobs_finished_total"
    assert total(found, finished, status="succeeded", model="mock", provider="mock") >= 4
    assert total(found, finished, status="failed", model="mock", provider="mock") == 1
    assert total(found, finished, status="succeeded", model="mock-fallback") == 1
    assert total(found, finished, status="succeeded", model="mock-cached") == 1  # one ran
    assert total(found, "relayq_provider_errors_total", provider="mock", code="invalid_request")
    broken_errors = total(
        found, "relayq_provider_errors_total", provider="broken", code="provider_unavailable"
    )
    assert broken_errors == 2  # two attempts on the deployment, then the fallback
    assert total(found, "relayq_retries_total", provider="broken") == 1
    assert total(found, "relayq_fallbacks_total", from_provider="broken", to_provider="backup") == 1
    assert total(found, "relayq_rate_limit_wait_seconds_count", provider="limited") >= 1
    assert total(found, "relayq_rate_limit_wait_seconds_sum", provider="limited") > 1
    assert total(found, "relayq_batch_requests_finished_total", status="succeeded") == 2
    assert total(found, "relayq_webhook_deliveries_total", outcome="retrying") >= 1
    tokens = "relayq_tokens_total"
    completion = total(found, tokens, model="mock", key_id=metrics_stack.key_id, kind="completion")
    assert completion >= 8
    assert total(found, tokens, model="mock", key_id=metrics_stack.key_id, kind="prompt") > 0
    # Cost at the deployment's price, for the priced route alone.
    usage = priced["usage"]
    expected = (usage["prompt_tokens"] * 2.0 + usage["completion_tokens"] * 8.0) / 1_000_000
    cost = "relayq_cost_usd_total"
    assert total(found, cost, model="mock-priced", key_id=metrics_stack.key_id) == pytest.approx(
        expected
    )
    assert total(found, cost, model="mock") == 0
    [line] = [
        json.loads(text)
        for text in (metrics_stack.stack.logs / "worker-0.log").read_text().splitlines()
        if text.startswith("{") and f'"{priced["id"]}"' in text and '"relayq.jobs"' in text
    ]
    assert line["cost_usd"] == pytest.approx(expected)
    # Accepted -> claimed, and accepted -> ended, per provider.
    assert total(found, "relayq_job_queue_wait_seconds_count", provider="mock") >= 5
    assert total(found, "relayq_job_duration_seconds_count", provider="backup") == 1
    attempts = total(found, "relayq_attempts_total", provider="broken", status="failed")
    assert attempts == 2
    assert "relayq_worker_jobs_in_flight" in found

    api = metrics_stack.api_samples()
    assert total(api, "relayq_cache_lookups_total", result="miss") == 1
    assert total(api, "relayq_cache_lookups_total", result="hit") == 1
    assert total(api, "relayq_http_requests_total", route="/v1/jobs", status="202") >= 7
    breakers = {labels["deployment"]: value for labels, value in api["relayq_breaker_state"]}
    assert breakers["broken|mock"] in {0, 1, 2}
    # Worker counts stay in the worker's process: the API serves none of them.
    assert finished not in api


def test_metrics_ask_for_an_admin_key_when_set_to(metrics_stack: MetricsStack) -> None:
    missing = metrics_stack.api()
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "missing_api_key"
    plain = metrics_stack.api(authorization=f"Bearer {metrics_stack.key}")
    assert plain.status_code == 403
    assert plain.json()["error"]["code"] == "insufficient_scope"
    assert set(plain.json()["error"]) >= {"message", "type", "code"}
    served = metrics_stack.api(authorization=f"Bearer {metrics_stack.admin}")
    assert served.status_code == 200
    assert served.headers["content-type"].startswith("text/plain")
    assert "relayq_queue_messages" in parse(served.text)


def test_an_api_of_several_processes_serves_all_their_counts(
    private_database_url: str, redis_server: str, logs: Path
) -> None:
    """With ``PROMETHEUS_MULTIPROC_DIR``, /metrics adds up every uvicorn process's files."""
    shared = logs / "prometheus"
    shared.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(shared)}
    redis_url = f"{redis_server}/{_REDIS_DB}"
    with Stack(database_url=private_database_url, redis_url=redis_url, logs=logs, env=env) as stack:
        argv = ["-m", "uvicorn", "api.app:create_app", "--factory", "--workers", "2"]
        argv += ["--host", "127.0.0.1", "--port", str(stack.port), "--no-access-log"]
        stack.api = stack.spawn("api", argv)
        wait_until(stack._api_up, timeout=30)
        requests = 40
        for _ in range(requests):  # a connection each: the processes share them out
            assert httpx.get(f"{stack.base_url}/v1/models").status_code == 401
        wait_until(lambda: len(list(shared.glob("counter_*.db"))) == 2, timeout=10)
        for _ in range(4):  # whichever process answers, it counts for both
            found = parse(httpx.get(f"{stack.base_url}/metrics").text)
            answered = total(found, "relayq_http_requests_total", route="/v1/models")
            assert answered == requests
        assert "relayq_queue_messages" in found
