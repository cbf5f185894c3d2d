"""The openai adapter over real HTTP, against the wire-level fake OpenAI server."""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest
from pydantic import SecretStr

from relayq.config.settings import ProviderSettings
from relayq.providers.errors import (
    AuthenticationFailed,
    InvalidRequest,
    MalformedResponse,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
)
from relayq.providers.http import build_http_client
from relayq.providers.openai import OpenAIProvider
from relayq.schemas.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest
from tests.fakes.openai_server import DEFAULT_CONTENT, FakeOpenAI, Reply, error_body

T = TypeVar("T")
KEY = "sk-test-123"

REQUEST = ChatCompletionRequest.model_validate(
    {
        "model": "public-name",
        "messages": [{"role": "user", "content": "Say hello"}],
        "temperature": 0.2,
        "reasoning_effort": "low",
    }
)


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=KEY) as fake:
        yield fake


def call(
    base_url: str,
    action: Callable[[OpenAIProvider], Awaitable[T]],
    **settings: Any,
) -> T:
    """Run ``action`` on an openai adapter over a fresh shared client, closed after."""
    config = ProviderSettings.model_validate(
        {"type": "openai", "base_url": base_url, "api_key": SecretStr(KEY), **settings}
    )

    async def run() -> T:
        async with build_http_client(max_connections=10) as http:
            return await action(OpenAIProvider(name="openai", settings=config, http=http))

    return asyncio.run(run())


async def complete(provider: OpenAIProvider) -> ChatCompletion:
    return await provider.complete(REQUEST, model="gpt-4o-mini")


def streamer(received: list[ChatCompletionChunk]) -> Callable[[OpenAIProvider], Awaitable[None]]:
    """An action that streams REQUEST into ``received``, keeping what came before a failure."""

    async def stream(provider: OpenAIProvider) -> None:
        async for chunk in provider.stream(REQUEST, model="gpt-4o-mini"):
            received.append(chunk)

    return stream


def test_request_on_the_wire(server: FakeOpenAI) -> None:
    call(server.base_url + "/", complete, headers={"OpenAI-Organization": "org-42"})
    (sent,) = server.requests
    assert (sent.method, sent.path) == ("POST", "/v1/chat/completions")
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.headers["openai-organization"] == "org-42"
    assert sent.headers["content-type"] == "application/json"
    assert sent.json == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Say hello"}],
        "temperature": 0.2,
        "reasoning_effort": "low",
    }


def test_stream_request_asks_for_usage(server: FakeOpenAI) -> None:
    call(server.base_url, streamer([]))
    (sent,) = server.requests
    assert sent.json["stream"] is True
    assert sent.json["stream_options"] == {"include_usage": True}
    assert sent.json["model"] == "gpt-4o-mini"
    assert sent.headers["accept"] == "text/event-stream"


def test_a_stream_ends_with_its_usage_in_a_chunk_without_choices(server: FakeOpenAI) -> None:
    """OpenAI's own order, passed on as it is: the role first, the finish reason on
    the last content chunk, then ``include_usage``'s chunk with ``choices: []``."""
    received: list[ChatCompletionChunk] = []
    call(server.base_url, streamer(received))
    assert "".join(c.choices[0].delta.content or "" for c in received if c.choices) == (
        DEFAULT_CONTENT
    )
    assert received[0].choices[0].delta.role == "assistant"
    assert received[-2].choices[0].finish_reason == "stop"
    assert received[-1].choices == []
    assert received[-1].usage is not None
    assert received[-1].usage.completion_tokens == len(DEFAULT_CONTENT.split())


def test_no_key_sends_no_authorization() -> None:
    with FakeOpenAI() as server:
        call(server.base_url, complete, api_key=None)
        assert "authorization" not in server.requests[0].headers


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (422, InvalidRequest),
        (502, ProviderUnavailable),
        (529, ProviderUnavailable),
    ],
)
@pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
def test_status_maps_to_error_with_the_vendor_message(
    server: FakeOpenAI, status: int, error_type: type[ProviderError], streaming: bool
) -> None:
    server.script(Reply(status=status, body=error_body(f"vendor says {status}")))
    received: list[ChatCompletionChunk] = []
    with pytest.raises(error_type) as raised:
        call(server.base_url, streamer(received) if streaming else complete)
    assert raised.value.message == f"vendor says {status}"
    assert raised.value.status_code == status
    assert received == []


def test_wrong_key_is_authentication_failed(server: FakeOpenAI) -> None:
    with pytest.raises(AuthenticationFailed, match="Incorrect API key provided"):
        call(server.base_url, complete, api_key=SecretStr("sk-wrong"))


def rate_limited(server: FakeOpenAI, headers: dict[str, str]) -> RateLimited:
    server.script(Reply(status=429, headers=headers, body=error_body("slow down")))
    with pytest.raises(RateLimited) as raised:
        call(server.base_url, complete)
    return raised.value


def test_ratelimit_reset_headers_take_the_longest(server: FakeOpenAI) -> None:
    headers = {"x-ratelimit-reset-requests": "20ms", "x-ratelimit-reset-tokens": "6m0s"}
    assert rate_limited(server, headers).retry_after == 360


@pytest.mark.parametrize("body", [{"object": "chat.completion"}], ids=str)
def test_malformed_body(server: FakeOpenAI, body: bytes | dict[str, Any]) -> None:
    server.script(Reply(body=body))
    with pytest.raises(MalformedResponse):
        call(server.base_url, complete)


def test_error_object_in_a_2xx_body_maps_like_an_error(server: FakeOpenAI) -> None:
    server.script(Reply(body=error_body("Rate limit reached", code="rate_limit_exceeded")))
    with pytest.raises(RateLimited, match="Rate limit reached"):
        call(server.base_url, complete)


@pytest.mark.parametrize(
    ("error", "error_type"),
    [
        (error_body("The server had an error.", type="server_error"), ProviderUnavailable),
        (error_body("Too many tokens", code="rate_limit_exceeded"), RateLimited),
        (error_body("Bad input", type="invalid_request_error"), InvalidRequest),
        ({"error": {"message": "vllm says no", "code": 400}}, InvalidRequest),
    ],
)
def test_error_event_mid_stream(
    server: FakeOpenAI, error: dict[str, Any], error_type: type[ProviderError]
) -> None:
    server.script(Reply(error_after=2, error=error))
    received: list[ChatCompletionChunk] = []
    with pytest.raises(error_type) as raised:
        call(server.base_url, streamer(received))
    assert raised.value.message == error["error"]["message"]
    assert raised.value.status_code == (400 if error["error"].get("code") == 400 else None)
    assert len(received) == 2


def test_a_stream_leaves_no_async_generator_for_the_loop_to_finalize(server: FakeOpenAI) -> None:
    """Read to the body's end after [DONE]: an abandoned async generator costs the loop a
    cross-thread wake-up and a task to finalize it (httpx's reading chain left six per
    call), and a body left unread can close the connection instead of reusing it."""
    finalized: list[object] = []

    async def three(provider: OpenAIProvider) -> None:
        first_iter, finalizer = sys.get_asyncgen_hooks()
        assert finalizer is not None

        def counted(generator: Any) -> None:
            finalized.append(generator)
            finalizer(generator)

        sys.set_asyncgen_hooks(first_iter, counted)
        for _ in range(3):
            async for _chunk in provider.stream(REQUEST, model="gpt-4o-mini"):
                pass
        gc.collect()

    call(server.base_url, three)
    assert len(server.requests) == 3
    assert len({request.peer for request in server.requests}) == 1
    assert finalized == []
