"""Health probes on a real stack: ``/livez``, ``/readyz`` following the workers that
consume each routed provider's queue, and ``relayq health worker`` for a worker's
container. The heartbeat's publication itself is tested in tests/test_heartbeat.py."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.services import free_port
from tests.stack import ROOT, Stack, wait_until

WINDOW = 3.0
"""The readiness window of these stacks; their workers beat every half second."""

# Stacks of their own, and probes that depend on the database only for a SELECT 1.
pytestmark = [pytest.mark.slow(seconds=15), pytest.mark.usefixtures("sqlite_only")]

ONLY_MOCK_ROUTED = json.dumps({"mock": {"provider": "mock", "model": "mock"}})


def _env(**more: str) -> dict[str, str]:
    return {
        "RELAYQ_WORKER__HEARTBEAT_SECONDS": "0.5",
        "RELAYQ_HEALTH__WORKER_WINDOW_SECONDS": str(WINDOW),
        **more,
    }


@pytest.fixture
def broker_url(redis_server: str) -> Iterator[str]:
    """A Redis database of its own, empty: no other stack's worker beats into it."""
    url = f"{redis_server}/7"
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield url
    finally:
        client.flushdb()
        client.close()


def _get(stack: Stack, path: str) -> httpx.Response:
    return httpx.get(f"{stack.base_url}{path}", timeout=10)


def _ready(stack: Stack) -> bool:
    return _get(stack, "/readyz").status_code == 200


def _unready(stack: Stack) -> bool:
    return _get(stack, "/readyz").status_code == 503


def _worker_probe(stack: Stack) -> subprocess.CompletedProcess[str]:
    """``relayq health worker`` with the stack's settings, on this (the workers') host."""
    return subprocess.run(
        [sys.executable, "-m", "relayq.cli", "health", "worker"],
        cwd=ROOT,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _checks(response: httpx.Response) -> dict[str, Any]:
    checks: dict[str, Any] = response.json()["checks"]
    return checks


def test_readyz_follows_the_worker_consuming_the_routed_queue(
    private_database_url: str, broker_url: str, logs: Path
) -> None:
    env = _env(RELAYQ_ROUTES=ONLY_MOCK_ROUTED)
    with Stack(
        database_url=private_database_url, redis_url=broker_url, logs=logs, env=env
    ) as stack:
        stack.start_api()
        live = _get(stack, "/livez")
        assert (live.status_code, live.json()) == (200, {"status": "ok"})

        # No worker yet: the database and Redis answer, the queue has no consumer.
        waiting = _get(stack, "/readyz")
        assert waiting.status_code == 503
        assert waiting.json() == {
            "status": "unready",
            "checks": {
                "database": "ok",
                "redis": "ok",
                "queues": {"llm.mock": f"no worker seen in {WINDOW:g} s"},
            },
        }
        probe = _worker_probe(stack)
        assert probe.returncode == 1
        assert probe.stderr.strip().count("\n") == 0, probe.stderr
        assert "no relayq worker on" in probe.stderr

        worker = stack.start_worker()
        wait_until(lambda: _ready(stack), timeout=30)
        assert _get(stack, "/readyz").json() == {
            "status": "ready",
            "checks": {"database": "ok", "redis": "ok", "queues": {"llm.mock": "ok"}},
        }
        probe = _worker_probe(stack)
        assert probe.returncode == 0, probe.stderr
        assert probe.stdout.startswith("ok:")

        # Killed: no shutdown code runs, its record stays and ages past the window.
        stack.kill_worker(worker)
        wait_until(lambda: _unready(stack), timeout=WINDOW + 30)
        gone = _checks(_get(stack, "/readyz"))
        assert (gone["database"], gone["redis"]) == ("ok", "ok")
        assert gone["queues"]["llm.mock"].startswith(f"no worker seen in {WINDOW:g} s (last ")
        probe = _worker_probe(stack)
        assert probe.returncode == 1
        assert probe.stderr.strip().count("\n") == 0, probe.stderr
        assert f"beat in the last {WINDOW:g} s" in probe.stderr

        stack.start_worker()
        wait_until(lambda: _ready(stack), timeout=30)
        assert _worker_probe(stack).returncode == 0
        assert _get(stack, "/livez").status_code == 200


def test_readyz_names_each_routed_queue_no_worker_consumes(
    private_database_url: str, broker_url: str, logs: Path
) -> None:
    """The stack's default routing sends ``mock-idle`` to the ``idle`` provider, whose
    queue its workers do not consume: never ready, and it says which queue."""
    with Stack(
        database_url=private_database_url, redis_url=broker_url, logs=logs, env=_env()
    ) as stack:
        stack.start_api()
        stack.start_worker()

        def mock_consumed() -> bool:
            return bool(_checks(_get(stack, "/readyz"))["queues"]["llm.mock"] == "ok")

        wait_until(mock_consumed, timeout=30)
        response = _get(stack, "/readyz")
        assert response.status_code == 503
        assert response.json()["status"] == "unready"
        assert _checks(response)["queues"] == {
            "llm.idle": f"no worker seen in {WINDOW:g} s",
            "llm.mock": "ok",
        }


def test_readyz_is_503_while_redis_is_unreachable(private_database_url: str, logs: Path) -> None:
    nothing_there = f"redis://127.0.0.1:{free_port()}/0"
    env = _env(RELAYQ_ROUTES=ONLY_MOCK_ROUTED)
    with Stack(
        database_url=private_database_url, redis_url=nothing_there, logs=logs, env=env
    ) as stack:
        stack.start_api()  # it waits on /healthz, which needs the database only

        response = _get(stack, "/readyz")
        assert response.status_code == 503
        assert response.json() == {
            "status": "unready",
            "checks": {
                "database": "ok",
                "redis": "error: ConnectionError",
                "queues": {"llm.mock": "unknown: Redis did not answer"},
            },
        }
        assert _get(stack, "/livez").status_code == 200
        old = _get(stack, "/healthz")
        assert old.status_code == 200
        assert _checks(old) == {"database": "ok", "redis": "error: ConnectionError"}
        probe = _worker_probe(stack)
        assert probe.returncode == 1
        assert "Redis did not answer" in probe.stderr
