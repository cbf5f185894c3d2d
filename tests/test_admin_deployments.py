"""Operators' deployment controls: breakers listed and reset, deployments drained and
resumed, each action audited. In process (the drained set followed through Redis by
another process, the router's choice) and over HTTP against a live stack with a real
worker, on each database."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio as aioredis

from relayq.config.routes import RoutingConfig
from relayq.routing.drains import Drains
from relayq.routing.router import Router, RouteUnavailable
from relayq.store import Database
from relayq.store.audit import list_audit
from relayq.store.keys import create_key
from relayq.store.models import AuditEntry
from tests.jobs import body, submit, wait_for_status
from tests.services import reset_database, run, scratch_postgres_database, until
from tests.stack import Stack, wait_until

# In process: the drained set and the router.

ROUTING = RoutingConfig.model_validate(
    {
        "providers": {"a": {"type": "mock"}, "b": {"type": "mock"}},
        "routes": {
            "pair": {
                "strategy": "ordered",
                "deployments": [{"provider": "a", "model": "m"}, {"provider": "b", "model": "m"}],
            },
            "single": {"provider": "b", "model": "m"},
        },
    }
)


def test_a_drain_reaches_another_process_and_routing_skips_the_deployment(
    redis_url: str,
) -> None:
    async def main() -> None:
        prefix = f"test-{uuid.uuid4().hex[:8]}"
        admin_client, follower_client = (aioredis.Redis.from_url(redis_url) for _ in range(2))
        admin = Drains(admin_client, key_prefix=prefix)
        follower = Drains(follower_client, key_prefix=prefix)
        router = Router(ROUTING, drains=follower)
        watching = asyncio.create_task(follower.watch(retry_seconds=0.1))
        try:
            first = await router.choose("pair")
            assert await admin.drain("a|m", now=100.0) is None
            await until(lambda: follower.drained == {"a|m"})
            fallback = await router.choose("pair")
            assert await admin.drain("a|m", now=200.0) == 100.0  # already: its time is kept
            await admin.drain("b|m", now=300.0)
            await until(lambda: follower.drained == {"a|m", "b|m"})
            with pytest.raises(RouteUnavailable) as unavailable:
                await router.choose("single")
            anyway = await router.choose("single", drained_too=True)  # a batch's choice
            drained = await admin.every()
            assert await admin.resume("b|m") == 300.0
            assert await admin.resume("b|m") is None
            await until(lambda: follower.drained == {"a|m"})
            back = await router.choose("single")
        finally:
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching
            for client in (admin_client, follower_client):
                await client.aclose()

        assert (first.provider, fallback.provider, back.provider) == ("a", "b", "b")
        assert anyway.provider == "b"
        assert (fallback.route, fallback.index) == ("pair", 1)
        assert unavailable.value.drained == ["b|m"]
        assert drained == {"a|m": 100.0, "b|m": 300.0}

    run(main())


def test_a_process_starting_reads_what_was_drained_before_it(redis_url: str) -> None:
    async def main() -> None:
        prefix = f"test-{uuid.uuid4().hex[:8]}"
        client = aioredis.Redis.from_url(redis_url)
        try:
            await Drains(client, key_prefix=prefix).drain("a|m", now=1.0)
            late = Drains(client, key_prefix=prefix)
            before = late.drained
            watching = asyncio.create_task(late.watch())
            await until(lambda: late.drained == {"a|m"})
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching
        finally:
            await client.aclose()
        assert before == frozenset()

    run(main())


# Over HTTP: a live stack.

PROVIDERS = {
    "primary": {"type": "mock"},
    "secondary": {"type": "mock"},
    "flaky": {"type": "mock"},
    "single": {"type": "mock"},
    "broken": {"type": "mock", "options": {"fault": "error", "status": 503}},
}
ROUTES = {
    "pair": {
        "strategy": "ordered",
        "deployments": [
            {"provider": "primary", "model": "m1"},
            {"provider": "secondary", "model": "m2"},
        ],
    },
    "flaky": {"provider": "flaky", "model": "m"},
    "single": {"provider": "single", "model": "m"},
    "chain": {
        "strategy": "ordered",
        "deployments": [
            {"provider": "broken", "model": "m"},
            {"provider": "primary", "model": "m1"},
            {"provider": "secondary", "model": "m2"},
        ],
    },
}
_REDIS_DB = 3
FAIL = {"mock": {"fault": "error", "status": 503}}
"""A request the mock provider fails as a provider-side error (the breaker counts it)."""


@dataclass
class Env:
    stack: Stack
    database_url: str
    admin_id: str
    admin: httpx.Client
    user: httpx.Client

    def audit(self, action: str) -> list[AuditEntry]:
        async def read() -> list[AuditEntry]:
            database = Database(self.database_url)
            try:
                async with database.session() as session:
                    return (await list_audit(session, limit=100, action=action))[0]
            finally:
                await database.aclose()

        return run(read())


@pytest.fixture(scope="module")
def env(backend: str, redis_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with _database(backend, tmp_path_factory) as database_url:
        redis_url = f"{redis_server}/{_REDIS_DB}"
        redis.Redis.from_url(redis_url).flushdb()
        settings = {
            "RELAYQ_KEY_PREFIX": "relayq-admin-deployments",
            "RELAYQ_PROVIDERS": json.dumps(PROVIDERS),
            "RELAYQ_ROUTES": json.dumps(ROUTES),
            "RELAYQ_WORKER__PROVIDERS": json.dumps(sorted(PROVIDERS)),
            "RELAYQ_BREAKER__FAILURE_THRESHOLD": "2",
            "RELAYQ_BREAKER__COOLDOWN_SECONDS": "300",
        }
        admin_id, admin_secret = _key(database_url, admin=True)
        _, user_secret = _key(database_url, admin=False)
        with (
            Stack(
                database_url=database_url,
                redis_url=redis_url,
                logs=tmp_path_factory.mktemp("admin-deployments-logs"),
                env=settings,
                supervise=False,
            ) as stack,
            _client(stack, admin_secret) as admin,
            _client(stack, user_secret) as user,
        ):
            stack.start_api()
            stack.start_worker()
            yield Env(stack, database_url, admin_id, admin, user)


def _database(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    if backend == "postgresql":
        return scratch_postgres_database(os.environ["RELAYQ_TEST_DATABASE_URL"])
    url = f"sqlite:///{tmp_path_factory.mktemp('admin-deployments') / 'relayq.db'}"
    reset_database(url)
    return contextlib.nullcontext(url)


def _key(database_url: str, *, admin: bool) -> tuple[str, str]:
    async def create() -> tuple[str, str]:
        database = Database(database_url)
        try:
            async with database.session() as session:
                created = await create_key(session, name="admin" if admin else "user", admin=admin)
                return created.id, created.secret
        finally:
            await database.aclose()

    return run(create())


def _client(stack: Stack, secret: str) -> httpx.Client:
    return httpx.Client(
        base_url=stack.base_url, headers={"Authorization": f"Bearer {secret}"}, timeout=10
    )


def _deployments(env: Env) -> dict[str, dict[str, Any]]:
    response = env.admin.get("/v1/admin/deployments")
    assert response.status_code == 200, response.text
    return {d["id"]: d for d in response.json()["data"]}


def _breakers(env: Env) -> dict[str, str]:
    response = env.admin.get("/v1/admin/breakers")
    assert response.status_code == 200, response.text
    return {b["deployment"]: b["state"] for b in response.json()["data"]}


def _provider_of_a_new_job(env: Env, model: str) -> str:
    job = submit(env.user, body("which one?", model=model))
    done = wait_for_status(env.user, job["id"], {"succeeded", "failed"})
    assert done["status"] == "succeeded", done
    return str(done["provider"])


def _stored(env: Env, job_id: str) -> dict[str, Any]:
    """A sync job's row, once its worker stored it (just after the answer)."""
    found: dict[str, Any] = {}

    def stored() -> bool:
        response = env.user.get(f"/v1/jobs/{job_id}")
        found.update(response.json() if response.status_code == 200 else {})
        return found.get("status") == "succeeded"

    wait_until(stored, timeout=10, interval=0.1)
    return found


def test_every_routed_deployment_is_listed(env: Env) -> None:
    found = _deployments(env)

    assert sorted(found) == ["broken|m", "flaky|m", "primary|m1", "secondary|m2", "single|m"]
    assert found["primary|m1"] == {
        "object": "deployment",
        "id": "primary|m1",
        "provider": "primary",
        "model": "m1",
        "routes": ["chain", "pair"],
        "drained": False,
        "drained_at": None,
        "breaker": "closed",
        "in_flight": 0,
    }


def test_a_breaker_opened_by_failures_is_listed_then_reset_and_jobs_flow(env: Env) -> None:
    def opened() -> bool:
        failing = submit(env.user, body("fail", model="flaky", **FAIL))
        wait_for_status(env.user, failing["id"], {"failed"})
        return _breakers(env)["flaky|m"] == "open"

    wait_until(opened, timeout=60, interval=0.1)
    listed = _deployments(env)["flaky|m"]["breaker"]
    refused = submit(env.user, body("refused", model="flaky"))
    refused_done = wait_for_status(env.user, refused["id"], {"succeeded", "failed"})

    reset = env.admin.post("/v1/admin/breakers/flaky|m/reset")
    flowing = _provider_of_a_new_job(env, "flaky")

    assert listed == "open"
    assert refused_done["status"] == "failed"
    assert refused_done["error"]["code"] == "breaker_open"
    assert reset.status_code == 200, reset.text
    states = {b["deployment"]: b for b in reset.json()["data"]}
    assert states["flaky|m"]["state"] == "closed"
    assert states["flaky|m"]["consecutive_failures"] == 0
    assert flowing == "flaky"
    (entry,) = env.audit("breaker.reset")
    assert (entry.actor_key_id, entry.target) == (env.admin_id, "flaky|m")
    assert entry.request_id == reset.headers["x-request-id"]
    assert entry.before is not None
    assert entry.after is not None
    assert (entry.before["state"], entry.after["state"]) == ("open", "closed")
    assert entry.before["consecutive_failures"] >= 2


def test_a_drained_deployment_gets_no_new_jobs_until_resumed(env: Env) -> None:
    before = _provider_of_a_new_job(env, "pair")

    drained = env.admin.post("/v1/admin/deployments/primary|m1/drain")
    during = _provider_of_a_new_job(env, "pair")
    sync = env.user.post("/v1/chat/completions", json=body("sync", model="pair"))
    sync_job = _stored(env, sync.headers["x-relayq-job-id"])
    listed = _deployments(env)["primary|m1"]
    resumed = env.admin.post("/v1/admin/deployments/primary|m1/resume")
    after = _provider_of_a_new_job(env, "pair")

    assert (before, during, sync_job["provider"], after) == (
        "primary",
        "secondary",
        "secondary",
        "primary",
    )
    assert drained.status_code == 200, drained.text
    assert drained.json()["drained"] is True
    assert listed["drained"] is True
    assert listed["drained_at"] == drained.json()["drained_at"]
    assert resumed.status_code == 200, resumed.text
    assert (resumed.json()["drained"], resumed.json()["drained_at"]) == (False, None)
    (drain,) = env.audit("deployment.drain")
    (resume,) = env.audit("deployment.resume")
    assert (drain.actor_key_id, drain.target, resume.target) == (
        env.admin_id,
        "primary|m1",
        "primary|m1",
    )
    assert drain.request_id == drained.headers["x-request-id"]
    assert resume.request_id == resumed.headers["x-request-id"]
    drained_at = drained.json()["drained_at"]
    assert (drain.before, drain.after) == (
        {"drained": False, "drained_at": None},
        {"drained": True, "drained_at": drained_at},
    )
    assert (resume.before, resume.after) == (
        {"drained": True, "drained_at": drained_at},
        {"drained": False, "drained_at": None},
    )


def test_the_worker_s_fallback_passes_a_drained_deployment_over(env: Env) -> None:
    assert env.admin.post("/v1/admin/deployments/primary|m1/drain").status_code == 200
    try:
        job = submit(env.user, body("fall over", model="chain"))
        done = wait_for_status(env.user, job["id"], {"succeeded", "failed"})
    finally:
        assert env.admin.post("/v1/admin/deployments/primary|m1/resume").status_code == 200

    assert job["provider"] == "broken"  # the route's first, not drained
    assert (done["status"], done["provider"]) == ("succeeded", "secondary")
    assert "primary" not in {a["provider"] for a in done["attempts"]}


def test_a_route_whose_every_deployment_is_drained_answers_503(env: Env) -> None:
    assert env.admin.post("/v1/admin/deployments/single|m/drain").status_code == 200
    try:
        job = env.user.post("/v1/jobs", json=body("none left", model="single"))
        sync = env.user.post("/v1/chat/completions", json=body("none left", model="single"))
    finally:
        assert env.admin.post("/v1/admin/deployments/single|m/resume").status_code == 200
    served_again = _provider_of_a_new_job(env, "single")

    expected = {
        "error": {
            "message": (
                "The model 'single' is unavailable: every deployment serving it is drained "
                "(single|m). Retry later."
            ),
            "type": "service_unavailable_error",
            "param": "model",
            "code": "route_unavailable",
        }
    }
    for answer in (job, sync):
        expected["error"]["request_id"] = answer.headers["x-request-id"]
        assert (answer.status_code, answer.json()) == (503, expected)
    assert served_again == "single"


def test_an_unknown_deployment_is_a_404_and_is_not_audited(env: Env) -> None:
    before = {a: len(env.audit(a)) for a in ("deployment.drain", "breaker.reset")}
    answers = [
        env.admin.post("/v1/admin/deployments/nope|m/drain"),
        env.admin.post("/v1/admin/deployments/nope|m/resume"),
        env.admin.post("/v1/admin/breakers/nope|m/reset"),
    ]

    for answer in answers:
        assert answer.status_code == 404
        assert answer.json()["error"]["code"] == "deployment_not_found"
        assert answer.json()["error"]["param"] == "deployment"
    assert {a: len(env.audit(a)) for a in before} == before


def test_the_admin_routes_need_the_admin_scope(env: Env) -> None:
    before = len(env.audit("deployment.drain"))
    answers = [
        env.user.get("/v1/admin/deployments"),
        env.user.get("/v1/admin/breakers"),
        env.user.post("/v1/admin/deployments/secondary|m2/drain"),
        env.user.post("/v1/admin/deployments/secondary|m2/resume"),
        env.user.post("/v1/admin/breakers/secondary|m2/reset"),
    ]

    for answer in answers:
        assert answer.status_code == 403, answer.text
        assert answer.json()["error"]["code"] == "insufficient_scope"
    assert len(env.audit("deployment.drain")) == before
    assert _deployments(env)["secondary|m2"]["drained"] is False
