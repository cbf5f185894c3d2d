"""The openrouter adapter's differences from OpenAI's, against the fake OpenRouter API.

The behaviour it shares with the other OpenAI-wire adapters is tested in
test_openai_family.py.
"""

from __future__ import annotations

import pytest

from relayq.providers.errors import (
    AuthenticationFailed,
    InvalidRequest,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
)
from relayq.providers.openai import OpenAIProvider
from relayq.providers.openrouter import DEFAULT_BASE_URL, OpenRouterProvider
from relayq.schemas.chat import ChatCompletionChunk, ChatCompletionRequest
from tests.fakes.openai_server import Reply
from tests.fakes.openrouter_server import FakeOpenRouter, midstream_error, openrouter_error
from tests.providers.openai_family import (
    KEY,
    OPENROUTER,
    Vendor,
    completer,
    fixture_json,
    fixture_text,
    run,
    sse_reply,
    streamer,
    text_of,
)

ATTRIBUTED = Vendor(
    "openrouter",
    FakeOpenRouter,
    "openai/gpt-4o-mini",
    options={
        "site_url": "https://relayq.example",
        "app_name": "relayq",
        "defaults": {"provider": {"data_collection": "deny"}, "transforms": ["middle-out"]},
    },
)
ROUTED_REQUEST = ChatCompletionRequest.model_validate(
    {
        "model": "public-name",
        "messages": [{"role": "user", "content": "Say hello"}],
        "models": ["anthropic/claude-sonnet-4", "google/gemini-2.5-pro"],
        "provider": {"order": ["OpenAI", "Azure"], "allow_fallbacks": False},
        "reasoning": {"effort": "high"},
        "max_completion_tokens": 100,
    }
)


def test_default_base_url_is_openrouters() -> None:
    assert OpenRouterProvider.default_base_url == DEFAULT_BASE_URL
    assert DEFAULT_BASE_URL == "https://openrouter.ai/api/v1"


def test_request_on_the_wire_carries_attribution_and_extras() -> None:
    with FakeOpenRouter(api_key=KEY) as fake:
        run(ATTRIBUTED, fake.base_url, completer(ATTRIBUTED, ROUTED_REQUEST))
        (sent,) = fake.requests
    assert (sent.method, sent.path) == ("POST", "/api/v1/chat/completions")
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.headers["http-referer"] == "https://relayq.example"
    assert sent.headers["x-title"] == "relayq"
    assert sent.json == {
        "model": "openai/gpt-4o-mini",
        "messages": [{"role": "user", "content": "Say hello"}],
        "models": ["anthropic/claude-sonnet-4", "google/gemini-2.5-pro"],
        "provider": {"order": ["OpenAI", "Azure"], "allow_fallbacks": False},
        "reasoning": {"effort": "high"},
        "max_completion_tokens": 100,
        "transforms": ["middle-out"],
    }


def test_no_attribution_headers_unless_configured() -> None:
    with FakeOpenRouter(api_key=KEY) as fake:
        run(OPENROUTER, fake.base_url, completer(OPENROUTER))
        headers = fake.requests[0].headers
    assert "http-referer" not in headers
    assert "x-title" not in headers


def test_configured_headers_win_over_attribution() -> None:
    with FakeOpenRouter(api_key=KEY) as fake:
        run(ATTRIBUTED, fake.base_url, completer(ATTRIBUTED), headers={"X-Title": "override"})
        assert fake.requests[0].headers["x-title"] == "override"


def test_keepalive_comments_are_ignored() -> None:
    received: list[ChatCompletionChunk] = []
    with FakeOpenRouter(api_key=KEY) as fake:
        fake.script(sse_reply(fixture_text("openrouter", "chat_completion_stream.sse")))
        run(OPENROUTER, fake.base_url, streamer(OPENROUTER, received))
    assert text_of(received) == "Hello there!"
    assert received[-1].usage is not None
    assert (received[-1].usage.model_extra or {})["cost"] == 0.0000033
    assert (received[0].model_extra or {})["provider"] == "OpenAI"


def test_recorded_midstream_error_raises_with_its_message() -> None:
    received: list[ChatCompletionChunk] = []
    with FakeOpenRouter(api_key=KEY) as fake:
        fake.script(sse_reply(fixture_text("openrouter", "midstream_error.sse")))
        with pytest.raises(ProviderUnavailable, match="Provider disconnected unexpectedly"):
            run(OPENROUTER, fake.base_url, streamer(OPENROUTER, received))
    assert text_of(received) == "Hello"


@pytest.mark.parametrize(
    ("code", "error_type"),
    [(402, AuthenticationFailed), (429, RateLimited), (502, ProviderUnavailable)],
)
def test_midstream_error_with_a_status_code(code: int, error_type: type[ProviderError]) -> None:
    received: list[ChatCompletionChunk] = []
    with FakeOpenRouter(api_key=KEY) as fake:
        fake.script(Reply(error_after=2, error=midstream_error("upstream failed", code=code)))
        with pytest.raises(error_type, match="upstream failed"):
            run(OPENROUTER, fake.base_url, streamer(OPENROUTER, received))
    assert len(received) == 2


@pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
def test_insufficient_credits_is_authentication_failed(streaming: bool) -> None:
    body = fixture_json("openrouter", "insufficient_credits_error.json")
    action = streamer(OPENROUTER, []) if streaming else completer(OPENROUTER)
    with FakeOpenRouter(api_key=KEY) as fake:
        fake.script(Reply(status=402, body=body))
        with pytest.raises(AuthenticationFailed) as raised:
            run(OPENROUTER, fake.base_url, action)
    assert raised.value.status_code == 402
    assert raised.value.message.startswith("Insufficient credits")
    assert not raised.value.retryable


def test_flagged_input_is_invalid_request() -> None:
    body = fixture_json("openrouter", "moderation_error.json")
    with FakeOpenRouter(api_key=KEY) as fake:
        fake.script(Reply(status=403, body=body))
        with pytest.raises(InvalidRequest, match="Your input was flagged"):
            run(OPENROUTER, fake.base_url, completer(OPENROUTER))


def test_other_403s_stay_authentication_failed() -> None:
    with FakeOpenRouter(api_key=KEY) as fake:
        fake.script(Reply(status=403, body=openrouter_error(403, "Key disabled")))
        with pytest.raises(AuthenticationFailed, match="Key disabled"):
            run(OPENROUTER, fake.base_url, completer(OPENROUTER))


def test_error_in_a_200_body_maps_by_its_code() -> None:
    with FakeOpenRouter(api_key=KEY) as fake:
        fake.script(Reply(body=openrouter_error(502, "Model is down")))
        with pytest.raises(ProviderUnavailable, match="Model is down") as raised:
            run(OPENROUTER, fake.base_url, completer(OPENROUTER))
    assert raised.value.status_code == 502


def test_recorded_completion_parses() -> None:
    with FakeOpenRouter(api_key=KEY) as fake:
        fake.script(Reply(body=fixture_json("openrouter", "chat_completion.json")))
        completion = run(OPENROUTER, fake.base_url, completer(OPENROUTER))
    assert completion.choices[0].message.content == "Hello there!"
    assert (completion.model_extra or {})["provider"] == "OpenAI"


def test_lists_models() -> None:
    async def models(provider: OpenAIProvider) -> list[str] | None:
        return await provider.list_models()

    with FakeOpenRouter(api_key=KEY) as fake:
        assert run(OPENROUTER, fake.base_url, models) == [
            "openai/gpt-4o-mini",
            "anthropic/claude-sonnet-4",
        ]
        (sent,) = fake.requests
    assert (sent.method, sent.path) == ("GET", "/api/v1/models")
    assert sent.headers["authorization"] == f"Bearer {KEY}"


def test_recorded_model_list_parses() -> None:
    with FakeOpenRouter(api_key=KEY) as fake:
        fake.models = ()
        models_body = fixture_json("openrouter", "models.json")
        fake.models_body = lambda: models_body  # type: ignore[method-assign]

        async def models(provider: OpenAIProvider) -> list[str] | None:
            return await provider.list_models()

        assert run(OPENROUTER, fake.base_url, models) == [
            "openai/gpt-4o-mini",
            "anthropic/claude-sonnet-4",
        ]
