"""The mock provider: determinism, the controls, each fault, streaming."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from relayq.config.settings import ProviderSettings
from relayq.providers.base import Provider
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
from relayq.providers.mock import MockControls, MockProvider, plan_answer
from relayq.schemas.chat import ChatCompletionChunk, ChatCompletionRequest

PROMPT = "Tell me about the sea"


def make_request(mock: dict[str, Any] | None = None, **fields: Any) -> ChatCompletionRequest:
    body: dict[str, Any] = {
        "model": "mock",
        "messages": [
            {"role": "system", "content": "You are brief."},
            {"role": "user", "content": PROMPT},
        ],
        **fields,
    }
    if mock is not None:
        body["mock"] = mock
    return ChatCompletionRequest.model_validate(body)


@pytest.fixture
def provider() -> Iterator[MockProvider]:
    http = build_http_client(max_connections=10)
    settings = ProviderSettings(type="mock", read_timeout=0.05)
    yield MockProvider(name="mock", settings=settings, http=http)
    asyncio.run(http.aclose())


async def collect(chunks: AsyncIterator[ChatCompletionChunk]) -> list[ChatCompletionChunk]:
    return [chunk async for chunk in chunks]


def streamed_text(chunks: list[ChatCompletionChunk]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_same_messages_and_controls_give_the_same_text(provider: MockProvider) -> None:
    first = asyncio.run(provider.complete(make_request(), model="m"))
    second = asyncio.run(provider.complete(make_request(), model="m"))
    other = asyncio.run(
        provider.complete(make_request(messages=[{"role": "user", "content": "hi"}]), model="m")
    )
    assert first.choices[0].message.content == second.choices[0].message.content
    assert first.choices[0].message.content != other.choices[0].message.content
    assert first.id != second.id


def test_answer_has_tokens_words_and_usage(provider: MockProvider) -> None:
    completion = asyncio.run(provider.complete(make_request({"tokens": 7}), model="upstream"))
    text = completion.choices[0].message.content
    assert text is not None
    assert len(text.split(" ")) == 7
    assert completion.id.startswith("chatcmpl-mock-")
    assert completion.model == "upstream"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    prompt_words = 3 + len(PROMPT.split())
    assert completion.usage.prompt_tokens == prompt_words
    assert completion.usage.completion_tokens == 7
    assert completion.usage.total_tokens == prompt_words + 7


def test_default_is_sixteen_tokens(provider: MockProvider) -> None:
    completion = asyncio.run(provider.complete(make_request(), model="m"))
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 16


def test_fixed_text_is_answered_verbatim(provider: MockProvider) -> None:
    text = "Line one.\n\n  Line  two. "
    completion = asyncio.run(provider.complete(make_request({"text": text}), model="m"))
    chunks = asyncio.run(collect(provider.stream(make_request({"text": text}), model="m")))
    assert completion.choices[0].message.content == text
    assert streamed_text(chunks) == text
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 4


@pytest.mark.parametrize("limit_field", ["max_tokens", "max_completion_tokens"])
def test_token_limit_cuts_the_answer(provider: MockProvider, limit_field: str) -> None:
    full = asyncio.run(provider.complete(make_request({"tokens": 10}), model="m"))
    cut = asyncio.run(
        provider.complete(make_request({"tokens": 10}, **{limit_field: 3}), model="m")
    )
    full_text, cut_text = full.choices[0].message.content, cut.choices[0].message.content
    assert full_text is not None
    assert cut_text is not None
    assert full_text.startswith(cut_text)
    assert len(cut_text.split(" ")) == 3
    assert cut.choices[0].finish_reason == "length"
    assert cut.usage is not None
    assert cut.usage.completion_tokens == 3


def test_limit_above_tokens_changes_nothing() -> None:
    answer = plan_answer(make_request(max_tokens=50), MockControls(tokens=5))
    assert answer.finish_reason == "stop"
    assert len(answer.pieces) == 5


def test_latency_is_waited_before_the_answer(provider: MockProvider) -> None:
    started = time.monotonic()
    asyncio.run(provider.complete(make_request({"latency_ms": 60}), model="m"))
    assert time.monotonic() - started >= 0.06

    async def first_chunk_delay() -> float:
        started = time.monotonic()
        async for _ in provider.stream(make_request({"latency_ms": 60}), model="m"):
            return time.monotonic() - started
        raise AssertionError("no chunk")

    assert asyncio.run(first_chunk_delay()) >= 0.06


def test_stream_interval_is_waited_between_chunks(provider: MockProvider) -> None:
    started = time.monotonic()
    request = make_request({"tokens": 4, "stream_interval_ms": 25})
    asyncio.run(collect(provider.stream(request, model="m")))
    assert time.monotonic() - started >= 3 * 0.025


def test_stream_has_openai_shape_and_matches_the_whole_answer(provider: MockProvider) -> None:
    request = make_request({"tokens": 5})
    completion = asyncio.run(provider.complete(request, model="upstream"))
    chunks = asyncio.run(collect(provider.stream(request, model="upstream")))
    role, *words, finish, usage = chunks
    assert role.choices[0].delta.role == "assistant"
    assert len(words) == 5
    assert not (words[0].choices[0].delta.content or " ").startswith(" ")
    assert all((w.choices[0].delta.content or "").startswith(" ") for w in words[1:])
    assert finish.choices[0].finish_reason == "stop"
    assert usage.choices == []
    assert usage.usage == completion.usage
    assert streamed_text(chunks) == completion.choices[0].message.content
    assert {c.id for c in chunks} == {role.id}
    assert role.id.startswith("chatcmpl-mock-")
    assert {c.model for c in chunks} == {"upstream"}


def test_stream_cut_by_max_tokens_finishes_with_length(provider: MockProvider) -> None:
    chunks = asyncio.run(collect(provider.stream(make_request(max_tokens=2), model="m")))
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 2


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (400, InvalidRequest),
        (422, InvalidRequest),
        (401, AuthenticationFailed),
        (403, AuthenticationFailed),
        (404, ModelNotFound),
        (429, RateLimited),
        (500, ProviderUnavailable),
        (503, ProviderUnavailable),
        (529, ProviderUnavailable),
    ],
)
def test_error_fault_maps_its_status(
    provider: MockProvider, status: int, error_type: type[ProviderError]
) -> None:
    request = make_request({"fault": "error", "status": status})
    with pytest.raises(error_type) as raised:
        asyncio.run(provider.complete(request, model="m"))
    assert raised.value.status_code == status


def test_error_fault_defaults_to_500(provider: MockProvider) -> None:
    with pytest.raises(ProviderUnavailable) as raised:
        asyncio.run(provider.complete(make_request({"fault": "error"}), model="m"))
    assert raised.value.status_code == 500


@pytest.mark.parametrize(
    ("fault", "error_type"),
    [
        ("rate_limit", RateLimited),
        ("invalid_request", InvalidRequest),
        ("malformed", MalformedResponse),
        ("timeout", ProviderTimeout),
        ("error", ProviderUnavailable),
    ],
)
def test_fault_raises_its_error(
    provider: MockProvider, fault: str, error_type: type[ProviderError]
) -> None:
    with pytest.raises(error_type):
        asyncio.run(provider.complete(make_request({"fault": fault}), model="m"))


def test_rate_limit_carries_retry_after(provider: MockProvider) -> None:
    request = make_request({"fault": "rate_limit", "retry_after": 2.5})
    with pytest.raises(RateLimited) as raised:
        asyncio.run(provider.complete(request, model="m"))
    assert raised.value.retry_after == 2.5
    assert raised.value.to_dict()["retry_after"] == 2.5


def test_timeout_fault_waits_the_read_timeout(provider: MockProvider) -> None:
    started = time.monotonic()
    with pytest.raises(ProviderTimeout):
        asyncio.run(provider.complete(make_request({"fault": "timeout"}), model="m"))
    assert time.monotonic() - started >= 0.05


@pytest.mark.parametrize("fault", ["error", "rate_limit", "timeout", "invalid_request"])
def test_stream_faults_raise_before_the_first_chunk(provider: MockProvider, fault: str) -> None:
    received: list[ChatCompletionChunk] = []

    async def consume() -> None:
        async for chunk in provider.stream(make_request({"fault": fault}), model="m"):
            received.append(chunk)

    with pytest.raises(ProviderError):
        asyncio.run(consume())
    assert received == []


def test_malformed_stream_breaks_after_half_the_words(provider: MockProvider) -> None:
    received: list[ChatCompletionChunk] = []

    async def consume() -> None:
        request = make_request({"fault": "malformed", "tokens": 8})
        async for chunk in provider.stream(request, model="m"):
            received.append(chunk)

    with pytest.raises(MalformedResponse):
        asyncio.run(consume())
    assert received[0].choices[0].delta.role == "assistant"
    assert len(received) == 1 + 4


@pytest.mark.parametrize(
    ("controls", "field"),
    [
        ({"tokns": 3}, "mock.tokns"),
        ({"tokens": "many"}, "mock.tokens"),
        ({"fault": "explode"}, "mock.fault"),
        ({"latency_ms": -1}, "mock.latency_ms"),
        ("fast", "mock"),
    ],
)
def test_invalid_controls_are_an_invalid_request_naming_the_field(
    provider: MockProvider, controls: Any, field: str
) -> None:
    request = make_request()
    assert request.model_extra is not None
    request.model_extra["mock"] = controls
    with pytest.raises(InvalidRequest, match=rf"invalid mock controls: {field}\b"):
        asyncio.run(provider.complete(request, model="m"))
    with pytest.raises(InvalidRequest):
        asyncio.run(collect(provider.stream(request, model="m")))


class StreamOnlyMock(MockProvider):
    """The mock with no whole-answer code of its own: the base class adds its stream up."""

    complete = Provider.complete


def test_an_adapter_without_a_whole_answer_gets_its_stream_added_up(
    provider: MockProvider,
) -> None:
    stream_only = StreamOnlyMock(name="mock", settings=provider.settings, http=provider.http)
    request = make_request({"tokens": 7}, max_tokens=5)

    whole = asyncio.run(provider.complete(request, model="mock"))
    added_up = asyncio.run(stream_only.complete(request, model="mock"))

    assert added_up.choices[0].message.content == whole.choices[0].message.content
    assert added_up.choices[0].finish_reason == whole.choices[0].finish_reason == "length"
    assert added_up.usage == whole.usage
    with pytest.raises(MalformedResponse):
        asyncio.run(stream_only.complete(make_request({"fault": "malformed"}), model="mock"))
