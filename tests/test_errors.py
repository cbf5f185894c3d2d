"""Bad input and bad credentials get a 4xx in OpenAI's error shape naming the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import httpx
import openai
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel
from sqlalchemy.exc import TimeoutError as PoolTimeout

from api.app import create_app
from api.errors import APIError, install_error_handlers
from relayq.config.settings import Settings
from relayq.intake.intake import BrokerUnavailable, KeyLimited, KeyLimitValues
from relayq.resilience.key_limits import Decision, KeyLimit
from relayq.routing.router import UnknownModel
from relayq.schemas.destinations import WebhookURLRefused
from relayq.store.jobs import IdempotencyConflict
from tests.conftest import KeyFactory
from tests.jobs import body
from tests.stack import Stack


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    payload: dict[str, Any] = response.json()
    assert set(payload) == {"error"}
    assert set(payload["error"]) == {"message", "type", "param", "code", "request_id"}
    error: dict[str, Any] = payload["error"]
    assert error["request_id"] == response.headers["x-request-id"]
    return error


def test_malformed_json(client: httpx.Client) -> None:
    response = client.post(
        "/v1/jobs",
        content=b'{"model": "mock", "messages": [',
        headers={"content-type": "application/json"},
    )

    error = error_of(response, 400)
    assert error["code"] == "invalid_json"
    assert "could not parse the JSON body" in error["message"]


def test_body_that_is_not_an_object(client: httpx.Client) -> None:
    error = error_of(client.post("/v1/jobs", json=["mock"]), 400)

    assert error["code"] == "invalid_body"
    assert "JSON object" in error["message"]


def test_missing_model(client: httpx.Client) -> None:
    payload = body()
    del payload["model"]

    error = error_of(client.post("/v1/jobs", json=payload), 400)

    assert error["param"] == "model"
    assert error["code"] == "missing_required_parameter"
    assert error["message"].startswith("Missing required parameter: 'model'")


def test_unknown_model(client: httpx.Client) -> None:
    error = error_of(client.post("/v1/jobs", json=body(model="gpt-9")), 404)

    assert error["param"] == "model"
    assert error["code"] == "model_not_found"
    assert "'gpt-9' does not exist" in error["message"]
    assert "mock" in error["message"]


def test_empty_messages(client: httpx.Client) -> None:
    error = error_of(client.post("/v1/jobs", json={"model": "mock", "messages": []}), 400)

    assert error["param"] == "messages"
    assert error["code"] == "empty_array"
    assert "empty array" in error["message"]


def test_invalid_nested_field_is_named_by_its_path(client: httpx.Client) -> None:
    payload = {
        "model": "mock",
        "messages": [{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}],
    }

    error = error_of(client.post("/v1/jobs", json=payload), 400)

    assert error["param"] == "messages[1].role"
    assert "'messages[1].role'" in error["message"]
    assert "user" in error["message"]


@pytest.mark.parametrize(
    ("field", "value"), [("priority", 12), ("temperature", 3), ("metadata", {"k": 5})]
)
def test_out_of_range_options(client: httpx.Client, field: str, value: object) -> None:
    error = error_of(client.post("/v1/jobs", json={**body(), field: value}), 400)

    assert error["param"] is not None
    assert error["param"].startswith(field)


def test_oversized_body_by_content_length(client: httpx.Client) -> None:
    huge = "x" * (3 * 1024 * 1024)

    error = error_of(client.post("/v1/jobs", json=body(huge)), 413)

    assert error["code"] == "request_too_large"
    assert "limit is 2097152 bytes" in error["message"]


def test_oversized_body_streamed_without_length(client: httpx.Client) -> None:
    def chunks() -> Any:
        yield b'{"model": "mock", "messages": [{"role": "user", "content": "'
        for _ in range(40):
            yield b"y" * 65536
        yield b'"}]}'

    response = client.post(
        "/v1/jobs", content=chunks(), headers={"content-type": "application/json"}
    )

    assert error_of(response, 413)["code"] == "request_too_large"


def test_unknown_job_id(client: httpx.Client) -> None:
    error = error_of(client.get("/v1/jobs/job_doesnotexist"), 404)

    assert error["code"] == "job_not_found"
    assert "job_doesnotexist" in error["message"]


def test_bad_list_parameters(client: httpx.Client) -> None:
    assert error_of(client.get("/v1/jobs", params={"limit": 0}), 400)["param"] == "limit"
    status_error = error_of(client.get("/v1/jobs", params={"status": "done"}), 400)
    assert status_error["param"] == "status"
    assert "succeeded" in status_error["message"]


def test_unknown_route_and_method(client: httpx.Client) -> None:
    assert "Unknown request URL" in error_of(client.get("/v1/nothing"), 404)["message"]
    assert error_of(client.delete("/v1/jobs"), 405)["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_api_key"),
        ({"Authorization": "Bearer rq-not-a-real-key"}, "invalid_api_key"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "invalid_authorization_header"),
    ],
)
def test_every_v1_route_needs_a_valid_key(stack: Stack, headers: dict[str, str], code: str) -> None:
    with httpx.Client(base_url=stack.base_url, headers=headers) as anonymous:
        responses = [
            anonymous.post("/v1/jobs", json=body()),
            anonymous.get("/v1/jobs"),
            anonymous.get("/v1/jobs/job_x"),
            anonymous.post("/v1/jobs/job_x/cancel"),
        ]

    for response in responses:
        error = error_of(response, 401)
        assert error["code"] == code
        assert error["type"] == "authentication_error"
        assert response.headers["www-authenticate"] == "Bearer"


def test_invalid_mock_controls_are_rejected_at_intake(client: httpx.Client) -> None:
    payload = body(mock={"latency_ms": -1})

    error = error_of(client.post("/v1/jobs", json=payload), 400)

    assert error["param"] == "mock.latency_ms"


def test_unknown_mock_control_is_named(client: httpx.Client) -> None:
    error = error_of(client.post("/v1/jobs", json=body(mock={"latncy_ms": 5})), 400)

    assert error["param"] == "mock.latncy_ms"
    assert "not permitted" in error["message"]


def test_an_exhausted_connection_pool_is_a_503_to_retry() -> None:
    # The handler relayq installs, on an app whose one route finds no free
    # connection: the caller is told to retry, not shown a 500.
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/busy")
    async def busy() -> None:
        raise PoolTimeout("QueuePool limit of size 1 overflow 0 reached")

    answer = TestClient(app).get("/busy")
    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == "2"
    assert answer.json()["error"]["code"] == "overloaded"


@pytest.mark.parametrize(
    ("raised", "status", "error"),
    [
        (
            UnknownModel("gpt-9", available=["mock", "gpt-4o"]),
            404,
            {
                "message": "The model 'gpt-9' does not exist or you do not have access to it. "
                "Available models: mock, gpt-4o.",
                "type": "not_found_error",
                "param": "model",
                "code": "model_not_found",
                "request_id": None,
            },
        ),
        (
            UnknownModel("gpt-9"),
            404,
            {
                "message": "The model 'gpt-9' does not exist or you do not have access to it. "
                "Available models: none.",
                "type": "not_found_error",
                "param": "model",
                "code": "model_not_found",
                "request_id": None,
            },
        ),
        (
            IdempotencyConflict("job_1", kind="job", idempotency_key="k-1"),
            409,
            {
                "message": "Idempotency-Key 'k-1' was already used for job 'job_1' with a "
                "different request body. Use a new key for a new request.",
                "type": "conflict_error",
                "param": "Idempotency-Key",
                "code": "idempotency_key_reused",
                "request_id": None,
            },
        ),
        (
            IdempotencyConflict("batch_1", kind="batch", idempotency_key="k-2"),
            409,
            {
                "message": "Idempotency-Key 'k-2' was already used for batch 'batch_1' with a "
                "different request body. Use a new key for a new batch.",
                "type": "conflict_error",
                "param": "Idempotency-Key",
                "code": "idempotency_key_reused",
                "request_id": None,
            },
        ),
        (
            WebhookURLRefused("10.1.2.3 is refused: it is private", param="webhook.url"),
            400,
            {
                "message": "Invalid 'webhook.url': 10.1.2.3 is refused: it is private. "
                "Webhooks are sent only to publicly routable addresses.",
                "type": "invalid_request_error",
                "param": "webhook.url",
                "code": "webhook_destination_refused",
                "request_id": None,
            },
        ),
        (
            BrokerUnavailable("the queue did not take job job_1: gone"),
            503,
            {
                "message": "The job queue is unavailable: the queue did not take job job_1: gone.",
                "type": "service_unavailable_error",
                "param": None,
                "code": "overloaded",
                "request_id": None,
            },
        ),
    ],
)
def test_relayqs_own_errors_are_answered_in_one_place(
    raised: Exception, status: int, error: dict[str, Any]
) -> None:
    # A route lets relayq's exception propagate; api/errors.py answers it (with no
    # request id: this app has no request observer to give one).
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/fails")
    async def fails() -> None:
        raise raised

    answer = TestClient(app).get("/fails")
    assert answer.status_code == status
    assert answer.json() == {"error": error}
    assert set(answer.headers) == {"content-length", "content-type"}


class Shape(BaseModel):
    count: int


def _app_with_failing_routes(tmp_path: Path) -> FastAPI:
    """The API as ``create_app`` builds it (its middleware and handlers), plus routes that
    fail in each of the ways a route can; no services are started, none is needed."""
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'unused.db'}", api={"max_body_bytes": 1024}
    )
    app = create_app(settings, configure_logs=False)

    async def validated(shape: Shape) -> None: ...

    async def refused() -> None:
        raise APIError(409, "Refused.", code="refused", param="thing")

    async def limited() -> None:
        decision = Decision(allowed=False, retry_after=3, limit=KeyLimit.REQUESTS_PER_MINUTE)
        raise KeyLimited(decision, KeyLimitValues(requests_per_minute=1, max_concurrent_jobs=None))

    async def broken() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/test/validated", validated, methods=["POST"])
    app.add_api_route("/test/refused", refused)
    app.add_api_route("/test/limited", limited)
    app.add_api_route("/test/broken", broken)
    return app


@pytest.mark.parametrize(
    ("method", "path", "send", "status", "code"),
    [
        ("POST", "/test/validated", {"json": {"count": "many"}}, 400, "invalid_value"),
        (
            "POST",
            "/test/validated",
            {"content": b"{", "headers": {"content-type": "application/json"}},
            400,
            "invalid_json",
        ),
        ("GET", "/test/refused", {}, 409, "refused"),
        ("GET", "/test/limited", {}, 429, "rate_limit_exceeded"),
        ("GET", "/no/such/route", {}, 404, None),
        ("DELETE", "/test/refused", {}, 405, None),
        ("POST", "/test/validated", {"content": b"x" * 2000}, 413, "request_too_large"),
        (
            "POST",
            "/test/validated",
            {"content": [b"x" * 1000] * 2, "headers": {"content-type": "application/json"}},
            413,
            "request_too_large",
        ),
        ("GET", "/v1/jobs/%00", {}, 400, "invalid_value"),
        ("GET", "/test/broken", {}, 500, None),
    ],
    ids=[
        "validation",
        "invalid-json",
        "api-error",
        "rate-limit",
        "unknown-route",
        "method",
        "body-limit-by-length",
        "body-limit-streamed",
        "url-check",
        "unhandled",
    ],
)
def test_every_error_names_the_request_id_of_its_header(
    tmp_path: Path,
    method: str,
    path: str,
    send: dict[str, Any],
    status: int,
    code: str | None,
) -> None:
    app = _app_with_failing_routes(tmp_path)
    with TestClient(app, raise_server_exceptions=False) as http:
        answer = http.request(method, path, **send)
        headers = {**send.get("headers", {}), "x-request-id": "ticket-42"}
        echoed = http.request(method, path, **{**send, "headers": headers})

    error = error_of(cast(httpx.Response, answer), status)
    assert error["code"] == code
    assert error["request_id"].startswith("req_")
    assert error_of(cast(httpx.Response, echoed), status)["request_id"] == "ticket-42"


def test_the_openai_sdk_reads_an_error_and_its_request_id(
    stack: Stack, make_key: KeyFactory
) -> None:
    sdk = openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key=make_key(), max_retries=0)

    with pytest.raises(openai.NotFoundError) as raised:
        sdk.files.retrieve("file_nope")

    error = raised.value
    assert (error.code, error.param, error.type) == ("file_not_found", "file_id", "not_found_error")
    assert error.request_id is not None
    assert isinstance(error.body, dict)
    assert error.body["request_id"] == error.request_id
