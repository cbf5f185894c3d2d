"""The grok adapter's differences from OpenAI's, against the fake xAI API.

The behaviour it shares with the other OpenAI-wire adapters is tested in
test_openai_family.py.
"""

from __future__ import annotations

import pytest

from relayq.providers.errors import AuthenticationFailed, InvalidRequest
from relayq.providers.grok import DEFAULT_BASE_URL, GrokProvider
from relayq.providers.openai import OpenAIProvider
from relayq.schemas.chat import ChatCompletionChunk, ChatCompletionRequest
from tests.fakes.grok_server import DEFAULT_REASONING, FakeGrok, xai_error
from tests.fakes.openai_server import Reply
from tests.providers.openai_family import (
    GROK,
    KEY,
    completer,
    fixture_json,
    fixture_text,
    run,
    sse_reply,
    streamer,
    text_of,
)

REASONING_REQUEST = ChatCompletionRequest.model_validate(
    {
        "model": "public-name",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this picture?"},
                    {"type": "image_url", "image_url": {"url": "https://x.ai/cat.png"}},
                ],
            },
        ],
        "max_completion_tokens": 500,
        "reasoning_effort": "low",
        "response_format": {"type": "json_object"},
        "seed": 7,
        "user": "u-1",
    }
)


def test_default_base_url_is_xais() -> None:
    assert GrokProvider.default_base_url == DEFAULT_BASE_URL == "https://api.x.ai/v1"


def test_request_on_the_wire_is_openais() -> None:
    with FakeGrok(api_key=KEY) as fake:
        run(GROK, fake.base_url, completer(GROK, REASONING_REQUEST))
        (sent,) = fake.requests
    assert (sent.method, sent.path) == ("POST", "/v1/chat/completions")
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.json == {**REASONING_REQUEST.upstream_body(model="grok-3-mini")}
    assert sent.json["reasoning_effort"] == "low"


def test_reasoning_content_and_usage_details_are_kept() -> None:
    with FakeGrok(api_key=KEY) as fake:
        completion = run(GROK, fake.base_url, completer(GROK))
    message_extra = completion.choices[0].message.model_extra or {}
    assert message_extra["reasoning_content"] == DEFAULT_REASONING
    assert completion.usage is not None
    usage = completion.usage.model_extra or {}
    assert usage["completion_tokens_details"]["reasoning_tokens"] == len(DEFAULT_REASONING.split())
    assert usage["num_sources_used"] == 0


def test_streamed_reasoning_comes_before_the_answer() -> None:
    received: list[ChatCompletionChunk] = []
    with FakeGrok(api_key=KEY) as fake:
        run(GROK, fake.base_url, streamer(GROK, received))
    thoughts = "".join(
        (c.choices[0].delta.model_extra or {}).get("reasoning_content", "")
        for c in received
        if c.choices
    )
    assert thoughts.strip() == DEFAULT_REASONING
    assert received[-1].usage is not None
    details = (received[-1].usage.model_extra or {})["completion_tokens_details"]
    assert details["reasoning_tokens"] == len(DEFAULT_REASONING.split())


def test_incorrect_key_answered_with_400_is_authentication_failed() -> None:
    with FakeGrok(api_key=KEY) as fake, pytest.raises(AuthenticationFailed) as raised:
        run(GROK, fake.base_url, completer(GROK), api_key="xai-wrong")
    assert raised.value.status_code == 400
    assert raised.value.message.startswith("Incorrect API key provided")


def test_recorded_incorrect_key_error_maps() -> None:
    body = fixture_json("grok", "incorrect_api_key_error.json")
    with FakeGrok(api_key=KEY) as fake:
        fake.script(Reply(status=400, body=body))
        with pytest.raises(AuthenticationFailed):
            run(GROK, fake.base_url, completer(GROK))


def test_other_400s_stay_invalid_request() -> None:
    with FakeGrok(api_key=KEY) as fake:
        fake.script(Reply(status=400, body=xai_error("Model grok-3-mini does not support stop")))
        with pytest.raises(InvalidRequest, match="does not support stop"):
            run(GROK, fake.base_url, completer(GROK))


def test_recorded_answers_parse() -> None:
    received: list[ChatCompletionChunk] = []
    with FakeGrok(api_key=KEY) as fake:
        fake.script(
            Reply(body=fixture_json("grok", "chat_completion_reasoning.json")),
            sse_reply(fixture_text("grok", "chat_completion_stream.sse")),
        )
        completion = run(GROK, fake.base_url, completer(GROK))
        run(GROK, fake.base_url, streamer(GROK, received))
    assert (completion.choices[0].message.model_extra or {})["reasoning_content"].startswith("101")
    assert completion.usage is not None
    assert (completion.usage.model_extra or {})["completion_tokens_details"][
        "reasoning_tokens"
    ] == 317
    assert text_of(received) == "Hi!"
    assert received[-1].usage is not None
    assert received[-1].usage.total_tokens == 14


def test_lists_models() -> None:
    async def models(provider: OpenAIProvider) -> list[str] | None:
        return await provider.list_models()

    with FakeGrok(api_key=KEY) as fake:
        assert run(GROK, fake.base_url, models) == ["grok-4", "grok-3-mini"]
        assert fake.requests[0].path == "/v1/models"
