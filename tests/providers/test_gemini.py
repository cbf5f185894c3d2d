"""The gemini adapter over real HTTP, against the wire-level fake Gemini server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from pydantic import SecretStr

from relayq.config.settings import ProviderSettings
from relayq.providers.errors import (
    AuthenticationFailed,
    InvalidRequest,
    MalformedResponse,
    ModelNotFound,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
)
from relayq.providers.gemini import GeminiProvider
from relayq.providers.http import build_http_client
from relayq.schemas.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest
from tests.fakes.gemini_server import (
    DEFAULT_CONTENT,
    FakeGemini,
    FunctionCallScript,
    Reply,
    error_body,
)

T = TypeVar("T")
KEY = "AIza-test-123"
MODEL = "gemini-2.5-flash"
FIXTURES = Path(__file__).parent.parent / "fixtures" / "gemini"

REQUEST = ChatCompletionRequest.model_validate(
    {"model": "public-name", "messages": [{"role": "user", "content": "Say hello"}]}
)
WEATHER_PARAMETERS = {"type": "object", "properties": {"location": {"type": "string"}}}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": WEATHER_PARAMETERS,
    },
}
TOOL_REQUEST = ChatCompletionRequest.model_validate(
    {
        "model": "public-name",
        "messages": [{"role": "user", "content": "Weather in Madrid?"}],
        "tools": [WEATHER_TOOL],
    }
)


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


@pytest.fixture
def server() -> Iterator[FakeGemini]:
    with FakeGemini(api_key=KEY) as fake:
        yield fake


def call(base_url: str, action: Callable[[GeminiProvider], Awaitable[T]], **settings: Any) -> T:
    """Run ``action`` on a gemini adapter over a fresh shared client, closed after."""
    config = ProviderSettings.model_validate(
        {"type": "gemini", "base_url": base_url, "api_key": SecretStr(KEY), **settings}
    )

    async def run() -> T:
        async with build_http_client(max_connections=10) as http:
            return await action(GeminiProvider(name="gemini", settings=config, http=http))

    return asyncio.run(run())


def completer(request: ChatCompletionRequest) -> Callable[[GeminiProvider], Awaitable[Any]]:
    async def complete(provider: GeminiProvider) -> ChatCompletion:
        return await provider.complete(request, model=MODEL)

    return complete


complete = completer(REQUEST)


def streamer(
    received: list[ChatCompletionChunk], request: ChatCompletionRequest = REQUEST
) -> Callable[[GeminiProvider], Awaitable[None]]:
    """An action that streams ``request`` into ``received``, keeping what came before a failure."""

    async def stream(provider: GeminiProvider) -> None:
        async for chunk in provider.stream(request, model=MODEL):
            received.append(chunk)

    return stream


def test_request_on_the_wire(server: FakeGemini) -> None:
    request = ChatCompletionRequest.model_validate(
        {
            "model": "public-name",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": "Answer in English."},
                {"role": "user", "content": "Say hello"},
            ],
            "temperature": 0.2,
            "top_p": 0.9,
            "max_completion_tokens": 64,
            "stop": "END",
            "seed": 7,
            "presence_penalty": 0.5,
            "user": "user-1",
            "response_format": {"type": "json_object"},
            "top_k": 40,
        }
    )
    call(server.base_url + "/", completer(request), headers={"x-goog-user-project": "p-1"})
    (sent,) = server.requests
    assert (sent.method, sent.path, sent.query) == (
        "POST",
        "/v1beta/models/gemini-2.5-flash:generateContent",
        {},
    )
    assert sent.headers["x-goog-api-key"] == KEY
    assert sent.headers["x-goog-user-project"] == "p-1"
    assert sent.headers["content-type"] == "application/json"
    assert "authorization" not in sent.headers
    assert sent.json == {
        "contents": [{"role": "user", "parts": [{"text": "Say hello"}]}],
        "systemInstruction": {"parts": [{"text": "Be brief."}, {"text": "Answer in English."}]},
        "generationConfig": {
            "temperature": 0.2,
            "topP": 0.9,
            "maxOutputTokens": 64,
            "seed": 7,
            "presencePenalty": 0.5,
            "topK": 40,
            "stopSequences": ["END"],
            "responseMimeType": "application/json",
        },
    }


def test_stream_request_asks_for_sse(server: FakeGemini) -> None:
    call(server.base_url, streamer([]))
    (sent,) = server.requests
    assert sent.path == "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    assert sent.query == {"alt": "sse"}
    assert sent.headers["accept"] == "text/event-stream"
    assert sent.json == {"contents": [{"role": "user", "parts": [{"text": "Say hello"}]}]}


def test_options_shape_the_request(server: FakeGemini) -> None:
    safety = [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}]
    options = {
        "api_version": "v1",
        "generation_config": {"thinkingConfig": {"thinkingBudget": 0}, "temperature": 1.0},
        "safety_settings": safety,
    }
    request = REQUEST.model_copy(update={"temperature": 0.3})
    call(server.base_url, completer(request), options=options)
    (sent,) = server.requests
    assert sent.path == "/v1/models/gemini-2.5-flash:generateContent"
    assert sent.json["generationConfig"] == {
        "thinkingConfig": {"thinkingBudget": 0},
        "temperature": 0.3,
    }
    assert sent.json["safetySettings"] == safety


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match=r"options\.schema_dialect"):
        call("http://127.0.0.1:9", complete, options={"schema_dialect": "xml"})


def test_completion_is_parsed(server: FakeGemini) -> None:
    server.script(Reply(thoughts_tokens=11))
    completion = call(server.base_url, complete)
    assert completion.choices[0].message.content == DEFAULT_CONTENT
    assert completion.choices[0].finish_reason == "stop"
    assert completion.choices[0].message.tool_calls is None
    assert completion.model == MODEL
    assert completion.id == "chatcmpl-q3mBaPzKJ4e4qtsP0aSy-Ac"
    assert completion.usage is not None
    words = len(DEFAULT_CONTENT.split())
    assert completion.usage.model_dump() == {
        "prompt_tokens": 2,
        "completion_tokens": words + 11,
        "total_tokens": 2 + words + 11,
        "completion_tokens_details": {"reasoning_tokens": 11},
    }


def test_stream_reassembles_to_the_completion_with_usage(server: FakeGemini) -> None:
    received: list[ChatCompletionChunk] = []
    call(server.base_url, streamer(received))
    text = "".join(c.choices[0].delta.content or "" for c in received if c.choices)
    assert text == DEFAULT_CONTENT
    assert received[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in received[:-1]] == [None] * (len(received) - 1)
    last = received[-1]
    assert last.choices[0].finish_reason == "stop"
    assert last.choices[0].delta.content is None
    assert last.usage is not None
    assert last.usage.completion_tokens == len(DEFAULT_CONTENT.split())
    assert all(c.usage is None for c in received[:-1])
    assert {c.id for c in received} == {"chatcmpl-q3mBaPzKJ4e4qtsP0aSy-Ac"}


def test_tool_call_round_trip(server: FakeGemini) -> None:
    madrid = FunctionCallScript("get_weather", {"location": "Madrid"})
    brasilia = FunctionCallScript("get_weather", {"location": "Brasilia"})
    server.script(Reply(function_calls=[madrid, brasilia]))
    first = call(
        server.base_url, completer(TOOL_REQUEST.model_copy(update={"tool_choice": "auto"}))
    )
    message = first.choices[0].message
    assert first.choices[0].finish_reason == "tool_calls"
    assert message.content is None
    assert message.tool_calls is not None
    assert [
        (c.id, c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls
    ] == [
        ("call_0_get_weather", "get_weather", {"location": "Madrid"}),
        ("call_1_get_weather", "get_weather", {"location": "Brasilia"}),
    ]
    assert server.requests[0].json["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "The weather in a city",
                    "parametersJsonSchema": WEATHER_PARAMETERS,
                }
            ]
        }
    ]
    assert server.requests[0].json["toolConfig"] == {"functionCallingConfig": {"mode": "AUTO"}}

    follow_up = ChatCompletionRequest.model_validate(
        {
            "model": "public-name",
            "messages": [
                *TOOL_REQUEST.model_dump(exclude_none=True)["messages"],
                message.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": "call_0_get_weather", "content": '{"c": 24}'},
                {"role": "tool", "tool_call_id": "call_1_get_weather", "content": "28 degrees"},
            ],
            "tools": [WEATHER_TOOL],
        }
    )
    second = call(server.base_url, completer(follow_up))
    assert second.choices[0].message.content == DEFAULT_CONTENT
    assert server.requests[1].json["contents"] == [
        {"role": "user", "parts": [{"text": "Weather in Madrid?"}]},
        {
            "role": "model",
            "parts": [
                {
                    "functionCall": {"name": "get_weather", "args": {"location": "Madrid"}},
                    "thoughtSignature": "skip_thought_signature_validator",
                },
                {"functionCall": {"name": "get_weather", "args": {"location": "Brasilia"}}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "get_weather", "response": {"c": 24}}},
                {"functionResponse": {"name": "get_weather", "response": {"output": "28 degrees"}}},
            ],
        },
    ]


def test_streamed_tool_call(server: FakeGemini) -> None:
    server.script(Reply(function_calls=[FunctionCallScript("get_weather", {"location": "Madrid"})]))
    received: list[ChatCompletionChunk] = []
    call(server.base_url, streamer(received, TOOL_REQUEST))
    first, last = received
    assert first.choices[0].delta.role == "assistant"
    assert first.choices[0].delta.tool_calls == [
        {
            "index": 0,
            "id": "call_0_get_weather",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"location": "Madrid"}'},
        }
    ]
    assert last.choices[0].finish_reason == "tool_calls"
    assert last.usage is not None


def test_gemini_call_ids_go_back_on_the_call_and_its_response(server: FakeGemini) -> None:
    script = FunctionCallScript("get_weather", {"location": "Madrid"}, id="fc-7f3a")
    server.script(Reply(function_calls=[script]))
    message = call(server.base_url, completer(TOOL_REQUEST)).choices[0].message
    assert message.tool_calls is not None
    assert message.tool_calls[0].id == "fc-7f3a"
    follow_up = ChatCompletionRequest.model_validate(
        {
            **TOOL_REQUEST.model_dump(exclude_none=True),
            "messages": [
                *TOOL_REQUEST.model_dump(exclude_none=True)["messages"],
                message.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": "fc-7f3a", "content": "{}"},
            ],
        }
    )
    call(server.base_url, completer(follow_up))
    model_turn, results = server.requests[1].json["contents"][1:]
    assert model_turn["parts"][0]["functionCall"]["id"] == "fc-7f3a"
    assert results["parts"] == [
        {"functionResponse": {"name": "get_weather", "response": {}, "id": "fc-7f3a"}}
    ]


def replayed_call(**options: Any) -> Callable[[GeminiProvider], Awaitable[Any]]:
    request = ChatCompletionRequest.model_validate(
        {
            "model": "m",
            "messages": [
                {"role": "user", "content": "Weather?"},
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": "call_0_get_weather",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": "{}"},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_0_get_weather", "content": "sunny"},
            ],
        }
    )
    return completer(request)


def test_thought_signature_fallback_satisfies_gemini_3() -> None:
    with FakeGemini(require_thought_signatures=True) as fake:
        assert call(fake.base_url, replayed_call()).choices[0].message.content == DEFAULT_CONTENT
        with pytest.raises(InvalidRequest, match="missing a thought_signature") as raised:
            call(fake.base_url, replayed_call(), options={"thought_signature_fallback": None})
    assert raised.value.status_code == 400


GOOGLE_ERRORS = [
    (400, "FAILED_PRECONDITION", InvalidRequest),
    (402, "RESOURCE_EXHAUSTED", AuthenticationFailed),
    (499, "CANCELLED", ProviderUnavailable),
    (504, "DEADLINE_EXCEEDED", ProviderTimeout),
]
"""Google's statuses that map otherwise than by status alone (the others: test_contract.py)."""


@pytest.mark.parametrize(("status", "name", "error_type"), GOOGLE_ERRORS)
@pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
def test_status_maps_to_error_with_the_vendor_message(
    server: FakeGemini, status: int, name: str, error_type: type[ProviderError], streaming: bool
) -> None:
    server.script(Reply(status=status, body=error_body(status, f"google says {name}", name)))
    received: list[ChatCompletionChunk] = []
    with pytest.raises(error_type) as raised:
        call(server.base_url, streamer(received) if streaming else complete)
    assert raised.value.message == f"google says {name}"
    assert raised.value.status_code == status
    assert received == []


@pytest.mark.parametrize(
    ("fixture_name", "error_type"),
    [
        ("error_400_api_key_invalid.json", AuthenticationFailed),
        ("error_400_invalid_argument.json", InvalidRequest),
        ("error_404_not_found.json", ModelNotFound),
        ("error_429_resource_exhausted.json", RateLimited),
        ("error_500_internal.json", ProviderUnavailable),
        ("error_503_unavailable.json", ProviderUnavailable),
    ],
)
def test_recorded_error_bodies(
    server: FakeGemini, fixture_name: str, error_type: type[ProviderError]
) -> None:
    body = fixture(fixture_name)
    server.script(Reply(status=body["error"]["code"], body=[body]))  # also read inside an array
    with pytest.raises(error_type) as raised:
        call(server.base_url, complete)
    assert raised.value.message == body["error"]["message"]


def test_wrong_or_missing_key_is_authentication_failed(server: FakeGemini) -> None:
    with pytest.raises(AuthenticationFailed, match="API key not valid") as wrong:
        call(server.base_url, complete, api_key=SecretStr("AIza-wrong"))
    assert wrong.value.status_code == 400
    with pytest.raises(AuthenticationFailed, match="unregistered callers") as missing:
        call(server.base_url, complete, api_key=None)
    assert missing.value.status_code == 403
    assert "x-goog-api-key" not in server.requests[-1].headers


def rate_limited(server: FakeGemini, headers: dict[str, str], body: Any) -> RateLimited:
    server.script(Reply(status=429, headers=headers, body=body))
    with pytest.raises(RateLimited) as raised:
        call(server.base_url, complete)
    return raised.value


def test_retry_delay_from_retry_info(server: FakeGemini) -> None:
    limited = rate_limited(server, {}, fixture("error_429_resource_exhausted.json"))
    assert limited.retry_after == 7
    assert limited.message.startswith("You exceeded your current quota")


def test_retry_after_header_wins_over_retry_info(server: FakeGemini) -> None:
    body = fixture("error_429_resource_exhausted.json")
    assert rate_limited(server, {"Retry-After": "30"}, body).retry_after == 30


@pytest.mark.parametrize(
    "body",
    [{"modelVersion": MODEL}, {"candidates": ["text"]}],
    ids=str,
)
def test_malformed_body(server: FakeGemini, body: bytes | dict[str, Any]) -> None:
    server.script(Reply(body=body))
    with pytest.raises(MalformedResponse):
        call(server.base_url, complete)


def test_error_object_in_a_2xx_body_maps_like_an_error(server: FakeGemini) -> None:
    server.script(Reply(body=fixture("error_503_unavailable.json")))
    with pytest.raises(ProviderUnavailable, match="overloaded"):
        call(server.base_url, complete)


@pytest.mark.parametrize("raw", [False, True], ids=["data-event", "raw-json"])
@pytest.mark.parametrize(
    ("error", "error_type"),
    [
        (error_body(500, "An internal error has occurred.", "INTERNAL"), ProviderUnavailable),
        (error_body(429, "Resource exhausted.", "RESOURCE_EXHAUSTED"), RateLimited),
        ({"error": {"message": "Bad input", "status": "INVALID_ARGUMENT"}}, InvalidRequest),
    ],
)
def test_error_mid_stream(
    server: FakeGemini, error: dict[str, Any], error_type: type[ProviderError], raw: bool
) -> None:
    reply = Reply(raw_error_after=2, error=error) if raw else Reply(error_after=2, error=error)
    server.script(reply)
    received: list[ChatCompletionChunk] = []
    with pytest.raises(error_type) as raised:
        call(server.base_url, streamer(received))
    assert raised.value.message == error["error"]["message"]
    assert len(received) == 2


def test_stream_answered_as_a_json_array_is_read_as_its_responses(server: FakeGemini) -> None:
    """What Gemini sends without ``alt=sse``; a proxy that drops the query sends it too."""
    recorded = fixture("generate_content.json")
    server.script(Reply(body=[recorded]))
    received: list[ChatCompletionChunk] = []
    call(server.base_url, streamer(received))
    server.script(Reply(body=recorded))
    whole = call(server.base_url, complete)
    text = "".join(c.choices[0].delta.content or "" for c in received if c.choices)
    assert text == whole.choices[0].message.content
    assert received[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    assert received[-1].usage == whole.usage


def test_json_after_the_events_that_is_no_error_is_malformed(server: FakeGemini) -> None:
    server.script(
        Reply(body=f"data: {json.dumps(fixture('generate_content.json'))}\r\n\r\n[1, 2]\r\n")
    )
    with pytest.raises(MalformedResponse, match="outside its events"):
        call(server.base_url, streamer([]))


def sse_reply(name: str) -> Reply:
    return Reply(body=(FIXTURES / name).read_bytes(), headers={"Content-Type": "text/event-stream"})


def test_recorded_stream_replays(server: FakeGemini) -> None:
    server.script(sse_reply("stream_text.sse"))
    received: list[ChatCompletionChunk] = []
    call(server.base_url, streamer(received))
    assert "".join(c.choices[0].delta.content or "" for c in received) == DEFAULT_CONTENT
    assert received[-1].choices[0].finish_reason == "stop"
    assert received[-1].usage is not None
    assert received[-1].usage.model_dump() == {
        "prompt_tokens": 4,
        "completion_tokens": 27,
        "total_tokens": 31,
        "completion_tokens_details": {"reasoning_tokens": 18},
    }


def test_finish_reason_on_every_event_comes_once_at_the_end(server: FakeGemini) -> None:
    server.script(sse_reply("stream_finish_on_every_event.sse"))
    received: list[ChatCompletionChunk] = []
    call(server.base_url, streamer(received))
    assert [c.choices[0].finish_reason for c in received] == [None, None, "stop"]
    assert received[-1].usage is None  # that recording has no usageMetadata


def test_recorded_raw_error_mid_stream(server: FakeGemini) -> None:
    server.script(sse_reply("stream_raw_error.sse"))
    received: list[ChatCompletionChunk] = []
    with pytest.raises(ProviderUnavailable, match="overloaded") as raised:
        call(server.base_url, streamer(received))
    assert raised.value.status_code == 503
    assert received[0].choices[0].delta.content == "Hello!"


@pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
def test_blocked_prompt_is_an_invalid_request(server: FakeGemini, streaming: bool) -> None:
    body = fixture("prompt_blocked.json")
    if streaming:
        server.script(Reply(body=f"data: {json.dumps(body)}\r\n\r\n"))
    else:
        server.script(Reply(body=body))
    with pytest.raises(InvalidRequest, match=r"blocked the prompt \(SAFETY\)"):
        call(server.base_url, streamer([]) if streaming else complete)


@pytest.mark.parametrize(
    ("native", "expected"),
    [("MAX_TOKENS", "length"), ("SAFETY", "content_filter"), ("SPII", "content_filter")],
)
def test_finish_reasons(server: FakeGemini, native: str, expected: str) -> None:
    server.script(Reply(finish_reason=native))
    choice = call(server.base_url, complete).choices[0]
    assert (choice.finish_reason, choice.model_extra) == (
        expected,
        {"native_finish_reason": native},
    )


def test_list_models_reads_every_page(server: FakeGemini) -> None:
    async def models(provider: GeminiProvider) -> list[str]:
        return await provider.list_models()

    assert call(server.base_url, models) == ["gemini-2.5-flash", "gemini-2.5-pro"]
    first, second = server.requests
    assert (first.path, first.query) == ("/v1beta/models", {"pageSize": "1000"})
    assert second.query == {"pageSize": "1000", "pageToken": "page-2"}
    assert second.headers["x-goog-api-key"] == KEY
