"""The anthropic adapter over real HTTP, against the wire-level fake Anthropic server.

The fake's answers and the recorded fixtures are cross-checked against the
official ``anthropic`` SDK: its types validate them and its client talks to
the fake.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import anthropic
import httpx
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from anthropic.types.shared import ErrorResponse
from pydantic import SecretStr, TypeAdapter

from relayq.config.settings import ProviderSettings
from relayq.providers import provider_type
from relayq.providers.anthropic import AnthropicProvider, ratelimit_reset_seconds
from relayq.providers.anthropic_request import messages_body
from relayq.providers.errors import (
    AuthenticationFailed,
    InvalidRequest,
    MalformedResponse,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
)
from relayq.providers.http import build_http_client
from relayq.providers.sse import ServerSentEvent, SSEDecoder
from relayq.schemas.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest
from tests.fakes.anthropic_server import (
    API_VERSION,
    DEFAULT_CONTENT,
    FakeAnthropic,
    Reply,
    ToolUse,
    error_body,
    message,
    stream_events,
)

T = TypeVar("T")
KEY = "sk-ant-test-123"
MODEL = "claude-sonnet-4-6"
FIXTURES = Path(__file__).parent.parent / "fixtures" / "anthropic"
EVENT = TypeAdapter[RawMessageStreamEvent](RawMessageStreamEvent)

REQUEST = ChatCompletionRequest.model_validate(
    {
        "model": "public-name",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say hello"},
        ],
        "temperature": 0.2,
    }
)

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}},
            "required": ["location"],
        },
    },
}


@pytest.fixture
def server() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(api_key=KEY) as fake:
        yield fake


def call(
    base_url: str,
    action: Callable[[AnthropicProvider], Awaitable[T]],
    **settings: Any,
) -> T:
    """Run ``action`` on an anthropic adapter over a fresh shared client, closed after."""
    config = ProviderSettings.model_validate(
        {"type": "anthropic", "base_url": base_url, "api_key": SecretStr(KEY), **settings}
    )

    async def run() -> T:
        async with build_http_client(max_connections=10) as http:
            return await action(AnthropicProvider(name="claude", settings=config, http=http))

    return asyncio.run(run())


def completer(
    request: ChatCompletionRequest = REQUEST,
) -> Callable[[AnthropicProvider], Awaitable[ChatCompletion]]:
    async def complete(provider: AnthropicProvider) -> ChatCompletion:
        return await provider.complete(request, model=MODEL)

    return complete


complete = completer()


def streamer(
    received: list[ChatCompletionChunk], request: ChatCompletionRequest = REQUEST
) -> Callable[[AnthropicProvider], Awaitable[None]]:
    """An action that streams ``request`` into ``received``, keeping what came before a failure."""

    async def stream(provider: AnthropicProvider) -> None:
        async for chunk in provider.stream(request, model=MODEL):
            received.append(chunk)

    return stream


def text_of(chunks: list[ChatCompletionChunk]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def sse_events(text: str) -> list[ServerSentEvent]:
    """The events of a recorded ``text/event-stream`` body."""
    decoder = SSEDecoder()
    events = [event for line in text.splitlines() if (event := decoder.feed(line)) is not None]
    last = decoder.flush()
    return events if last is None else [*events, last]


def body_for(**fields: Any) -> dict[str, Any]:
    """The Messages body built for a request with ``fields`` (pure, no server)."""
    request = ChatCompletionRequest.model_validate({"model": "public-name", **fields})
    return messages_body(request, model=MODEL, default_max_tokens=4096, stream=False)


# --- the request on the wire ------------------------------------------------------------


def test_request_on_the_wire(server: FakeAnthropic) -> None:
    request = ChatCompletionRequest.model_validate(
        {
            "model": "public-name",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "Use English."}]},
                {"role": "user", "content": "Say hello"},
            ],
            "temperature": 0.2,
            "top_p": 0.9,
            "max_completion_tokens": 50,
            "stop": "END",
            "user": "user-7",
            "seed": 42,
            "top_k": 5,
            "reasoning_effort": "low",
        }
    )
    call(server.base_url + "/", completer(request), headers={"X-Trace": "t-1"})
    (sent,) = server.requests
    assert (sent.method, sent.path) == ("POST", "/v1/messages")
    assert sent.headers["x-api-key"] == KEY
    assert sent.headers["anthropic-version"] == API_VERSION
    assert sent.headers["content-type"] == "application/json"
    assert sent.headers["accept"] == "application/json"
    assert sent.headers["x-trace"] == "t-1"
    assert "authorization" not in sent.headers
    assert "anthropic-beta" not in sent.headers
    assert sent.json == {
        "model": MODEL,
        "max_tokens": 50,
        "system": "Be brief.\n\nUse English.",
        "messages": [{"role": "user", "content": "Say hello"}],
        "stop_sequences": ["END"],
        "temperature": 0.2,
        "top_p": 0.9,
        "metadata": {"user_id": "user-7"},
        "top_k": 5,
    }


def test_default_max_tokens_and_stream_flag(server: FakeAnthropic) -> None:
    call(server.base_url, streamer([]), options={"default_max_tokens": 1234})
    (sent,) = server.requests
    assert sent.json["max_tokens"] == 1234
    assert sent.json["stream"] is True
    assert sent.headers["accept"] == "text/event-stream"


def test_options_set_version_and_betas(server: FakeAnthropic) -> None:
    options = {"api_version": "2023-01-01", "betas": ["files-api-2025-04-14", "beta-b"]}
    call(server.base_url, complete, options=options)
    (sent,) = server.requests
    assert sent.headers["anthropic-version"] == "2023-01-01"
    assert sent.headers["anthropic-beta"] == "files-api-2025-04-14,beta-b"


def test_configured_headers_win_whatever_their_case(server: FakeAnthropic) -> None:
    call(server.base_url, complete, headers={"Anthropic-Version": "2099-01-01"})
    (sent,) = server.requests
    assert sent.headers["anthropic-version"] == "2099-01-01"


def test_unknown_option_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"options\.max_tokens"):
        call("http://127.0.0.1:1", complete, options={"max_tokens": 5})


def test_registry_names_the_adapter() -> None:
    assert provider_type("anthropic") is AnthropicProvider


# --- translating the request ------------------------------------------------------------


def test_consecutive_turns_are_merged_tool_results_first() -> None:
    body = body_for(
        messages=[
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {"role": "user", "content": [{"type": "text", "text": "In celsius."}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "toolu_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'},
                    },
                    {
                        "id": "toolu_2",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"location": "Rome"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
            {
                "role": "tool",
                "tool_call_id": "toolu_2",
                "content": [{"type": "text", "text": "21C"}],
            },
            {"role": "user", "content": "Which is warmer?"},
        ]
    )
    assert body["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Weather in Paris and Rome?"},
                {"type": "text", "text": "In celsius."},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"location": "Paris"},
                },
                {
                    "type": "tool_use",
                    "id": "toolu_2",
                    "name": "get_weather",
                    "input": {"location": "Rome"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_2",
                    "content": [{"type": "text", "text": "21C"}],
                },
                {"type": "text", "text": "Which is warmer?"},
            ],
        },
    ]


def test_image_and_pdf_parts() -> None:
    body = body_for(
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Compare."},
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="},
                    },
                    {
                        "type": "image_url",
                        "image_url": {"url": "https://example.com/cat.jpg", "detail": "high"},
                    },
                    {
                        "type": "file",
                        "file": {
                            "filename": "a.pdf",
                            "file_data": "data:application/pdf;base64,JVBERi0=",
                        },
                    },
                ],
            }
        ]
    )
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "Compare."},
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
        },
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="},
            "title": "a.pdf",
        },
    ]


@pytest.mark.parametrize(
    ("tool_choice", "parallel", "expected"),
    [
        (None, None, None),
        ("auto", None, {"type": "auto"}),
        ("required", None, {"type": "any"}),
        ("none", None, {"type": "none"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            None,
            {"type": "tool", "name": "get_weather"},
        ),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        ("none", False, {"type": "none"}),
        ("auto", True, {"type": "auto"}),
    ],
)
def test_tools_and_tool_choice(
    tool_choice: Any, parallel: bool | None, expected: dict[str, Any] | None
) -> None:
    strict_tool = {"type": "function", "function": {"name": "noop", "strict": True}}
    body = body_for(
        messages=[{"role": "user", "content": "hi"}],
        tools=[WEATHER_TOOL, strict_tool],
        tool_choice=tool_choice,
        parallel_tool_calls=parallel,
    )
    assert body["tools"] == [
        {
            "name": "get_weather",
            "description": "The current weather in a city.",
            "input_schema": WEATHER_TOOL["function"]["parameters"],  # type: ignore[index]
        },
        {"name": "noop", "input_schema": {"type": "object", "properties": {}}, "strict": True},
    ]
    assert body.get("tool_choice") == expected


def test_json_schema_response_format_is_carried_json_object_is_not() -> None:
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string"}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": "a", "schema": schema, "strict": True},
    }
    body = body_for(messages=[{"role": "user", "content": "hi"}], response_format=response_format)
    assert body["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    plain = body_for(
        messages=[{"role": "user", "content": "hi"}], response_format={"type": "json_object"}
    )
    assert "output_config" not in plain


@pytest.mark.parametrize(
    "fields",
    [
        {"n": 2},
        {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
        {
            "messages": [
                {"role": "user", "content": [{"type": "file", "file": {"file_id": "file-1"}}]}
            ]
        },
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}],
                }
            ]
        },
        {"tools": [{"type": "custom", "custom": {"name": "x"}}]},
        {"response_format": {"type": "json_schema", "json_schema": {"name": "no-schema"}}},
        {
            "messages": [
                {"role": "user", "content": "hi"},
                {
                    "role": "assistant",
                    "tool_calls": [{"id": "t", "function": {"name": "f", "arguments": "not json"}}],
                },
            ]
        },
    ],
    ids=["n", "audio", "file-id", "ftp-image", "custom-tool", "schema-less", "bad-arguments"],
)
def test_what_cannot_be_carried_is_refused_before_sending(
    server: FakeAnthropic, fields: dict[str, Any]
) -> None:
    request = ChatCompletionRequest.model_validate(
        {"model": "public-name", "messages": [{"role": "user", "content": "hi"}], **fields}
    )
    with pytest.raises(InvalidRequest):
        call(server.base_url, completer(request))
    assert server.requests == []


# --- answers -----------------------------------------------------------------------------


def test_completion_is_parsed(server: FakeAnthropic) -> None:
    completion = call(server.base_url, complete)
    assert completion.id.startswith("msg_")
    assert completion.choices[0].message.content == DEFAULT_CONTENT
    assert completion.choices[0].message.tool_calls is None
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == MODEL
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 4  # "Be brief." + "Say hello"
    assert completion.usage.completion_tokens == len(DEFAULT_CONTENT.split())
    assert completion.usage.total_tokens == 4 + len(DEFAULT_CONTENT.split())


def test_stream_reassembles_to_the_completion_with_usage(server: FakeAnthropic) -> None:
    received: list[ChatCompletionChunk] = []
    call(server.base_url, streamer(received))
    assert text_of(received) == DEFAULT_CONTENT
    assert received[0].choices[0].delta.role == "assistant"
    assert {c.id for c in received} == {received[0].id}
    assert {c.model for c in received} == {MODEL}
    assert received[-2].choices[0].finish_reason == "stop"
    assert [c for c in received[:-2] if c.choices[0].finish_reason] == []
    assert received[-1].choices == []
    assert received[-1].usage is not None
    assert received[-1].usage.completion_tokens == len(DEFAULT_CONTENT.split())
    assert received[-1].usage.prompt_tokens == 4


@pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
def test_cached_tokens_count_into_the_prompt(server: FakeAnthropic, streaming: bool) -> None:
    server.script(Reply(usage={"cache_read_input_tokens": 100, "cache_creation_input_tokens": 20}))
    received: list[ChatCompletionChunk] = []
    if streaming:
        call(server.base_url, streamer(received))
        usage = received[-1].usage
    else:
        usage = call(server.base_url, complete).usage
    assert usage is not None
    assert usage.prompt_tokens == 4 + 100 + 20
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.model_extra == {
        "prompt_tokens_details": {"cached_tokens": 100, "cache_creation_tokens": 20}
    }


@pytest.mark.parametrize(
    ("fields", "content", "finish"),
    [
        ({"max_tokens": 3}, "Hello! How can", "length"),
        ({"stop": ["assist"]}, "Hello! How can I ", "stop"),
    ],
)
@pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
def test_finish_reasons(
    server: FakeAnthropic, fields: dict[str, Any], content: str, finish: str, streaming: bool
) -> None:
    request = ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}
    )
    if streaming:
        received: list[ChatCompletionChunk] = []
        call(server.base_url, streamer(received, request))
        assert (text_of(received), received[-2].choices[0].finish_reason) == (content, finish)
    else:
        choice = call(server.base_url, completer(request)).choices[0]
        assert (choice.message.content, choice.finish_reason) == (content, finish)


TOOL_REQUEST = ChatCompletionRequest.model_validate(
    {
        "model": "public-name",
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
        "tools": [WEATHER_TOOL],
        "tool_choice": "required",
    }
)
PARIS = ToolUse(name="get_weather", input={"location": "Paris"}, id="toolu_01Paris")


def test_tool_call_round_trip(server: FakeAnthropic) -> None:
    server.script(Reply(content="Let me check.", tool_uses=[PARIS]), Reply(content="It is 18C."))
    first = call(server.base_url, completer(TOOL_REQUEST))
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me check."
    assert choice.message.tool_calls is not None
    (tool_call,) = choice.message.tool_calls
    assert (tool_call.id, tool_call.type, tool_call.function.name) == (
        "toolu_01Paris",
        "function",
        "get_weather",
    )
    assert json.loads(tool_call.function.arguments) == {"location": "Paris"}

    earlier = TOOL_REQUEST.model_dump(mode="json", exclude_none=True)
    follow_up = ChatCompletionRequest.model_validate(
        {
            **earlier,
            "messages": [
                *earlier["messages"],
                choice.message.model_dump(mode="json", exclude_none=True),
                {"role": "tool", "tool_call_id": tool_call.id, "content": '{"celsius": 18}'},
            ],
        }
    )
    second = call(server.base_url, completer(follow_up))
    assert second.choices[0].message.content == "It is 18C."
    assert second.choices[0].finish_reason == "stop"

    sent = server.requests[1].json
    assert sent == {
        "model": MODEL,
        "max_tokens": 4096,
        "messages": [
            {"role": "user", "content": "What is the weather in Paris?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Let me check."},
                    {
                        "type": "tool_use",
                        "id": "toolu_01Paris",
                        "name": "get_weather",
                        "input": {"location": "Paris"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_01Paris",
                        "content": '{"celsius": 18}',
                    }
                ],
            },
        ],
        "tools": [
            {
                "name": "get_weather",
                "description": "The current weather in a city.",
                "input_schema": WEATHER_TOOL["function"]["parameters"],  # type: ignore[index]
            }
        ],
        "tool_choice": {"type": "any"},
    }


def test_streamed_tool_calls_arrive_as_openai_deltas(server: FakeAnthropic) -> None:
    rome = ToolUse(name="get_weather", input={"location": "Rome", "unit": "celsius"})
    server.script(Reply(content="", tool_uses=[PARIS, rome]))
    received: list[ChatCompletionChunk] = []
    call(server.base_url, streamer(received, TOOL_REQUEST))
    deltas = [d for c in received if c.choices for d in c.choices[0].delta.tool_calls or []]
    heads = [d for d in deltas if "id" in d]
    assert heads == [
        {
            "index": 0,
            "id": "toolu_01Paris",
            "type": "function",
            "function": {"name": "get_weather", "arguments": ""},
        },
        {
            "index": 1,
            "id": "toolu_01FakeToolUse00000000002",
            "type": "function",
            "function": {"name": "get_weather", "arguments": ""},
        },
    ]
    assert all(set(d) == {"index", "function"} for d in deltas if "id" not in d)
    arguments = [
        "".join(d["function"]["arguments"] for d in deltas if d["index"] == i) for i in (0, 1)
    ]
    assert [json.loads(a) for a in arguments] == [PARIS.input, rome.input]
    assert text_of(received) == ""
    assert received[-2].choices[0].finish_reason == "tool_calls"
    assert received[-1].usage is not None


def test_recorded_tool_use_stream_translates(server: FakeAnthropic) -> None:
    server.script(sse_reply("stream_tool_use.sse"))
    received: list[ChatCompletionChunk] = []
    call(server.base_url, streamer(received))
    assert text_of(received) == "I'll check the current weather in Paris for you."
    deltas = [d for c in received if c.choices for d in c.choices[0].delta.tool_calls or []]
    assert deltas[0] == {
        "index": 0,
        "id": "toolu_01NRLabsLyVHZPKxbKvkfSMn",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert "".join(d["function"]["arguments"] for d in deltas) == '{"location": "Paris"}'
    assert received[-2].choices[0].finish_reason == "tool_calls"
    usage = received[-1].usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (377, 65, 442)


def test_recorded_refusal_stream_is_a_content_filter(server: FakeAnthropic) -> None:
    server.script(sse_reply("stream_refusal.sse"))
    received: list[ChatCompletionChunk] = []
    call(server.base_url, streamer(received))
    assert received[-2].choices[0].finish_reason == "content_filter"
    usage = received[-1].usage
    assert usage is not None
    assert usage.completion_tokens == 120
    assert usage.model_extra == {"completion_tokens_details": {"reasoning_tokens": 67}}


def test_recorded_basic_stream_translates(server: FakeAnthropic) -> None:
    server.script(sse_reply("stream_basic.sse"))
    received: list[ChatCompletionChunk] = []
    call(server.base_url, streamer(received))
    assert text_of(received) == "Hello there!"
    assert received[0].id == "msg_4QpJur2dWWDjF6C758FbBw5vm12BaVipnK"
    assert received[-1].usage is not None
    assert received[-1].usage.total_tokens == 17


@pytest.mark.parametrize(
    ("fixture", "content", "finish", "tool_calls"),
    [
        ("message.json", "Hi! My name is Claude.", "stop", 0),
        (
            "message_tool_use.json",
            "I'll check the current weather in San Francisco for you.",
            "tool_calls",
            1,
        ),
        ("message_cached.json", "The novel's central theme is ambition.", "stop", 0),
    ],
)
def test_recorded_messages_translate(
    server: FakeAnthropic, fixture: str, content: str, finish: str, tool_calls: int
) -> None:
    server.script(Reply(body=(FIXTURES / fixture).read_text()))
    completion = call(server.base_url, complete)
    choice = completion.choices[0]
    assert (choice.message.content, choice.finish_reason) == (content, finish)
    assert len(choice.message.tool_calls or []) == tool_calls
    if tool_calls:
        assert choice.message.tool_calls is not None
        arguments = choice.message.tool_calls[0].function.arguments
        assert json.loads(arguments) == {"location": "San Francisco, CA", "unit": "celsius"}
    if fixture == "message_cached.json":
        assert completion.usage is not None
        assert completion.usage.prompt_tokens == 21 + 188086


def test_list_models_follows_pages() -> None:
    with FakeAnthropic(api_key=KEY, page_size=2) as server:

        async def models(provider: AnthropicProvider) -> list[str] | None:
            return await provider.list_models()

        assert call(server.base_url, models) == [
            "claude-opus-4-7",
            "claude-sonnet-4-6",
            "claude-haiku-4-5",
        ]
        assert [r.path for r in server.requests] == [
            "/v1/models?limit=1000",
            "/v1/models?limit=1000&after_id=claude-sonnet-4-6",
        ]


# --- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind", "error_type"),
    [
        (413, "request_too_large", InvalidRequest),
        (529, "overloaded_error", ProviderUnavailable),
    ],
)
@pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
def test_status_maps_to_error_with_the_vendor_message(
    server: FakeAnthropic, status: int, kind: str, error_type: type[ProviderError], streaming: bool
) -> None:
    server.script(Reply(status=status, body=error_body(f"vendor says {status}", type=kind)))
    received: list[ChatCompletionChunk] = []
    with pytest.raises(error_type) as raised:
        call(server.base_url, streamer(received) if streaming else complete)
    assert raised.value.message == f"vendor says {status}"
    assert raised.value.status_code == status
    assert received == []


def test_billing_error_is_an_authentication_failure(server: FakeAnthropic) -> None:
    server.script(Reply(status=402, body=error_body("Add credits", type="billing_error")))
    with pytest.raises(AuthenticationFailed, match="Add credits") as raised:
        call(server.base_url, complete)
    assert raised.value.status_code == 402


@pytest.mark.parametrize(
    ("key", "message"), [("sk-wrong", "invalid x-api-key"), (None, "required")]
)
def test_wrong_or_missing_key_is_authentication_failed(
    server: FakeAnthropic, key: str | None, message: str
) -> None:
    with pytest.raises(AuthenticationFailed, match=message):
        call(server.base_url, complete, api_key=SecretStr(key) if key else None)
    assert ("x-api-key" in server.requests[0].headers) is bool(key)


def rate_limited(server: FakeAnthropic, headers: dict[str, str]) -> RateLimited:
    server.script(
        Reply(status=429, headers=headers, body=error_body("slow down", type="rate_limit_error"))
    )
    with pytest.raises(RateLimited) as raised:
        call(server.base_url, complete)
    return raised.value


def test_ratelimit_reset_headers_without_retry_after(server: FakeAnthropic) -> None:
    def stamp(seconds: float) -> str:
        return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")

    headers = {
        "anthropic-ratelimit-requests-remaining": "10",
        "anthropic-ratelimit-requests-reset": stamp(60),
        "anthropic-ratelimit-output-tokens-remaining": "0",
        "anthropic-ratelimit-output-tokens-reset": stamp(20),
    }
    retry_after = rate_limited(server, headers).retry_after
    assert retry_after is not None
    assert 10 < retry_after <= 20  # the exhausted limit decides, not the later reset


def test_ratelimit_reset_seconds_from_the_recorded_headers() -> None:
    headers = json.loads((FIXTURES / "rate_limit_headers.json").read_text())
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert ratelimit_reset_seconds(headers, now=now) == 12  # tokens and input-tokens exhausted
    nothing_exhausted = {k: v for k, v in headers.items() if not k.endswith("remaining")}
    assert ratelimit_reset_seconds(nothing_exhausted, now=now) == 12
    assert ratelimit_reset_seconds({"anthropic-ratelimit-tokens-reset": "soon"}, now=now) is None
    past = {"anthropic-ratelimit-requests-reset": "2024-12-31T23:59:00Z"}
    assert ratelimit_reset_seconds(past, now=now) == 0


@pytest.mark.parametrize(
    "body",
    [{"object": "chat.completion", "choices": []}],
    ids=["openai-shape"],
)
def test_malformed_body(server: FakeAnthropic, body: bytes | dict[str, Any]) -> None:
    server.script(Reply(body=body))
    with pytest.raises(MalformedResponse):
        call(server.base_url, complete)


def test_error_object_in_a_2xx_body_maps_by_its_type(server: FakeAnthropic) -> None:
    server.script(Reply(body=(FIXTURES / "error_overloaded.json").read_text()))
    with pytest.raises(ProviderUnavailable, match="Overloaded") as raised:
        call(server.base_url, complete)
    assert raised.value.status_code is None


def test_stream_ending_without_message_stop_raises(server: FakeAnthropic) -> None:
    server.script(Reply(omit_stop=True))
    received: list[ChatCompletionChunk] = []
    with pytest.raises(MalformedResponse, match="message_stop"):
        call(server.base_url, streamer(received))
    assert text_of(received) == DEFAULT_CONTENT
    assert all(c.choices and c.choices[0].finish_reason is None for c in received)


@pytest.mark.parametrize(
    ("kind", "error_type"),
    [
        ("overloaded_error", ProviderUnavailable),
        ("api_error", ProviderUnavailable),
        ("rate_limit_error", RateLimited),
        ("invalid_request_error", InvalidRequest),
        ("request_too_large", InvalidRequest),
        ("something_new_error", ProviderUnavailable),
    ],
)
def test_error_event_mid_stream(
    server: FakeAnthropic, kind: str, error_type: type[ProviderError]
) -> None:
    error = {"type": "error", "error": {"type": kind, "message": f"{kind} happened"}}
    server.script(Reply(error_after=4, error=error))
    received: list[ChatCompletionChunk] = []
    with pytest.raises(error_type) as raised:
        call(server.base_url, streamer(received))
    assert raised.value.message == f"{kind} happened"
    assert raised.value.status_code is None
    assert text_of(received) == "Hello!"


def test_recorded_error_event_raises(server: FakeAnthropic) -> None:
    basic = (FIXTURES / "stream_basic.sse").read_text().split("event: content_block_delta")[0]
    server.script(sse_reply(text=basic + (FIXTURES / "stream_error.sse").read_text()))
    with pytest.raises(ProviderUnavailable, match="Overloaded"):
        call(server.base_url, streamer([]))


# --- the fake and the fixtures against the official SDK -----------------------------------


def sse_reply(name: str | None = None, *, text: str | None = None) -> Reply:
    """A reply sending a recorded stream (a fixture file, or ``text``) verbatim."""
    body = text if text is not None else (FIXTURES / str(name)).read_text()
    return Reply(body=body, headers={"Content-Type": "text/event-stream"})


SDK_BODY = {
    "model": MODEL,
    "max_tokens": 100,
    "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
    "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
}


@pytest.mark.parametrize("tool_uses", [[], [PARIS]], ids=["text", "tool-use"])
def test_fake_answers_parse_with_the_sdk_types(tool_uses: list[ToolUse]) -> None:
    reply = Reply(tool_uses=tool_uses, usage={"cache_read_input_tokens": 3})
    parsed = Message.model_validate(message(SDK_BODY, reply, DEFAULT_CONTENT))
    assert parsed.stop_reason == ("tool_use" if tool_uses else "end_turn")
    events = stream_events(SDK_BODY, reply, DEFAULT_CONTENT)
    kinds = [EVENT.validate_python(e).type for e in events if e["type"] != "ping"]
    assert kinds[0] == "message_start"
    assert kinds[-2:] == ["message_delta", "message_stop"]
    assert ErrorResponse.model_validate(error_body("nope", type="overloaded_error"))
    assert ErrorResponse.model_validate(Reply().error)


def test_fake_stream_follows_the_recorded_event_order() -> None:
    def shape(kinds: list[str]) -> list[str]:
        return [k for i, k in enumerate(kinds) if i == 0 or k != kinds[i - 1]]

    recorded = [e.event for e in sse_events((FIXTURES / "stream_basic.sse").read_text())]
    fake = [e["type"] for e in stream_events(SDK_BODY, Reply(), DEFAULT_CONTENT)]
    assert shape(fake) == shape(recorded)


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.sse")))
def test_recorded_streams_parse_with_the_sdk_types(name: str) -> None:
    for event in sse_events((FIXTURES / name).read_text()):
        payload = json.loads(event.data)
        if event.event == "error":
            assert ErrorResponse.model_validate(payload).error.type == "overloaded_error"
        elif event.event != "ping":
            assert EVENT.validate_python(payload).type == event.event


@pytest.mark.parametrize("name", ["message.json", "message_tool_use.json", "message_cached.json"])
def test_recorded_messages_parse_with_the_sdk_types(name: str) -> None:
    assert Message.model_validate_json((FIXTURES / name).read_text()).type == "message"


@pytest.mark.parametrize("name", ["error_not_found.json", "error_overloaded.json"])
def test_recorded_errors_parse_with_the_sdk_types(name: str) -> None:
    assert ErrorResponse.model_validate_json((FIXTURES / name).read_text()).type == "error"


def test_the_sdk_client_talks_to_the_fake(server: FakeAnthropic) -> None:
    server.script(
        Reply(),
        Reply(content="Checking.", tool_uses=[PARIS]),
        Reply(status=529, body=error_body("Overloaded", type="overloaded_error")),
    )
    with anthropic.Anthropic(api_key=KEY, base_url=server.base_url, max_retries=0) as client:
        plain = client.messages.create(
            model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "Say hello"}]
        )
        assert [b.type for b in plain.content] == ["text"]
        with client.messages.stream(
            model=MODEL,
            max_tokens=100,
            messages=[{"role": "user", "content": "Weather?"}],
            tools=[{"name": "get_weather", "input_schema": {"type": "object"}}],
        ) as stream:
            final = stream.get_final_message()
        assert final.stop_reason == "tool_use"
        assert [b.type for b in final.content] == ["text", "tool_use"]
        assert final.content[1].input == {"location": "Paris"}  # type: ignore[union-attr]
        with pytest.raises(anthropic.InternalServerError) as raised:
            client.messages.create(
                model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "x"}]
            )
        assert raised.value.status_code == 529
        assert [m.id for m in client.models.list()] == list(server.models)
    assert server.requests[0].headers["authorization"] == f"Bearer {KEY}"


@pytest.mark.parametrize(
    ("messages", "problem"),
    [
        ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "alternate"),
        ([{"role": "user", "content": ""}], "non-empty"),
        ([{"role": "system", "content": "a"}], "role"),
        (
            [
                {"role": "user", "content": "a"},
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}],
                },
                {"role": "user", "content": "b"},
            ],
            "without `tool_result`",
        ),
    ],
)
def test_fake_rejects_what_anthropic_rejects(
    server: FakeAnthropic, messages: list[dict[str, Any]], problem: str
) -> None:
    body = {"model": MODEL, "max_tokens": 10, "messages": messages, "tools": SDK_BODY["tools"]}
    headers = {"x-api-key": KEY, "anthropic-version": API_VERSION}
    response = httpx.post(f"{server.base_url}/v1/messages", json=body, headers=headers)
    assert response.status_code == 400
    assert problem in response.json()["error"]["message"]
