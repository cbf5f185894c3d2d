"""The cohere adapter's pure translations: request bodies, responses and stream events."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from relayq.providers.cohere_request import chat_body
from relayq.providers.cohere_response import CohereStream, parse_chat
from relayq.providers.errors import InvalidRequest, MalformedResponse, ProviderUnavailable
from relayq.schemas.chat import ChatCompletionRequest

MODEL = "command-a-03-2025"
FIXTURES = Path(__file__).parent.parent / "fixtures" / "cohere"
REQUEST = ChatCompletionRequest.model_validate(
    {"model": "public-name", "messages": [{"role": "user", "content": "Say hello"}]}
)
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
    },
}
TOOL_REQUEST = REQUEST.model_copy(update={"tools": [WEATHER_TOOL]})


def test_named_tool_choice_forces_that_tool_alone() -> None:
    other = {"type": "function", "function": {"name": "get_time"}}
    request = TOOL_REQUEST.model_copy(
        update={
            "tools": [WEATHER_TOOL, other],
            "tool_choice": {"type": "function", "function": {"name": "get_time"}},
        }
    )
    body = chat_body(request, model=MODEL, stream=False)
    assert body["tool_choice"] == "REQUIRED"
    assert body["tools"] == [
        {
            "type": "function",
            "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
        }
    ]
    none = chat_body(
        TOOL_REQUEST.model_copy(update={"tool_choice": "none"}), model=MODEL, stream=False
    )
    assert none["tool_choice"] == "NONE"


def test_tool_message_needs_its_call_id() -> None:
    bad = {"model": MODEL, "messages": [{"role": "tool", "content": "x"}]}
    with pytest.raises(InvalidRequest, match="tool_call_id"):
        chat_body(ChatCompletionRequest.model_validate(bad), model=MODEL, stream=False)


def test_recorded_responses_parse() -> None:
    plain = parse_chat(json.loads((FIXTURES / "chat.json").read_text()), model=MODEL, created=0)
    assert plain.choices[0].message.content is not None
    assert plain.choices[0].message.content.startswith("LLMs are neural networks")
    assert plain.usage is not None
    assert (plain.usage.prompt_tokens, plain.usage.completion_tokens) == (5, 17)
    tools = parse_chat(
        json.loads((FIXTURES / "chat_tool_call.json").read_text()), model=MODEL, created=0
    )
    message = tools.choices[0].message
    assert message.content == "I will look up the weather in Madrid and in Brasilia."
    assert message.tool_calls is not None
    assert [c.id for c in message.tool_calls] == [
        "get_weather_p1t92w7gfgq7",
        "get_weather_ay6nmvjgp9vn",
    ]
    assert tools.choices[0].finish_reason == "tool_calls"


def test_usage_falls_back_to_tokens() -> None:
    payload = {
        "id": "x",
        "message": {"role": "assistant", "content": [{"type": "text", "text": "hi"}]},
        "finish_reason": "COMPLETE",
        "usage": {"tokens": {"input_tokens": 71.0, "output_tokens": 3.0}, "cached_tokens": 64},
    }
    completion = parse_chat(payload, model=MODEL, created=0)
    assert completion.usage is not None
    assert completion.usage.model_dump() == {
        "prompt_tokens": 71,
        "completion_tokens": 3,
        "total_tokens": 74,
        "prompt_tokens_details": {"cached_tokens": 64},
    }


def test_images_are_carried() -> None:
    request = ChatCompletionRequest.model_validate(
        {
            "model": "m",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Compare"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
                        {
                            "type": "image_url",
                            "image_url": {"url": "https://x/a.png", "detail": "low"},
                        },
                    ],
                }
            ],
        }
    )
    assert chat_body(request, model=MODEL, stream=False)["messages"][0]["content"] == [
        {"type": "text", "text": "Compare"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
        {"type": "image_url", "image_url": {"url": "https://x/a.png", "detail": "low"}},
    ]


@pytest.mark.parametrize(
    ("request_body", "problem"),
    [
        ({"n": 2}, "n must be 1"),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}
                ]
            },
            "input_audio",
        ),
        ({"tools": [{"type": "web_search"}]}, "web_search"),
        ({"response_format": {"type": "grammar"}}, "grammar"),
    ],
)
def test_untranslatable_requests_are_refused(request_body: dict[str, Any], problem: str) -> None:
    request = ChatCompletionRequest.model_validate(
        {**REQUEST.model_dump(exclude_none=True), **request_body}
    )
    with pytest.raises(InvalidRequest, match=problem):
        chat_body(request, model=MODEL, stream=False)


def test_assistant_turns_translate() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    request = ChatCompletionRequest.model_validate(
        {
            "model": "m",
            "messages": [
                {"role": "user", "content": None},
                {"role": "assistant", "content": "Plain answer."},
                {"role": "assistant", "content": "", "tool_calls": [call]},
                {"role": "assistant", "content": ""},
                {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "ok"}]},
            ],
        }
    )
    assert chat_body(request, model=MODEL, stream=False)["messages"] == [
        {"role": "user", "content": ""},
        {"role": "assistant", "content": "Plain answer."},
        {"role": "assistant", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "ok"},
    ]


def test_stream_state_ends_at_message_end() -> None:
    stream = CohereStream(model=MODEL, created=0)
    start = stream.feed({"id": "s-1", "type": "message-start", "delta": {}})
    assert start is not None
    assert (start.id, start.choices[0].delta.role) == ("s-1", "assistant")
    assert stream.feed({"type": "content-start", "index": 0}) is None
    assert stream.feed({"type": "citation-start", "index": 0}) is None
    assert stream.feed({"type": "debug"}) is None
    thinking = {"type": "content-delta", "delta": {"message": {"content": {"thinking": "hm"}}}}
    assert stream.feed(thinking) is None
    with pytest.raises(MalformedResponse, match="index"):
        stream.feed({"type": "tool-call-delta", "delta": {}})
    assert not stream.ended
    end = stream.feed({"type": "message-end", "delta": {"finish_reason": "MAX_TOKENS"}})
    assert end is not None
    assert (end.choices[0].finish_reason, end.usage) == ("length", None)
    assert stream.ended


def test_message_end_error_wins_over_its_finish_reason() -> None:
    stream = CohereStream(model=MODEL, created=0)
    end = {"type": "message-end", "delta": {"finish_reason": "COMPLETE", "error": "boom"}}
    with pytest.raises(ProviderUnavailable, match="boom"):
        stream.feed(end)


def test_thinking_items_are_left_out() -> None:
    payload = {
        "id": "x",
        "message": {
            "role": "assistant",
            "content": [{"type": "thinking", "thinking": "hm"}, {"type": "text", "text": "4"}],
        },
        "finish_reason": "COMPLETE",
    }
    assert parse_chat(payload, model=MODEL, created=0).choices[0].message.content == "4"
