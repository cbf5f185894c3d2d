"""Every answer carries the security headers and its request id; CORS is closed unless
configured, and then open to the configured origins alone."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from httpx_sse import connect_sse

from api.app import create_app
from relayq.config.settings import ApiSettings, Settings
from tests.jobs import body, submit, wait_for_status
from tests.stack import Stack

EXPECTED = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "content-security-policy": "frame-ancestors 'none'",
    "referrer-policy": "no-referrer",
}
"""Written out, not read from the code: emptying the code's list must fail here."""


def _secured(response: httpx.Response) -> None:
    found = {name: response.headers.get(name) for name in EXPECTED}
    assert found == EXPECTED, (response.request.url, response.status_code)
    assert response.headers["x-request-id"]


def test_every_kind_of_answer_carries_the_security_headers_and_a_request_id(
    client: httpx.Client, stack: Stack
) -> None:
    job = submit(client, body("secured"))
    wait_for_status(client, job["id"], {"succeeded"})
    answers = [
        client.get("/livez"),
        client.get(f"/v1/jobs/{job['id']}"),
        client.get("/v1/jobs/job_missing"),
        client.post("/v1/jobs", json={"model": "mock"}),
        client.post("/v1/jobs", content=b"{not json", headers={"content-type": "application/json"}),
        httpx.get(f"{stack.base_url}/v1/models"),
        client.get("/openapi.json"),
    ]
    assert [a.status_code for a in answers] == [200, 200, 404, 400, 400, 401, 200]
    for answer in answers:
        _secured(answer)
    with connect_sse(client, "GET", f"/v1/jobs/{job['id']}/events") as events:
        _secured(events.response)
        assert [e.event for e in events.iter_sse()][-1] == "succeeded"


def test_cors_is_closed_by_default(client: httpx.Client) -> None:
    """No origin is allowed: a browser refuses the answer to a page of another origin."""
    origin = {"origin": "https://app.example"}
    preflight = client.options(
        "/v1/jobs", headers={**origin, "access-control-request-method": "POST"}
    )
    simple = client.get("/v1/models", headers=origin)

    assert simple.status_code == 200
    for answer in (preflight, simple):
        assert "access-control-allow-origin" not in answer.headers
        _secured(answer)


@pytest.fixture
def cors_app() -> httpx.AsyncClient:
    settings = Settings(api=ApiSettings(cors_origins=["https://app.example"]))
    app = create_app(settings, configure_logs=False)
    # No lifespan: a preflight and /livez are answered before anything it opens is used.
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url="http://relayq.test")


def test_configured_origins_are_allowed_and_others_are_not(
    cors_app: httpx.AsyncClient,
) -> None:
    async def ask(origin: str) -> tuple[httpx.Response, httpx.Response]:
        preflight = await cors_app.options(
            "/v1/jobs",
            headers={
                "origin": origin,
                "access-control-request-method": "POST",
                "access-control-request-headers": "authorization, content-type, idempotency-key",
            },
        )
        simple = await cors_app.get("/livez", headers={"origin": origin})
        return preflight, simple

    async def both() -> list[tuple[httpx.Response, httpx.Response]]:
        async with cors_app:
            return [await ask("https://app.example"), await ask("https://evil.example")]

    (allowed, allowed_get), (refused, refused_get) = asyncio.run(both())

    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert "POST" in allowed.headers["access-control-allow-methods"]
    assert "idempotency-key" in allowed.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-credentials" not in allowed.headers
    assert allowed_get.headers["access-control-allow-origin"] == "https://app.example"
    assert "x-request-id" in allowed_get.headers["access-control-expose-headers"].lower()
    assert refused.status_code == 400
    assert "access-control-allow-origin" not in refused.headers
    assert "access-control-allow-origin" not in refused_get.headers
    for answer in (allowed, allowed_get, refused, refused_get):
        _secured(answer)
