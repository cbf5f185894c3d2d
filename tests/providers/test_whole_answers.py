"""Whole answers where a stream was asked for, and providers set never to stream upstream.

Workers always stream. An upstream that ignores ``stream`` (vLLM and Ollama
builds, OpenAI-compatible proxies, Gemini without ``alt=sse``) answers a
streamed call with its whole JSON answer; the adapter reads it with its own
non-streamed parser and hands it on as chunks. A provider set with
``stream_upstream: false`` asks for the whole answer to begin with. Either
way :meth:`Provider.stream` yields chunks that add up to what ``complete``
returns, and an error object in the answer raises the error it maps to.
Every adapter runs against its wire-level fake, told to ignore ``stream``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

import pytest
from pydantic import SecretStr

from relayq.config.settings import ProviderSettings
from relayq.providers import Provider, provider_type
from relayq.providers.assembly import CompletionAssembler
from relayq.providers.errors import ProviderError, ProviderUnavailable, RateLimited
from relayq.providers.http import build_http_client
from relayq.providers.mock import MockProvider
from relayq.schemas.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest
from tests.fakes import anthropic_server, cohere_server, gemini_server, openai_server
from tests.providers.openai_family import (
    KEY,
    REQUEST,
    TOOL_CALL,
    TOOL_REQUEST,
    VENDORS,
    Vendor,
    text_of,
    tool_calls_of,
)

T = TypeVar("T")


class Recorded(Protocol):
    """What every fake records of a request."""

    @property
    def path(self) -> str: ...
    @property
    def headers(self) -> dict[str, str]: ...
    @property
    def json(self) -> Any: ...


class Fake(Protocol):
    """What these tests use of a wire-level fake vendor."""

    ignores_stream: bool

    @property
    def base_url(self) -> str: ...
    @property
    def requests(self) -> Sequence[Recorded]: ...
    def script(self, *replies: Any) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


def _body_asks_to_stream(recorded: Recorded) -> bool:
    return bool(recorded.json.get("stream"))


def _gemini_asks_to_stream(recorded: Recorded) -> bool:
    return recorded.path.endswith(":streamGenerateContent")


@dataclass(frozen=True)
class Upstream:
    """An adapter type, its fake, and how that vendor says "stream" and fails in a 2xx body."""

    adapter: str
    fake: Callable[..., Fake]
    model: str
    content: str
    error_reply: Callable[[], object]
    """A 2xx answer holding an error object, as the fake's ``Reply``."""
    error_type: type[ProviderError]
    error_message: str
    asks_to_stream: Callable[[Recorded], bool] = _body_asks_to_stream
    options: dict[str, Any] | None = None

    def __str__(self) -> str:
        return self.adapter


def _openai_error() -> openai_server.Reply:
    error = {"message": "slow down", "type": "rate_limit_error", "code": "rate_limit_exceeded"}
    return openai_server.Reply(body={"error": error})


def _family(vendor: Vendor) -> Upstream:
    return Upstream(
        adapter=vendor.type,
        fake=vendor.fake,
        model=vendor.model,
        content=openai_server.DEFAULT_CONTENT,
        error_reply=_openai_error,
        error_type=RateLimited,
        error_message="slow down",
        options=vendor.options,
    )


ANTHROPIC = Upstream(
    adapter="anthropic",
    fake=anthropic_server.FakeAnthropic,
    model="claude-sonnet-4-6",
    content=anthropic_server.DEFAULT_CONTENT,
    error_reply=lambda: anthropic_server.Reply(
        body={"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    ),
    error_type=ProviderUnavailable,
    error_message="Overloaded",
)
COHERE = Upstream(
    adapter="cohere",
    fake=cohere_server.FakeCohere,
    model="command-a-03-2025",
    content=cohere_server.DEFAULT_CONTENT,
    error_reply=lambda: cohere_server.Reply(body=cohere_server.error_body("internal error")),
    error_type=ProviderUnavailable,
    error_message="internal error",
)
GEMINI = Upstream(
    adapter="gemini",
    fake=gemini_server.FakeGemini,
    model="gemini-2.5-flash",
    content=gemini_server.DEFAULT_CONTENT,
    error_reply=lambda: gemini_server.Reply(
        body=gemini_server.error_body(429, "Resource exhausted.", "RESOURCE_EXHAUSTED")
    ),
    error_type=RateLimited,
    error_message="Resource exhausted.",
    asks_to_stream=_gemini_asks_to_stream,
)
FAMILY = [_family(vendor) for vendor in VENDORS]
UPSTREAMS = [*FAMILY, ANTHROPIC, COHERE, GEMINI]


@pytest.fixture(params=UPSTREAMS, ids=str)
def upstream(request: pytest.FixtureRequest) -> Upstream:
    chosen: Upstream = request.param
    return chosen


def call(
    upstream: Upstream, fake: Fake, action: Callable[[Provider], Awaitable[T]], **settings: Any
) -> T:
    """Run ``action`` on the upstream's adapter, built through the registry, pointed at ``fake``."""
    config = ProviderSettings.model_validate(
        {
            "type": upstream.adapter,
            "base_url": fake.base_url,
            "api_key": SecretStr(KEY),
            "options": upstream.options or {},
            **settings,
        }
    )

    async def go() -> T:
        async with build_http_client(max_connections=10) as http:
            adapter = provider_type(upstream.adapter)(
                name=upstream.adapter, settings=config, http=http
            )
            return await action(adapter)

    return asyncio.run(go())


def stream_then_complete(
    upstream: Upstream, request: ChatCompletionRequest = REQUEST
) -> Callable[[Provider], Awaitable[tuple[list[ChatCompletionChunk], ChatCompletion]]]:
    async def both(provider: Provider) -> tuple[list[ChatCompletionChunk], ChatCompletion]:
        chunks = [chunk async for chunk in provider.stream(request, model=upstream.model)]
        return chunks, await provider.complete(request, model=upstream.model)

    return both


def assembled(chunks: list[ChatCompletionChunk]) -> ChatCompletion:
    """The completion the worker stores for ``chunks``."""
    assembler = CompletionAssembler()
    for chunk in chunks:
        assembler.add(chunk)
    return assembler.completion()


def carried(completion: ChatCompletion) -> dict[str, Any]:
    """What a stream carries of a completion: all but ``created``, per-choice extras and nulls."""
    return {
        **completion.model_dump(exclude={"created", "choices"}, exclude_none=True),
        "choices": [
            {
                "index": c.index,
                "message": c.message.model_dump(exclude_none=True),
                "finish_reason": c.finish_reason,
            }
            for c in completion.choices
        ],
    }


def test_a_whole_answer_to_a_streamed_call_is_sent_as_chunks(upstream: Upstream) -> None:
    with upstream.fake(api_key=KEY) as fake:
        fake.ignores_stream = True
        chunks, whole = call(upstream, fake, stream_then_complete(upstream))
        asked = fake.requests[0]
    assert upstream.asks_to_stream(asked)
    assert text_of(chunks) == upstream.content
    assert chunks[-1].usage is not None
    assert chunks[-1].usage == whole.usage
    assert carried(assembled(chunks)) == carried(whole)


@pytest.mark.parametrize("upstream", FAMILY, ids=str)
def test_a_whole_answer_to_a_streamed_tool_call_is_sent_as_its_deltas(upstream: Upstream) -> None:
    with upstream.fake(api_key=KEY) as fake:
        fake.ignores_stream = True
        fake.script(*[openai_server.Reply(tool_calls=[TOOL_CALL])] * 2)
        chunks, whole = call(upstream, fake, stream_then_complete(upstream, TOOL_REQUEST))
    assert tool_calls_of(chunks) == [TOOL_CALL]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert carried(assembled(chunks)) == carried(whole)


def test_an_error_object_answered_to_a_streamed_call_raises_its_error(upstream: Upstream) -> None:
    """(Gemini's adapter already read JSON errors written into a stream; the others did not.)"""
    received: list[ChatCompletionChunk] = []

    async def stream(provider: Provider) -> None:
        async for chunk in provider.stream(REQUEST, model=upstream.model):
            received.append(chunk)

    with upstream.fake(api_key=KEY) as fake:
        fake.script(upstream.error_reply())
        with pytest.raises(upstream.error_type) as raised:
            call(upstream, fake, stream)
    assert raised.value.message == upstream.error_message
    assert received == []


def test_a_provider_set_not_to_stream_asks_for_the_whole_answer(upstream: Upstream) -> None:
    with upstream.fake(api_key=KEY) as fake:
        chunks, whole = call(upstream, fake, stream_then_complete(upstream), stream_upstream=False)
        for_stream, for_complete = fake.requests
    assert not upstream.asks_to_stream(for_stream)
    assert (for_stream.path, for_stream.json) == (for_complete.path, for_complete.json)
    assert for_stream.headers["accept"] == "application/json"
    assert text_of(chunks) == upstream.content
    assert chunks[-1].usage == whole.usage
    assert carried(assembled(chunks)) == carried(whole)


def test_the_setting_holds_for_the_mock_provider_too() -> None:
    """The base class applies it, so no adapter can forget it."""
    request = ChatCompletionRequest.model_validate(
        {"model": "mock", "messages": [{"role": "user", "content": "Tell me about the sea"}]}
    )

    async def go(stream_upstream: bool) -> list[ChatCompletionChunk]:
        settings = ProviderSettings(type="mock", stream_upstream=stream_upstream)
        async with build_http_client(max_connections=10) as http:
            provider = MockProvider(name="mock", settings=settings, http=http)
            return [chunk async for chunk in provider.stream(request, model="m")]

    streamed, whole = asyncio.run(go(True)), asyncio.run(go(False))
    with_text = [c for c in whole if c.choices and c.choices[0].delta.content]
    assert len(with_text) == 1
    assert text_of(whole) == text_of(streamed)
    assert len(streamed) > len(whole)
