"""OpenAI's Responses API passed through by the adapters that speak it (openai,
azure_openai), against the wire-level fakes; the others refuse it (the executor serves
them over chat)."""

from __future__ import annotations

from typing import Any

import pytest

from relayq.providers import provider_type
from relayq.providers.azure_openai import RESPONSES_API_VERSION
from relayq.providers.errors import AuthenticationFailed, InvalidRequest, RateLimited
from relayq.providers.openai import OpenAIProvider
from relayq.providers.responses_wire import ResponsesEvent
from relayq.schemas.responses import ResponsesRequest
from tests.fakes.azure_openai_server import FakeAzureOpenAI
from tests.fakes.openai_server import DEFAULT_CONTENT, FakeOpenAI, Reply
from tests.fakes.responses import ENCRYPTED, REASONING_SUMMARY
from tests.providers.openai_family import (
    KEY,
    OPENAI,
    OPENAI_COMPATIBLE,
    Vendor,
    fixture_json,
    fixture_text,
    run,
    sse_reply,
)

REQUEST = ResponsesRequest.model_validate(
    {
        "model": "public-name",
        "input": [{"role": "user", "content": "Hello"}],
        "instructions": "Be brief.",
        "reasoning": {"effort": "low", "summary": "auto"},
        "include": ["reasoning.encrypted_content"],
        "truncation": "auto",
        "store": False,
        "mock": {"tokens": 3},  # an adapter's control: never sent upstream
    }
)


def respond(vendor: Vendor) -> Any:
    async def action(provider: OpenAIProvider) -> dict[str, Any]:
        return await provider.respond(REQUEST, model=vendor.model)

    return action


def streamed(vendor: Vendor, received: list[ResponsesEvent]) -> Any:
    async def action(provider: OpenAIProvider) -> None:
        async for event in provider.stream_response(REQUEST, model=vendor.model):
            received.append(event)

    return action


def test_the_request_goes_as_it_came_and_the_answer_as_the_vendor_gave_it() -> None:
    with FakeOpenAI(api_key=KEY) as fake:
        answer = run(OPENAI, fake.base_url, respond(OPENAI))
        (sent,) = fake.requests
    assert (sent.method, sent.path) == ("POST", "/v1/responses")
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.json == {
        "model": "gpt-4o-mini",
        "input": [
            {"type": "message", "role": "user", "content": "Hello"},
        ],
        "instructions": "Be brief.",
        "reasoning": {"effort": "low", "summary": "auto"},
        "include": ["reasoning.encrypted_content"],
        "truncation": "auto",
        "store": False,
        "stream": False,
    }
    reasoning, message = answer["output"]
    assert reasoning["type"] == "reasoning"
    assert reasoning["summary"][0]["text"] == REASONING_SUMMARY
    assert reasoning["encrypted_content"] == ENCRYPTED
    assert message["content"][0]["text"] == DEFAULT_CONTENT
    assert answer["usage"]["output_tokens_details"]["reasoning_tokens"] == 16


def test_the_stream_is_the_vendor_s_events_up_to_the_response() -> None:
    received: list[ResponsesEvent] = []
    with FakeOpenAI(api_key=KEY) as fake:
        run(OPENAI, fake.base_url, streamed(OPENAI, received))
        (sent,) = fake.requests
    assert sent.json["stream"] is True
    assert sent.json["store"] is False
    types = [event.type for event in received]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] == "response.completed"
    assert [e.data["sequence_number"] for e in received] == list(range(len(received)))
    assert "".join(event.text for event in received) == DEFAULT_CONTENT
    first = received[0]
    assert first.sse() == f"event: {first.type}\ndata: {first.wire}\n\n".encode()


def test_the_documented_examples_pass_through() -> None:
    body = fixture_json("openai", "responses_text.json")
    received: list[ResponsesEvent] = []
    with FakeOpenAI(api_key=KEY) as fake:
        fake.script(Reply(body=body), sse_reply(fixture_text("openai", "responses_stream.sse")))
        answer = run(OPENAI, fake.base_url, respond(OPENAI))
        run(OPENAI, fake.base_url, streamed(OPENAI, received))
    assert answer == body
    assert "".join(event.text for event in received) == "Hi there!"
    assert received[-1].data["response"]["usage"]["total_tokens"] == 48


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (
            Reply(status=401, body={"error": {"message": "bad key", "code": "invalid_api_key"}}),
            AuthenticationFailed,
        ),
        (
            sse_reply(
                'event: response.failed\ndata: {"type": "response.failed", "sequence_number": 0, '
                '"response": {"status": "failed", "error": {"code": "rate_limit_exceeded", '
                '"message": "slow down"}}}\n\n'
            ),
            RateLimited,
        ),
    ],
)
def test_failures_map_to_relayq_s_errors(reply: Reply, error: type[Exception]) -> None:
    received: list[ResponsesEvent] = []
    with FakeOpenAI(api_key=KEY) as fake:
        fake.script(reply)
        with pytest.raises(error):
            run(OPENAI, fake.base_url, streamed(OPENAI, received))


@pytest.mark.parametrize(
    ("options", "path", "query"),
    [
        ({"api_style": "v1"}, "/openai/v1/responses", {}),
        ({}, "/openai/responses", {"api-version": RESPONSES_API_VERSION}),
    ],
)
def test_azure_posts_responses_outside_the_deployment(
    options: dict[str, str], path: str, query: dict[str, str]
) -> None:
    vendor = Vendor("azure_openai", FakeAzureOpenAI, "gpt-4o-prod", options=options)
    received: list[ResponsesEvent] = []
    with FakeAzureOpenAI(api_key=KEY) as fake:
        answer = run(vendor, fake.base_url, respond(vendor))
        run(vendor, fake.base_url, streamed(vendor, received))
        plain, stream = fake.requests
    for sent in (plain, stream):
        assert (sent.path, sent.query) == (path, query)
        assert sent.headers["api-key"] == KEY
        assert sent.json["model"] == "gpt-4o-prod"
    assert answer["output"][-1]["content"][0]["text"] == DEFAULT_CONTENT
    assert received[-1].type == "response.completed"


def test_an_adapter_that_does_not_speak_responses_refuses() -> None:
    with FakeOpenAI(api_key=KEY) as fake:
        with pytest.raises(InvalidRequest, match="does not speak Responses"):
            run(OPENAI_COMPATIBLE, fake.base_url, respond(OPENAI_COMPATIBLE))
        assert fake.requests == []


def test_an_openai_compatible_server_that_declares_responses_gets_them_natively() -> None:
    vllm = Vendor("openai_compatible", FakeOpenAI, "Qwen/Qwen3-8B", options={"responses": True})
    received: list[ResponsesEvent] = []
    with FakeOpenAI(api_key=KEY) as fake:
        answer = run(vllm, fake.base_url, respond(vllm))
        run(vllm, fake.base_url, streamed(vllm, received))
        plain, stream = fake.requests
    assert (plain.path, plain.json["model"], stream.json["stream"]) == (
        "/v1/responses",
        "Qwen/Qwen3-8B",
        True,
    )
    assert answer["output"][-1]["content"][0]["text"] == DEFAULT_CONTENT
    assert received[-1].type == "response.completed"
    adapter = provider_type("openai_compatible")
    assert adapter.speaks_responses_with({"responses": True})
    assert not adapter.speaks_responses_with({})  # off unless declared
