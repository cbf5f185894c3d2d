"""Property-based fuzzing of the whole OpenAPI document against the live stack.

schemathesis reads the API's OpenAPI document (built as ``/openapi.json``
serves it) and, for every operation, sends the live stack requests that fit
the schema and requests that do not: boundary and wrong-typed values of
every parameter and body field (its coverage phase), then random ones
(``_EXAMPLES`` per operation in each of its positive and negative modes),
with an admin key so that the admin routes are reached too. Whatever it
sends, the API must not answer 5xx, and every 4xx must be OpenAI's error
body, ``{"error": {"message", "type", "param", "code", "request_id"}}``, its
``request_id`` the one of its ``x-request-id`` header.

Steered (:func:`steer`), so that requests get past the first check: a string
``model`` becomes ``mock-idle`` on ``POST /v1/jobs`` (the job is stored and
queued on a queue no worker consumes, so nothing runs) and ``mock`` on
``POST /v1/chat/completions`` and ``/v1/images/generations`` (the mock
provider answers at once; the body's ``mock`` controls are dropped, as they
ask for delays and faults on purpose); a message batch keeps its first three requests (each is a job
stored and queued); an upload's ``purpose`` becomes ``batch``; an http(s) webhook URL
points at 127.0.0.1, so that no name is looked up off this machine.

No operation is excluded, as none waits long: the SSE ``/events`` streams of
jobs and batches are asked for random ids, which answer 404 at once (no real
id is known to the fuzzer), and a chat completion waits for the mock
provider only. Each call times out after 15 s, so that a hang fails the test
instead of stalling the run. About 40 s of CPU per database.
Not covered here: sequences of calls (a real job's events, cancel, batch
files), which tests/test_bad_input.py probes by hand.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import Case
from schemathesis.specs.openapi.schemas import OpenApiSchema

from api.openapi import openapi_document
from relayq.store import Database
from relayq.store.keys import create_key
from tests.errors import anthropic_shape_problem, shape_problem
from tests.stack import Stack

pytestmark = pytest.mark.slow(seconds=60)  # every operation fuzzed against a live stack

_EXAMPLES = 10
"""Random requests per operation and mode, after the coverage phase's boundary and
wrong-typed values (which find most: a cursor one past a 32-bit id, say). Each run
draws afresh, so every CI run tries new ones."""
_TIMEOUT = 15.0
_ANSWERED_BY_THE_MOCK = {("POST", "/v1/chat/completions"), ("POST", "/v1/images/generations")}
_BATCH_REQUESTS = 3
"""The most requests a fuzzed message batch keeps: each is a job stored and queued."""
_LOOPBACK_HOOK = "http://127.0.0.1:9/hook"
"""What an http(s) webhook URL becomes: checking any other host would look its name up."""


@pytest.fixture
def api_schema() -> OpenApiSchema:
    return schemathesis.openapi.from_dict(openapi_document())


# Loaded when the test runs, each operation a subtest of one test per database: built
# at collection, every operation's coverage cases were worked out by every test process
# (5 s of CPU each), though only one runs them.
schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.fixture
def admin(database_url: str) -> dict[str, str]:
    """Headers with a new admin key: every route, the admin ones too, is reached."""

    async def create() -> str:
        database = Database(database_url)
        try:
            async with database.session() as session:
                return (await create_key(session, name="fuzz", admin=True)).secret
        finally:
            await database.aclose()

    return {"Authorization": f"Bearer {asyncio.run(create())}"}


def steer(case: Case[Any]) -> None:
    """Real names where random ones stop every request at a 404 or 400; no DNS lookups."""
    if case.path.startswith("/v1/messages") and case.headers:
        case.headers.pop("x-api-key", None)  # the admin's bearer key gets past auth
    body = case.body
    if not isinstance(body, dict):
        return
    operation = (case.method.upper(), case.path)
    if operation == ("POST", "/v1/jobs") and isinstance(body.get("model"), str):
        body["model"] = "mock-idle"
    elif operation in _ANSWERED_BY_THE_MOCK and isinstance(body.get("model"), str):
        body["model"] = "mock"
        body.pop("mock", None)
    elif operation == ("POST", "/v1/messages/batches") and isinstance(
        requests := body.get("requests"), list
    ):
        del requests[_BATCH_REQUESTS:]  # each is a job stored: a few show the shape
    elif operation == ("POST", "/v1/files") and isinstance(body.get("purpose"), str):
        body["purpose"] = "batch"
    for holder in (body, body.get("webhook")):
        if isinstance(holder, dict) and _is_http(holder.get("url")):
            holder["url"] = _LOOPBACK_HOOK


def _is_http(url: object) -> bool:
    return isinstance(url, str) and url[:8].lower().startswith(("http://", "https://"))


_CALLS = (
    r"^POST /v1/(jobs|chat/completions|completions|embeddings|images/generations"
    r"|messages|messages/batches|responses)$"
)
"""The operations that make jobs and calls, the longest to fuzz: a test of their own, so
that two processes share the fuzzing of a database."""

_SETTINGS = settings(
    max_examples=_EXAMPLES,
    deadline=None,
    database=None,  # no failures replayed from earlier runs: each run draws afresh
    suppress_health_check=list(HealthCheck),
)


@pytest.mark.timeout(300)  # one test runs every operation of its half
@pytest.mark.usefixtures("backend")  # the lazy schema's test names no fixture pytest sees
@schema.include(name_regex=_CALLS).parametrize()
@_SETTINGS
def test_no_call_makes_a_server_error_and_every_4xx_is_in_its_dialects_shape(
    case: Case[Any], stack: Stack, admin: dict[str, str]
) -> None:
    answered_without_a_server_error_and_in_shape(case, stack, admin)


@pytest.mark.timeout(300)
@pytest.mark.usefixtures("backend")
@schema.exclude(name_regex=_CALLS).parametrize()
@_SETTINGS
def test_no_other_request_makes_a_server_error_and_every_4xx_is_in_its_dialects_shape(
    case: Case[Any], stack: Stack, admin: dict[str, str]
) -> None:
    answered_without_a_server_error_and_in_shape(case, stack, admin)


def answered_without_a_server_error_and_in_shape(
    case: Case[Any], stack: Stack, admin: dict[str, str]
) -> None:
    steer(case)

    response = case.call(base_url=stack.base_url, headers=admin, timeout=_TIMEOUT)

    seen = f"{case.method} {case.formatted_path} answered {response.status_code}: "
    seen += response.text[:500]
    # A 5xx only where the operation documents it (GET /readyz's 503: the shared
    # stack routes a provider no worker consumes).
    documented = case.operation.definition.raw.get("responses", {})
    if response.status_code >= 500:
        assert str(response.status_code) in documented, seen
        return
    if response.status_code >= 400:
        content_type = (response.headers.get("content-type") or [""])[0]
        request_id = (response.headers.get("x-request-id") or [""])[0] or None
        # Anthropic's Messages API answers in Anthropic's shape (api/errors.py dialects).
        check = anthropic_shape_problem if case.path.startswith("/v1/messages") else shape_problem
        problem = check(content_type=content_type, content=response.content, request_id=request_id)
        assert problem is None, f"{problem}; {seen}"
