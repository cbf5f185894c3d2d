"""The perplexity adapter's differences from OpenAI's, against the fake Perplexity API.

The behaviour it shares with the other OpenAI-wire adapters is tested in
test_openai_family.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from relayq.providers.openai import OpenAIProvider
from relayq.schemas.chat import ChatCompletionChunk, ChatCompletionRequest
from tests.fakes.openai_server import Reply
from tests.fakes.perplexity_server import CITATIONS, SEARCH_RESULTS, FakePerplexity
from tests.providers.openai_family import (
    KEY,
    PERPLEXITY,
    Vendor,
    completer,
    fixture_json,
    fixture_text,
    run,
    sse_reply,
    streamer,
    text_of,
)

SEARCH_REQUEST = ChatCompletionRequest.model_validate(
    {
        "model": "public-name",
        "messages": [
            {"role": "system", "content": "Be precise."},
            {"role": "user", "content": "Say hello"},
        ],
        "max_completion_tokens": 300,
        "temperature": 0.2,
        "search_domain_filter": ["wikipedia.org"],
        "return_images": True,
        "return_related_questions": True,
        "web_search_options": {"search_context_size": "high"},
    }
)
DEFAULTS = Vendor(
    "perplexity",
    FakePerplexity,
    "sonar-pro",
    options={"defaults": {"search_recency_filter": "week", "search_domain_filter": ["x.com"]}},
)


def test_request_on_the_wire() -> None:
    with FakePerplexity(api_key=KEY) as fake:
        run(PERPLEXITY, fake.base_url, completer(PERPLEXITY, SEARCH_REQUEST))
        (sent,) = fake.requests
    assert (sent.method, sent.path) == ("POST", "/chat/completions")
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.json == {
        "model": "sonar",
        "messages": [
            {"role": "system", "content": "Be precise."},
            {"role": "user", "content": "Say hello"},
        ],
        "max_tokens": 300,
        "temperature": 0.2,
        "search_domain_filter": ["wikipedia.org"],
        "return_images": True,
        "return_related_questions": True,
        "web_search_options": {"search_context_size": "high"},
    }


def test_stream_request_sends_no_stream_options() -> None:
    with FakePerplexity(api_key=KEY) as fake:
        run(PERPLEXITY, fake.base_url, streamer(PERPLEXITY, []))
        (sent,) = fake.requests
    assert sent.json["stream"] is True
    assert "stream_options" not in sent.json


def test_option_defaults_fill_what_the_request_leaves_out() -> None:
    with FakePerplexity(api_key=KEY) as fake:
        run(DEFAULTS, fake.base_url, completer(DEFAULTS, SEARCH_REQUEST))
        run(DEFAULTS, fake.base_url, completer(DEFAULTS))
        explicit, defaulted = (r.json for r in fake.requests)
    assert explicit["search_domain_filter"] == ["wikipedia.org"]
    assert explicit["search_recency_filter"] == "week"
    assert defaulted["search_domain_filter"] == ["x.com"]


def test_completion_keeps_citations_search_results_images_and_questions() -> None:
    with FakePerplexity(api_key=KEY) as fake:
        completion = run(PERPLEXITY, fake.base_url, completer(PERPLEXITY, SEARCH_REQUEST))
    extra = completion.model_extra or {}
    assert extra["citations"] == CITATIONS
    assert extra["search_results"] == SEARCH_RESULTS
    assert extra["images"][0]["origin_url"] == CITATIONS[0]
    assert len(extra["related_questions"]) == 2
    assert completion.usage is not None
    usage = completion.usage.model_extra or {}
    assert (usage["search_context_size"], usage["num_search_queries"]) == ("low", 1)
    assert usage["cost"]["total_cost"] == 0.00502


def test_stream_chunks_keep_citations_and_end_without_done() -> None:
    received: list[ChatCompletionChunk] = []
    with FakePerplexity(api_key=KEY) as fake:
        run(PERPLEXITY, fake.base_url, streamer(PERPLEXITY, received))
    assert {c.object for c in received} == {"chat.completion.chunk"}
    assert all((c.model_extra or {})["citations"] == CITATIONS for c in received)
    assert received[-1].choices[0].finish_reason == "stop"


@pytest.mark.parametrize(
    ("fixture", "text", "total_tokens"),
    [
        ("chat_completion_stream.sse", "The capital of France is Paris.[1][2]", 16),
        ("chat_completion_stream_legacy.sse", "Hello!", 9),
    ],
)
def test_recorded_streams_parse(fixture: str, text: str, total_tokens: int) -> None:
    received: list[ChatCompletionChunk] = []
    with FakePerplexity(api_key=KEY) as fake:
        fake.script(sse_reply(fixture_text("perplexity", fixture)))
        run(PERPLEXITY, fake.base_url, streamer(PERPLEXITY, received))
    assert text_of(received) == text
    assert received[-1].usage is not None
    assert received[-1].usage.total_tokens == total_tokens
    assert all(
        "message" not in (choice.model_extra or {}) for c in received for choice in c.choices
    )


def test_recorded_completion_parses() -> None:
    answer: dict[str, Any] = fixture_json("perplexity", "chat_completion.json")
    with FakePerplexity(api_key=KEY) as fake:
        fake.script(Reply(body=answer))
        completion = run(PERPLEXITY, fake.base_url, completer(PERPLEXITY))
    assert completion.choices[0].message.content == "The capital of France is Paris.[1][2]"
    assert (completion.model_extra or {})["search_results"][0]["title"] == "Paris - Wikipedia"


def test_lists_no_models() -> None:
    async def models(provider: OpenAIProvider) -> list[str] | None:
        return await provider.list_models()

    with FakePerplexity(api_key=KEY) as fake:
        assert run(PERPLEXITY, fake.base_url, models) is None
