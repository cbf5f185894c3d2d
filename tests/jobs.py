"""Helpers for tests that submit jobs over HTTP and wait for them."""

from __future__ import annotations

from typing import Any

import httpx

from relayq.store.jobs import NewJob
from tests.stack import wait_until

__all__ = ["TERMINAL", "body", "mock_job", "submit", "wait_for_status"]

TERMINAL = {"succeeded", "failed", "cancelled"}


def body(text: str = "Hello", *, model: str = "mock", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def submit(client: httpx.Client, payload: dict[str, Any], **headers: str) -> dict[str, Any]:
    response = client.post("/v1/jobs", json=payload, headers=headers)
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    return job


def wait_for_status(
    client: httpx.Client, job_id: str, statuses: set[str], *, timeout: float = 30
) -> dict[str, Any]:
    """Poll the job until its status is one of ``statuses``; return it."""
    seen: dict[str, Any] = {}

    def reached() -> bool:
        response = client.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        seen.update(response.json())
        return seen["status"] in statuses

    wait_until(reached, timeout=timeout, interval=0.1)
    return seen


def mock_job(key_id: str, **fields: Any) -> NewJob:
    """A job of ``key_id`` for the mock model, to store directly; ``fields`` override."""
    defaults: dict[str, Any] = {
        "model": "mock",
        "route": "mock",
        "provider": "mock",
        "upstream_model": "mock",
        "request": {"model": "mock", "messages": [{"role": "user", "content": "x"}]},
        "priority": 5,
        "metadata": {},
    }
    return NewJob(key_id=key_id, **{**defaults, **fields})
