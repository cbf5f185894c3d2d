"""Legacy completions (``/v1/completions``) through the adapters, against the fake OpenAI
server over the real HTTP client: passed through whole or streamed, refused by the
adapters that do not serve them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from relayq.config.settings import ProviderSettings
from relayq.providers import provider_type
from relayq.providers.base import Provider
from relayq.providers.errors import InvalidRequest, RateLimited
from relayq.providers.http import build_http_client
from relayq.providers.text_stream import TextAssembler
from relayq.schemas.chat import ChatCompletionChunk
from relayq.schemas.completions import TextCompletion, TextCompletionRequest
from tests.fakes.openai_server import DEFAULT_CONTENT, FakeOpenAI, Reply, error_body

KEY = "sk-test-completions"


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=KEY) as server:
        yield server


def _provider(vendor_type: str, base_url: str, http: Any) -> Provider:
    settings = ProviderSettings.model_validate(
        {"type": vendor_type, "base_url": base_url, "api_key": SecretStr(KEY)}
    )
    return provider_type(vendor_type)(name=vendor_type, settings=settings, http=http)


def _complete(vendor_type: str, base_url: str, body: dict[str, Any]) -> TextCompletion:
    request = TextCompletionRequest.model_validate({"model": "alias", **body})

    async def run() -> TextCompletion:
        async with build_http_client(max_connections=4) as http:
            return await _provider(vendor_type, base_url, http).complete_text(
                request, model="upstream-model"
            )

    return asyncio.run(run())


def _stream(vendor_type: str, base_url: str, body: dict[str, Any]) -> list[ChatCompletionChunk]:
    request = TextCompletionRequest.model_validate({"model": "alias", **body})

    async def run() -> list[ChatCompletionChunk]:
        async with build_http_client(max_connections=4) as http:
            provider = _provider(vendor_type, base_url, http)
            return [c async for c in provider.stream_text(request, model="upstream-model")]

    return asyncio.run(run())


@pytest.mark.parametrize("vendor_type", ["openai", "openai_compatible"])
def test_a_completion_is_passed_through_as_it_came(fake: FakeOpenAI, vendor_type: str) -> None:
    answer = _complete(
        vendor_type,
        fake.base_url,
        {"prompt": ["a b", "c"], "n": 1, "echo": True, "top_k": 3, "mock": {"tokens": 2}},
    )

    assert [choice.text for choice in answer.choices] == [DEFAULT_CONTENT] * 2
    assert answer.usage is not None
    assert answer.usage.prompt_tokens == 3
    [sent] = fake.requests
    assert sent.path == "/v1/completions"
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.json == {
        "model": "upstream-model",
        "prompt": ["a b", "c"],
        "n": 1,
        "echo": True,
        "top_k": 3,
    }


def test_a_stream_carries_the_upstreams_chunks_and_adds_up(fake: FakeOpenAI) -> None:
    chunks = _stream("openai", fake.base_url, {"prompt": "x", "stream": True})

    [sent] = fake.requests
    assert (sent.json["stream"], sent.json["stream_options"]) == (True, {"include_usage": True})
    assert all(chunk.wire is not None and '"text_completion"' in chunk.wire for chunk in chunks)
    assembler = TextAssembler()
    for chunk in chunks:
        assembler.add(chunk)
    whole = assembler.completion()
    assert whole.choices[0].text == DEFAULT_CONTENT
    assert whole.choices[0].finish_reason == "stop"
    assert whole.usage is not None
    assert whole.usage.completion_tokens == len(DEFAULT_CONTENT.split())


def test_a_stream_answered_whole_is_that_answers_chunks(fake: FakeOpenAI) -> None:
    whole = {
        "id": "cmpl-1",
        "object": "text_completion",
        "created": 1,
        "model": "upstream-model",
        "choices": [{"text": "all at once", "index": 0, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4},
    }
    fake.script(Reply(body=whole))

    chunks = _stream("openai", fake.base_url, {"prompt": "x", "stream": True})

    assert [c.choices[0].delta.content for c in chunks if c.choices] == ["all at once"]
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == 4


def test_upstream_errors_map_to_our_tree(fake: FakeOpenAI) -> None:
    fake.script(
        Reply(status=400, body=error_body("This model does not support completions")),
        Reply(status=429, headers={"retry-after": "3"}, body=error_body("slow down")),
    )

    with pytest.raises(InvalidRequest, match="does not support"):
        _complete("openai", fake.base_url, {"prompt": "x"})
    with pytest.raises(RateLimited) as limited:
        _complete("openai", fake.base_url, {"prompt": "x"})
    assert limited.value.retry_after == 3


@pytest.mark.parametrize("vendor_type", ["anthropic", "grok", "perplexity", "mock"])
def test_adapters_that_do_not_serve_it_refuse_before_any_call(
    fake: FakeOpenAI, vendor_type: str
) -> None:
    assert provider_type(vendor_type).serves_text_completions is False
    with pytest.raises(InvalidRequest, match="does not serve legacy completions"):
        _complete(vendor_type, fake.base_url, {"prompt": "x"})
    with pytest.raises(InvalidRequest, match="does not serve legacy completions"):
        _stream(vendor_type, fake.base_url, {"prompt": "x", "stream": True})
    assert fake.requests == []
