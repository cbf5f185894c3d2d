"""The cohere adapter over real HTTP, against the wire-level fake Cohere server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from pydantic import SecretStr

from relayq.config.settings import ProviderSettings
from relayq.providers.cohere import CohereProvider
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
from relayq.providers.http import build_http_client
from relayq.schemas.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest
from tests.fakes.cohere_server import (
    DEFAULT_CONTENT,
    FakeCohere,
    Reply,
    ToolCallScript,
    error_body,
)

T = TypeVar("T")
KEY = "co-test-123"
MODEL = "command-a-03-2025"
FIXTURES = Path(__file__).parent.parent / "fixtures" / "cohere"

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


@pytest.fixture
def server() -> Iterator[FakeCohere]:
    with FakeCohere(api_key=KEY) as fake:
        yield fake


def call(base_url: str, action: Callable[[CohereProvider], Awaitable[T]], **settings: Any) -> T:
    """Run ``action`` on a cohere adapter over a fresh shared client, closed after."""
    config = ProviderSettings.model_validate(
        {"type": "cohere", "base_url": base_url, "api_key": SecretStr(KEY), **settings}
    )

    async def run() -> T:
        async with build_http_client(max_connections=10) as http:
            return await action(CohereProvider(name="cohere", settings=config, http=http))

    return asyncio.run(run())


def completer(request: ChatCompletionRequest) -> Callable[[CohereProvider], Awaitable[Any]]:
    async def complete(provider: CohereProvider) -> ChatCompletion:
        return await provider.complete(request, model=MODEL)

    return complete


complete = completer(REQUEST)


def streamer(
    received: list[ChatCompletionChunk], request: ChatCompletionRequest = REQUEST
) -> Callable[[CohereProvider], Awaitable[None]]:
    """An action that streams ``request`` into ``received``, keeping what came before a failure."""

    async def stream(provider: CohereProvider) -> None:
        async for chunk in provider.stream(request, model=MODEL):
            received.append(chunk)

    return stream


def text_of(chunks: list[ChatCompletionChunk]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_request_on_the_wire(server: FakeCohere) -> None:
    schema = {"type": "object", "properties": {"greeting": {"type": "string"}}}
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
            "max_tokens": 64,
            "stop": ["END"],
            "seed": 7,
            "frequency_penalty": 0.1,
            "user": "user-1",
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "g", "schema": schema},
            },
            "k": 40,
            "safety_mode": "STRICT",
        }
    )
    call(server.base_url + "/", completer(request), headers={"X-Client-Name": "relayq-test"})
    (sent,) = server.requests
    assert (sent.method, sent.path, sent.query) == ("POST", "/v2/chat", {})
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.headers["x-client-name"] == "relayq-test"
    assert sent.headers["content-type"] == "application/json"
    assert sent.headers["accept"] == "application/json"
    assert sent.json == {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "system", "content": "Answer in English."},
            {"role": "user", "content": "Say hello"},
        ],
        "temperature": 0.2,
        "p": 0.9,
        "max_tokens": 64,
        "seed": 7,
        "frequency_penalty": 0.1,
        "stop_sequences": ["END"],
        "response_format": {"type": "json_object", "json_schema": schema},
        "k": 40,
        "safety_mode": "STRICT",
    }


def test_stream_request_asks_for_a_stream(server: FakeCohere) -> None:
    call(server.base_url, streamer([]))
    (sent,) = server.requests
    assert sent.json == {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Say hello"}],
        "stream": True,
    }
    assert sent.headers["accept"] == "text/event-stream"


def test_options_are_defaults_the_request_overrides(server: FakeCohere) -> None:
    options = {"safety_mode": "OFF", "strict_tools": True, "priority": 3}
    request = ChatCompletionRequest.model_validate({**REQUEST.model_dump(), "priority": 1})
    call(server.base_url, completer(request), options=options)
    sent = server.requests[0].json
    assert (sent["safety_mode"], sent["strict_tools"], sent["priority"]) == ("OFF", True, 1)


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match=r"options\.safety_mode"):
        call("http://127.0.0.1:9", complete, options={"safety_mode": "LAX"})


def test_no_key_sends_no_authorization() -> None:
    with FakeCohere() as fake:
        call(fake.base_url, complete, api_key=None)
        assert "authorization" not in fake.requests[0].headers


def test_completion_is_parsed(server: FakeCohere) -> None:
    completion = call(server.base_url, complete)
    choice = completion.choices[0]
    assert choice.message.content == DEFAULT_CONTENT
    assert choice.message.tool_calls is None
    assert (choice.finish_reason, choice.model_extra) == (
        "stop",
        {"native_finish_reason": "COMPLETE"},
    )
    assert completion.id == "c14c80c3-18eb-4519-9460-6c92edd8cfb4"
    assert completion.model == MODEL
    assert completion.usage is not None
    words = len(DEFAULT_CONTENT.split())
    assert completion.usage.model_dump() == {
        "prompt_tokens": 2,
        "completion_tokens": words,
        "total_tokens": 2 + words,
    }


def test_stream_reassembles_to_the_completion_with_usage(server: FakeCohere) -> None:
    received: list[ChatCompletionChunk] = []
    call(server.base_url, streamer(received))
    assert text_of(received) == DEFAULT_CONTENT
    assert received[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in received[:-1]] == [None] * (len(received) - 1)
    last = received[-1]
    assert last.choices[0].finish_reason == "stop"
    assert last.usage is not None
    assert last.usage.completion_tokens == len(DEFAULT_CONTENT.split())
    assert all(c.usage is None for c in received[:-1])
    assert {c.id for c in received} == {"c14c80c3-18eb-4519-9460-6c92edd8cfb4"}


def test_tool_call_round_trip(server: FakeCohere) -> None:
    madrid = ToolCallScript("get_weather", {"location": "Madrid"})
    server.script(Reply(tool_calls=[madrid], tool_plan="I will look up the weather."))
    first = call(
        server.base_url, completer(TOOL_REQUEST.model_copy(update={"tool_choice": "required"}))
    )
    message = first.choices[0].message
    assert first.choices[0].finish_reason == "tool_calls"
    assert message.content == "I will look up the weather."
    assert message.tool_calls is not None
    (tool_call,) = message.tool_calls
    assert (tool_call.id, tool_call.function.name) == ("get_weather_0k7xq2m9p", "get_weather")
    assert json.loads(tool_call.function.arguments) == {"location": "Madrid"}
    assert server.requests[0].json["tools"] == [WEATHER_TOOL]
    assert server.requests[0].json["tool_choice"] == "REQUIRED"

    follow_up = ChatCompletionRequest.model_validate(
        {
            "model": "public-name",
            "messages": [
                *TOOL_REQUEST.model_dump(exclude_none=True)["messages"],
                message.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": tool_call.id, "content": '{"celsius": 24}'},
            ],
            "tools": [WEATHER_TOOL],
        }
    )
    second = call(server.base_url, completer(follow_up))
    assert second.choices[0].message.content == DEFAULT_CONTENT
    assert server.requests[1].json["messages"] == [
        {"role": "user", "content": "Weather in Madrid?"},
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": "get_weather_0k7xq2m9p",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"location": "Madrid"}'},
                }
            ],
            "tool_plan": "I will look up the weather.",
        },
        {"role": "tool", "tool_call_id": "get_weather_0k7xq2m9p", "content": '{"celsius": 24}'},
    ]
    assert "tool_choice" not in server.requests[1].json


def test_streamed_tool_call(server: FakeCohere) -> None:
    calls = [ToolCallScript("get_weather", {"location": "Madrid"}), ToolCallScript("get_time")]
    server.script(Reply(tool_calls=calls))
    received: list[ChatCompletionChunk] = []
    call(server.base_url, streamer(received, TOOL_REQUEST))
    assert text_of(received) == "I will look up the weather."
    deltas = [d for c in received for d in c.choices[0].delta.tool_calls or []]
    assert deltas[0] == {
        "index": 0,
        "id": "get_weather_0k7xq2m9p",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    arguments: dict[int, str] = {}
    for delta in deltas:
        arguments[delta["index"]] = (
            arguments.get(delta["index"], "") + delta["function"]["arguments"]
        )
    assert {i: json.loads(a) for i, a in arguments.items()} == {0: {"location": "Madrid"}, 1: {}}
    assert received[-1].choices[0].finish_reason == "tool_calls"
    assert received[-1].usage is not None


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (422, InvalidRequest),
        (498, InvalidRequest),
        (499, ProviderUnavailable),
        (501, ProviderUnavailable),
        (504, ProviderUnavailable),
    ],
)
@pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
def test_status_maps_to_error_with_the_vendor_message(
    server: FakeCohere, status: int, error_type: type[ProviderError], streaming: bool
) -> None:
    server.script(Reply(status=status, body=error_body(f"cohere says {status}")))
    received: list[ChatCompletionChunk] = []
    with pytest.raises(error_type) as raised:
        call(server.base_url, streamer(received) if streaming else complete)
    assert raised.value.message == f"cohere says {status}"
    assert raised.value.status_code == status
    assert received == []


@pytest.mark.parametrize(
    ("name", "status", "error_type"),
    [
        ("error_400.json", 400, InvalidRequest),
        ("error_401.json", 401, AuthenticationFailed),
        ("error_404.json", 404, ModelNotFound),
        ("error_429.json", 429, RateLimited),
        ("error_500.json", 500, ProviderUnavailable),
    ],
)
def test_recorded_error_bodies(
    server: FakeCohere, name: str, status: int, error_type: type[ProviderError]
) -> None:
    body = json.loads((FIXTURES / name).read_text())
    server.script(Reply(status=status, body=body))
    with pytest.raises(error_type) as raised:
        call(server.base_url, complete)
    assert raised.value.message == body["message"]


def test_wrong_key_is_authentication_failed(server: FakeCohere) -> None:
    with pytest.raises(AuthenticationFailed, match="invalid api token"):
        call(server.base_url, complete, api_key=SecretStr("co-wrong"))


@pytest.mark.parametrize(
    "body",
    [
        {"id": "x", "finish_reason": "COMPLETE"},
        {"message": {"tool_calls": [{"id": 3}]}, "finish_reason": "TOOL_CALL"},
    ],
    ids=str,
)
def test_malformed_body(server: FakeCohere, body: bytes | dict[str, Any]) -> None:
    server.script(Reply(body=body))
    with pytest.raises(MalformedResponse):
        call(server.base_url, complete)


def test_error_reported_by_message_end_raises(server: FakeCohere) -> None:
    server.script(Reply(error_after=4, error="internal server error"))
    received: list[ChatCompletionChunk] = []
    with pytest.raises(ProviderUnavailable, match="internal server error") as raised:
        call(server.base_url, streamer(received))
    assert raised.value.status_code is None
    assert len(received) == 3


def sse(*events: dict[str, Any]) -> Reply:
    text = "".join(f"event: {e.get('type')}\ndata: {json.dumps(e)}\n\n" for e in events)
    return Reply(body=text, headers={"Content-Type": "text/event-stream"})


START = {"id": "s-1", "type": "message-start", "delta": {"message": {"role": "assistant"}}}


@pytest.mark.parametrize(
    ("event", "error_type"),
    [
        ({"type": "message-end", "delta": {"finish_reason": "TIMEOUT"}}, ProviderTimeout),
        ({"type": "message-end", "delta": {"finish_reason": "ERROR"}}, ProviderUnavailable),
        ({"message": "an untyped error event"}, ProviderUnavailable),
        ({"delta": {}}, MalformedResponse),
    ],
    ids=["timeout", "error", "untyped-message", "untyped"],
)
def test_failure_events_mid_stream(
    server: FakeCohere, event: dict[str, Any], error_type: type[ProviderError]
) -> None:
    server.script(sse(START, event))
    received: list[ChatCompletionChunk] = []
    with pytest.raises(error_type):
        call(server.base_url, streamer(received))
    assert len(received) == 1


def fixture_reply(name: str) -> Reply:
    return Reply(body=(FIXTURES / name).read_bytes(), headers={"Content-Type": "text/event-stream"})


def test_recorded_stream_replays(server: FakeCohere) -> None:
    server.script(fixture_reply("stream_text.sse"))
    received: list[ChatCompletionChunk] = []
    call(server.base_url, streamer(received))
    assert text_of(received) == "LLMs are neural networks."
    assert received[-1].choices[0].finish_reason == "stop"
    assert received[-1].usage is not None
    assert received[-1].usage.model_dump() == {
        "prompt_tokens": 5,
        "completion_tokens": 6,
        "total_tokens": 11,
    }


def test_recorded_tool_call_stream_replays(server: FakeCohere) -> None:
    server.script(fixture_reply("stream_tool_call.sse"))
    received: list[ChatCompletionChunk] = []
    call(server.base_url, streamer(received, TOOL_REQUEST))
    assert text_of(received) == "I will look up the weather."
    deltas = [d for c in received for d in c.choices[0].delta.tool_calls or []]
    assert deltas[0]["id"] == "get_weather_p1t92w7gfgq7"
    assert json.loads("".join(d["function"]["arguments"] for d in deltas)) == {"location": "Madrid"}
    assert received[-1].choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize(
    ("native", "expected"), [("MAX_TOKENS", "length"), ("STOP_SEQUENCE", "stop")]
)
def test_finish_reasons(server: FakeCohere, native: str, expected: str) -> None:
    server.script(Reply(finish_reason=native))
    assert call(server.base_url, complete).choices[0].finish_reason == expected


def test_error_finish_in_a_whole_response_raises(server: FakeCohere) -> None:
    server.script(Reply(finish_reason="ERROR"))
    with pytest.raises(ProviderUnavailable, match="ERROR"):
        call(server.base_url, complete)


def test_list_models_reads_every_page(server: FakeCohere) -> None:
    async def models(provider: CohereProvider) -> list[str]:
        return await provider.list_models()

    assert call(server.base_url, models) == ["command-a-03-2025", "command-r7b-12-2024"]
    first, second = server.requests
    assert (first.method, first.path) == ("GET", "/v1/models")
    assert first.query == {"endpoint": "chat", "page_size": "1000"}
    assert second.query == {"endpoint": "chat", "page_size": "1000", "page_token": "page-2"}
    assert second.headers["authorization"] == f"Bearer {KEY}"
