"""The blackbox adapter's differences from OpenAI's, against the fake Blackbox API.

The behaviour it shares with the other OpenAI-wire adapters is tested in
test_openai_family.py.
"""

from __future__ import annotations

import openai.types.chat as sdk

from relayq.providers.blackbox import DEFAULT_BASE_URL, BlackboxProvider, none_strings_to_null
from relayq.providers.openai import OpenAIProvider
from relayq.schemas.chat import ChatCompletionRequest
from tests.fakes.blackbox_server import FakeBlackbox
from tests.fakes.openai_server import Reply
from tests.providers.openai_family import BLACKBOX, KEY, completer, fixture_json, run

ROUTED_REQUEST = ChatCompletionRequest.model_validate(
    {
        "model": "public-name",
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "max_tokens": 256,
        "temperature": 0.7,
        "models": ["blackboxai/anthropic/claude-sonnet-4"],
        "provider": {"order": ["OpenAI"]},
        "top_k": 40,
    }
)


def test_default_base_url_is_blackboxs() -> None:
    assert BlackboxProvider.default_base_url == DEFAULT_BASE_URL == "https://api.blackbox.ai"


def test_request_on_the_wire() -> None:
    with FakeBlackbox(api_key=KEY) as fake:
        run(BLACKBOX, fake.base_url, completer(BLACKBOX, ROUTED_REQUEST))
        (sent,) = fake.requests
    assert (sent.method, sent.path) == ("POST", "/chat/completions")
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.json == {
        "model": "blackboxai/openai/gpt-4o-mini",
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "max_tokens": 256,
        "temperature": 0.7,
        "models": ["blackboxai/anthropic/claude-sonnet-4"],
        "provider": {"order": ["OpenAI"]},
        "top_k": 40,
    }


def test_recorded_answer_with_none_strings_parses() -> None:
    answer = fixture_json("blackbox", "chat_completion.json")
    with FakeBlackbox(api_key=KEY) as fake:
        fake.script(Reply(body=answer))
        completion = run(BLACKBOX, fake.base_url, completer(BLACKBOX))
    message = completion.choices[0].message
    assert message.content == "The capital of France is Paris."
    assert message.tool_calls is None
    assert completion.system_fingerprint is None
    assert (completion.model_extra or {})["provider"] == "OpenAI"
    assert completion.usage is not None
    details = (completion.usage.model_extra or {})["completion_tokens_details"]
    assert details == {
        "accepted_prediction_tokens": None,
        "audio_tokens": None,
        "reasoning_tokens": 0,
        "rejected_prediction_tokens": None,
    }
    sdk.ChatCompletion.model_validate(completion.model_dump(mode="json"))


def test_none_is_null_only_where_a_value_may_be_absent() -> None:
    payload = {"message": {"content": "None", "tool_calls": "None"}, "usage": "None"}
    assert none_strings_to_null(payload) == {
        "message": {"content": "None", "tool_calls": None},
        "usage": None,
    }


def test_lists_no_models() -> None:
    async def models(provider: OpenAIProvider) -> list[str] | None:
        return await provider.list_models()

    with FakeBlackbox(api_key=KEY) as fake:
        assert run(BLACKBOX, fake.base_url, models) is None
