"""The gemini adapter's pure translations: request bodies, responses, stream events, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from relayq.providers.errors import InvalidRequest, MalformedResponse, RateLimited
from relayq.providers.gemini import error_from_payload
from relayq.providers.gemini_request import generate_content_body
from relayq.providers.gemini_response import GeminiStream, parse_completion
from relayq.schemas.chat import ChatCompletionRequest
from tests.fakes.gemini_server import error_body

MODEL = "gemini-2.5-flash"
FIXTURES = Path(__file__).parent.parent / "fixtures" / "gemini"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
    },
}
SAY_HELLO = [{"role": "user", "content": "Say hello"}]


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def test_fractional_retry_delay() -> None:
    details = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "29.72s"}]
    error = error_from_payload(
        error_body(429, "slow", "RESOURCE_EXHAUSTED", details), provider="g", status_code=429
    )
    assert isinstance(error, RateLimited)
    assert error.retry_after == pytest.approx(29.72)


def test_recorded_function_call_with_signature_parses() -> None:
    completion = parse_completion(fixture("function_call.json"), model=MODEL, created=0)
    calls = completion.choices[0].message.tool_calls
    assert calls is not None
    assert [c.id for c in calls] == ["call_0_get_weather", "call_1_get_weather"]
    assert completion.choices[0].finish_reason == "tool_calls"


def test_several_candidates_become_choices() -> None:
    payload = {
        "candidates": [
            {"content": {"parts": [{"text": "A"}]}, "finishReason": "STOP", "index": 0},
            {"content": {"parts": [{"text": "B"}]}, "finishReason": "MAX_TOKENS", "index": 1},
        ]
    }
    completion = parse_completion(payload, model=MODEL, created=0)
    assert [(c.index, c.message.content, c.finish_reason) for c in completion.choices] == [
        (0, "A", "stop"),
        (1, "B", "length"),
    ]
    assert completion.usage is None


def body_of(request: dict[str, Any], **options: Any) -> dict[str, Any]:
    return generate_content_body(ChatCompletionRequest.model_validate(request), **options)


def test_images_and_schemas_translate() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    request = {
        "model": "m",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "What?"}, image]}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": schema}},
        "tools": [WEATHER_TOOL],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "n": 2,
    }
    body = body_of(request)
    assert body["contents"][0]["parts"] == [
        {"text": "What?"},
        {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
    ]
    assert body["generationConfig"] == {
        "candidateCount": 2,
        "responseMimeType": "application/json",
        "responseJsonSchema": schema,
    }
    assert body["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}
    }
    openapi = body_of(request, schema_dialect="openapi")
    assert openapi["generationConfig"]["responseSchema"] == schema
    assert "parameters" in openapi["tools"][0]["functionDeclarations"][0]


@pytest.mark.parametrize(
    ("choice", "mode"), [("required", {"mode": "ANY"}), ("none", {"mode": "NONE"})]
)
def test_tool_choice_modes(choice: str, mode: dict[str, Any]) -> None:
    body = body_of({"model": "m", "messages": SAY_HELLO, "tool_choice": choice})
    assert body["toolConfig"] == {"functionCallingConfig": mode}


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        (
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": "https://x/a.png"}}],
            },
            "data: URLs",
        ),
        ({"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}, "input_audio"),
        ({"role": "tool", "tool_call_id": "call_9", "content": "x"}, "answers no earlier"),
    ],
)
def test_untranslatable_requests_are_refused(message: dict[str, Any], problem: str) -> None:
    with pytest.raises(InvalidRequest, match=problem):
        body_of({"model": "m", "messages": [message]})


def test_conversation_keeps_order_and_merges_same_role_turns() -> None:
    call = {"id": "call_0_f", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    body = body_of(
        {
            "model": "m",
            "messages": [
                {"role": "user", "content": "one"},
                {"role": "system", "content": "late system"},
                {"role": "user", "content": [{"type": "text", "text": "two"}]},
                {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]},
                {"role": "assistant", "content": "", "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "call_0_f", "content": "[1, 2]"},
                {"role": "user", "content": "three"},
            ],
        },
        thought_signature_fallback=None,
    )
    assert body["systemInstruction"] == {"parts": [{"text": "late system"}]}
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "one"}, {"text": "two"}]},
        {"role": "model", "parts": [{"text": "no"}, {"functionCall": {"name": "f", "args": {}}}]},
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "f", "response": {"output": [1, 2]}}},
                {"text": "three"},
            ],
        },
    ]


def test_tool_call_arguments_must_be_a_json_object() -> None:
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1]"}}
    with pytest.raises(InvalidRequest, match="JSON object"):
        body_of({"model": "m", "messages": [{"role": "assistant", "tool_calls": [call]}]})


def test_stream_state_tracks_each_candidate() -> None:
    stream = GeminiStream(model=MODEL, created=0)
    first = stream.feed(
        {
            "candidates": [
                {"content": {"parts": [{"text": "A"}]}, "index": 0},
                {"content": {"parts": [{"functionCall": {"name": "f"}}]}, "index": 1},
            ],
            "responseId": "r-1",
        }
    )
    assert first is not None
    assert [(c.index, c.delta.role, c.delta.content) for c in first.choices] == [
        (0, "assistant", "A"),
        (1, "assistant", None),
    ]
    assert first.choices[1].delta.tool_calls == [
        {
            "index": 0,
            "id": "call_0_f",
            "type": "function",
            "function": {"name": "f", "arguments": "{}"},
        }
    ]
    quiet = {"candidates": [{"content": {"parts": []}, "finishReason": "STOP", "index": 0}]}
    assert stream.feed(quiet) is None
    with pytest.raises(MalformedResponse, match="finishReason"):
        stream.finish()  # candidate 1 never finished
    stream.feed({"candidates": [{"finishReason": "STOP", "index": 1}]})
    last = stream.finish()
    assert last.id == "chatcmpl-r-1"
    assert [(c.index, c.finish_reason) for c in last.choices] == [(0, "stop"), (1, "tool_calls")]


def test_thought_parts_are_left_out() -> None:
    payload = {
        "candidates": [
            {
                "content": {"parts": [{"text": "hmm", "thought": True}, {"text": "4"}]},
                "finishReason": "STOP",
            }
        ]
    }
    assert parse_completion(payload, model=MODEL, created=0).choices[0].message.content == "4"
