"""Retries, fallback, the shared breaker, global and per-key limits, deadlines: end to end."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from httpx_sse import connect_sse

from relayq.store import Database
from relayq.store.keys import create_key
from tests.jobs import body, submit, wait_for_status
from tests.services import reset_database, run
from tests.stack import Stack

PROVIDERS = {
    "down": {"type": "mock", "options": {"fault": "error", "status": 503}},
    "dead1": {"type": "mock", "options": {"fault": "error", "status": 503}},
    "dead2": {"type": "mock", "options": {"fault": "error", "status": 500}},
    "overloaded": {"type": "mock", "options": {"fault": "error", "status": 529}},
    "backup": {"type": "mock"},
    "limited": {"type": "mock"},
    "breaking": {"type": "mock", "options": {"fault": "error", "status": 502}},
    "idle": {"type": "mock"},
}


def ordered(*deployments: tuple[str, str]) -> dict[str, Any]:
    return {
        "strategy": "ordered",
        "deployments": [{"provider": p, "model": m} for p, m in deployments],
    }


ROUTES = {
    "resilient": ordered(("down", "m1"), ("backup", "m2")),
    "overloaded-first": ordered(("overloaded", "m1"), ("backup", "m2")),
    "all-down": ordered(("dead1", "m1"), ("dead2", "m3")),
    "breaking": ordered(("breaking", "m1"), ("backup", "m2")),
    "limited": {"deployments": [{"provider": "limited", "model": "m1", "rpm": 60}]},
    "mock-idle": {"provider": "idle", "model": "m"},
}


@dataclass
class Env:
    stack: Stack
    database_url: str

    def key(self, **limits: Any) -> str:
        async def create() -> str:
            database = Database(self.database_url)
            try:
                async with database.session() as session:
                    return (await create_key(session, name="resilience", **limits)).secret
            finally:
                await database.aclose()

        return run(create())

    def client(self, **limits: Any) -> httpx.Client:
        return httpx.Client(
            base_url=self.stack.base_url,
            headers={"Authorization": f"Bearer {self.key(**limits)}"},
            timeout=10,
        )


@pytest.fixture(scope="module")
def env(backend: str, redis_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    if backend == "postgresql":
        pytest.skip("resilience logic lives in Redis and the worker; SQLite covers it")
    database_url = f"sqlite:///{tmp_path_factory.mktemp('resilience') / 'relayq.db'}"
    reset_database(database_url)
    settings = {
        "RELAYQ_PROVIDERS": json.dumps(PROVIDERS),
        "RELAYQ_ROUTES": json.dumps(ROUTES),
        "RELAYQ_WORKER__PROVIDERS": json.dumps(sorted(PROVIDERS.keys() - {"idle"})),
        "RELAYQ_KEY_PREFIX": "relayq-resilience",
        "RELAYQ_BREAKER__FAILURE_THRESHOLD": "3",
        "RELAYQ_BREAKER__COOLDOWN_SECONDS": "60",
    }
    logs = tmp_path_factory.mktemp("resilience-logs")
    with Stack(
        database_url=database_url,
        redis_url=f"{redis_server}/13",
        logs=logs,
        env=settings,
        supervise=False,
    ) as stack:
        import redis as sync_redis

        sync_redis.Redis.from_url(f"{redis_server}/13").flushdb()
        stack.start_api()
        stack.start_worker()
        yield Env(stack=stack, database_url=database_url)


def finish(client: httpx.Client, payload: dict[str, Any]) -> dict[str, Any]:
    job = submit(client, payload)
    return wait_for_status(client, job["id"], {"succeeded", "failed", "expired"}, timeout=60)


def events_of(client: httpx.Client, job_id: str) -> list[tuple[str, dict[str, Any]]]:
    with connect_sse(client, "GET", f"/v1/jobs/{job_id}/events") as source:
        return [(e.event, json.loads(e.data)["data"]) for e in source.iter_sse()]


def test_retries_then_falls_back_to_the_next_deployment(env: Env) -> None:
    with env.client() as client:
        done = finish(client, body("fall back", model="resilient"))
        events = events_of(client, done["id"])

    assert done["status"] == "succeeded", done["error"]
    assert done["provider"] == "backup"
    assert [(a["provider"], a["status"]) for a in done["attempts"]] == [
        ("down", "failed"),
        ("down", "failed"),
        ("down", "failed"),
        ("backup", "succeeded"),
    ]
    kinds = [kind for kind, _ in events]
    assert kinds.count("attempt_failed") == 3
    [fallback] = [data for kind, data in events if kind == "fallback"]
    assert (fallback["from"]["provider"], fallback["to"]["provider"]) == ("down", "backup")
    assert kinds[-1] == "succeeded"


def test_an_overloaded_provider_is_left_at_once(env: Env) -> None:
    with env.client() as client:
        done = finish(client, body("overloaded", model="overloaded-first"))

    assert done["status"] == "succeeded"
    assert [(a["provider"], a["status"]) for a in done["attempts"]] == [
        ("overloaded", "failed"),
        ("backup", "succeeded"),
    ]


def test_an_exhausted_route_fails_with_every_attempt_listed(env: Env) -> None:
    with env.client() as client:
        done = finish(client, body("nowhere", model="all-down"))

    assert done["status"] == "failed"
    listed = [(a["provider"], a["model"]) for a in done["error"]["attempts"]]
    assert listed == [("dead1", "m1")] * 3 + [("dead2", "m3")] * 3
    assert "after 6 attempt(s)" in done["error"]["message"]
    assert len(done["attempts"]) == 6


def test_a_client_error_fails_at_once_without_fallback(env: Env) -> None:
    with env.client() as client:
        # The request's own fault wins over the provider's: a 400, not a 529.
        done = finish(client, body(model="overloaded-first", mock={"fault": "invalid_request"}))

    assert done["status"] == "failed"
    assert [(a["provider"], a["status"]) for a in done["attempts"]] == [("overloaded", "failed")]
    assert done["error"]["code"] == "invalid_request"


def test_the_breaker_opens_and_later_jobs_skip_the_deployment(env: Env) -> None:
    admin = env.key(admin=True)
    with env.client() as client:
        first = finish(client, body("trip it", model="breaking"))
        after = finish(client, body("skip it", model="breaking"))
        breakers = httpx.get(
            f"{env.stack.base_url}/v1/admin/breakers", headers={"Authorization": f"Bearer {admin}"}
        ).json()["data"]
        forbidden = client.get("/v1/admin/breakers")

    assert first["status"] == after["status"] == "succeeded"
    # Three provider failures opened the breaker (threshold 3)...
    assert [a["status"] for a in first["attempts"]] == ["failed"] * 3 + ["succeeded"]
    # ...so the next job made no call to it and fell back straight away.
    assert [(a["provider"], a["status"]) for a in after["attempts"]] == [
        ("breaking", "skipped"),
        ("backup", "succeeded"),
    ]
    assert after["attempts"][0]["error"]["code"] == "breaker_open"
    state = {b["deployment"]: b["state"] for b in breakers}
    assert state["breaking|m1"] == "open"
    assert state["backup|m2"] == "closed"
    assert forbidden.status_code == 403
    assert forbidden.json()["error"]["code"] == "insufficient_scope"


def test_a_global_rate_limit_makes_jobs_wait_their_turn(env: Env) -> None:
    with env.client() as client:
        jobs = [submit(client, body(f"limited {i}", model="limited")) for i in range(6)]
        done = [wait_for_status(client, j["id"], {"succeeded", "failed"}, timeout=60) for j in jobs]

    assert {d["status"] for d in done} == {"succeeded"}
    starts = sorted(d["started_at"] for d in done)
    # 60 per minute, paced: one call about every second, never a burst.
    assert all(later - earlier >= 0.9 for earlier, later in itertools.pairwise(starts))
    assert all(len(d["attempts"]) == 1 for d in done)  # waiting is not an attempt


def test_per_key_requests_per_minute(env: Env) -> None:
    with env.client(requests_per_minute=3) as client:
        answers = [client.post("/v1/jobs", json=body(f"r{i}")) for i in range(4)]

    # The first three pass the key's limit (and fail on the unknown model).
    assert [a.status_code for a in answers[:3]] == [404, 404, 404]
    limited = answers[3]
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"
    assert int(limited.headers["retry-after"]) >= 1


def test_per_key_concurrent_jobs(env: Env) -> None:
    with env.client(max_concurrent_jobs=1) as client:
        slow = submit(client, body("slow", model="mock-idle"))
        refused = client.post("/v1/jobs", json=body("second", model="mock-idle"))
        client.post(f"/v1/jobs/{slow['id']}/cancel")
        accepted = client.post("/v1/jobs", json=body("third", model="mock-idle"))

    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "too_many_concurrent_jobs"
    assert accepted.status_code == 202


def test_per_key_limits_refuse_a_sync_call_before_it_is_sent(env: Env) -> None:
    """A sync chat call is admitted in the same step as its message is sent: refused,
    it answers 429 and no job is made of it (no row, no call)."""
    with env.client(max_concurrent_jobs=1) as client:
        slow = submit(client, body("slow", model="mock-idle"))
        refused = client.post(
            "/v1/chat/completions",
            json={"model": "mock-idle", "messages": [{"role": "user", "content": "more"}]},
        )
        time.sleep(1)  # a call that was sent would have its row by now (50 ms)
        listed = client.get("/v1/jobs").json()["data"]
        client.post(f"/v1/jobs/{slow['id']}/cancel")

    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "too_many_concurrent_jobs"
    assert [job["id"] for job in listed] == [slow["id"]]


def test_a_job_past_its_deadline_expires_instead_of_running(env: Env) -> None:
    with env.client() as client:
        job = submit(client, body("too late", model="mock-idle", completion_window="1s"))
        done = wait_for_status(client, job["id"], {"expired"}, timeout=30)
        events = events_of(client, job["id"])

    assert done["status"] == "expired"
    assert done["attempts"] == []
    assert events[-1][0] == "expired"


def test_an_unreachable_database_answers_503(tmp_path: Any, redis_server: str) -> None:
    database_url = f"sqlite:///{tmp_path / 'missing-dir' / 'relayq.db'}"
    stack = Stack(database_url=database_url, redis_url=f"{redis_server}/13", logs=tmp_path)
    stack.api = stack.spawn(
        "api",
        [
            "-m",
            "uvicorn",
            "api.app:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(stack.port),
        ],
    )
    try:
        deadline = time.monotonic() + 30
        response = None
        while time.monotonic() < deadline:
            try:
                response = httpx.post(
                    f"{stack.base_url}/v1/jobs", json=body(), headers={"Authorization": "Bearer x"}
                )
                break
            except httpx.TransportError:
                time.sleep(0.2)
    finally:
        stack.stop()

    assert response is not None
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "database_unavailable"
    assert response.headers["retry-after"] == "5"
