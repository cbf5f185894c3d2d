"""A job routed to the openai adapter, through the real stack, on the wire."""

from __future__ import annotations

import httpx

from tests.conftest import FAKE_OPENAI_KEY
from tests.fakes.openai_server import DEFAULT_CONTENT, FakeOpenAI, Reply, error_body
from tests.jobs import body, submit, wait_for_status


def test_a_routed_job_reaches_openai_as_the_upstream_model(
    client: httpx.Client, fake_openai: FakeOpenAI
) -> None:
    before = len(fake_openai.requests)
    payload = body(
        "Say hi",
        model="gpt-4o-mini",
        temperature=0.2,
        seed=7,
        priority=9,
        metadata={"team": "a"},
        mock={"tokens": 3},
    )

    job = submit(client, payload)
    finished = wait_for_status(client, job["id"], {"succeeded", "failed"})

    assert finished["status"] == "succeeded", finished
    assert finished["provider"] == "openai"
    assert finished["response"]["choices"][0]["message"]["content"] == DEFAULT_CONTENT
    assert finished["usage"]["total_tokens"] > 0
    [sent] = fake_openai.requests[before:]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {FAKE_OPENAI_KEY}"
    assert sent.json["model"] == "gpt-4o-mini-2024-07-18"
    assert sent.json["messages"] == [{"role": "user", "content": "Say hi"}]
    assert (sent.json["temperature"], sent.json["seed"]) == (0.2, 7)
    assert not {"priority", "metadata", "mock", "cache"} & set(sent.json)
    # Nobody reads this job's text as it comes: the whole answer is asked for.
    assert not sent.json.get("stream")
    assert "stream_options" not in sent.json


def test_a_streamed_job_streams_from_openai(client: httpx.Client, fake_openai: FakeOpenAI) -> None:
    """A job created with ``stream: true`` streams from the upstream, usage included, so its
    followers see tokens as they come."""
    before = len(fake_openai.requests)
    job = submit(client, body("Say hi", model="gpt-4o-mini", stream=True))
    finished = wait_for_status(client, job["id"], {"succeeded", "failed"})

    assert finished["status"] == "succeeded", finished
    assert finished["response"]["choices"][0]["message"]["content"] == DEFAULT_CONTENT
    assert finished["usage"]["total_tokens"] > 0
    [sent] = fake_openai.requests[before:]
    assert sent.json["stream"] is True
    assert sent.json["stream_options"] == {"include_usage": True}


def test_an_upstream_rate_limit_is_retried_after_its_retry_after(
    client: httpx.Client, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(
        Reply(
            status=429,
            headers={"retry-after": "2"},
            body=error_body(
                "Rate limit reached for requests", type="requests", code="rate_limit_exceeded"
            ),
        ),
        Reply(status=500, body=error_body("The server had an error", type="server_error")),
    )

    job = submit(client, body(model="gpt-4o-mini"))
    finished = wait_for_status(client, job["id"], {"succeeded", "failed"})

    assert finished["status"] == "succeeded", finished["error"]
    first, second, third = finished["attempts"]
    assert (first["status"], first["error"]["code"]) == ("failed", "rate_limited")
    assert first["error"]["retry_after"] == 2
    assert "Rate limit reached" in first["error"]["message"]
    assert (second["status"], second["error"]["status_code"]) == ("failed", 500)
    assert third["status"] == "succeeded"
    # The retry waited at least as long as the provider asked (a floor, not a speed).
    assert second["created_at"] - first["created_at"] >= 2.0
