"""What every HTTP adapter must do, run against each vendor's wire-level fake.

One battery over every adapter type: a plain answer, a streamed one with its
usage last, each HTTP status as our error with the vendor's message, the
wait a 429 asks for, timeouts, refused connections, malformed bodies, and
streams that are cut, stall, carry garbage or end before their end marker.
The vendors' own files test what differs (the exact request, their extras,
their error quirks, their tool calls).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import openai.types.chat as sdk
import pytest

from relayq.providers import PROVIDER_TYPES
from relayq.providers.base import HTTPProvider
from relayq.providers.errors import (
    AuthenticationFailed,
    InvalidRequest,
    MalformedResponse,
    ModelNotFound,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
)
from relayq.schemas.chat import ChatCompletion, ChatCompletionChunk
from tests.fakes.server import closed_port
from tests.providers.contract import CONTENT, CONTRACTS, Contract, text_of

WORDS = len(CONTENT.split())


@pytest.fixture(params=CONTRACTS, ids=str)
def adapter(request: pytest.FixtureRequest) -> Contract:
    chosen: Contract = request.param
    return chosen


def test_every_http_adapter_is_under_contract() -> None:
    assert {c.type for c in CONTRACTS} == set(PROVIDER_TYPES) - {"mock"}


def test_completion(adapter: Contract) -> None:
    with adapter.serve() as fake:
        completion = adapter.run(fake, adapter.completer())
        (sent,) = fake.requests
    assert sent.headers["accept"] == "application/json"
    choice = completion.choices[0]
    assert choice.message.content == CONTENT
    assert choice.message.tool_calls is None
    assert choice.finish_reason == "stop"
    assert completion.model == (adapter.answer_model or adapter.model)
    assert completion.usage is not None
    assert completion.usage.completion_tokens == WORDS
    assert completion.usage.prompt_tokens == 2
    assert completion.usage.total_tokens == 2 + WORDS
    sdk.ChatCompletion.model_validate(completion.model_dump(mode="json"))


def test_stream_reassembles_to_the_completion_with_usage_last(adapter: Contract) -> None:
    received: list[ChatCompletionChunk] = []
    with adapter.serve() as fake:
        adapter.run(fake, adapter.streamer(received))
        (sent,) = fake.requests
    assert sent.headers["accept"] == "text/event-stream"
    assert text_of(received) == CONTENT
    with_choices = [c for c in received if c.choices]
    assert with_choices[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in with_choices[:-1]] == [None] * (
        len(with_choices) - 1
    )
    assert with_choices[-1].choices[0].finish_reason == "stop"
    assert len({c.id for c in received if c.id}) == 1
    if not adapter.usage_on_every_chunk:
        assert all(c.usage is None for c in received[:-1])
    assert received[-1].usage is not None
    assert received[-1].usage.completion_tokens == WORDS
    for chunk in received:
        sdk.ChatCompletionChunk.model_validate(chunk.model_dump(mode="json"))


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (400, InvalidRequest),
        (401, AuthenticationFailed),
        (403, AuthenticationFailed),
        (404, ModelNotFound),
        (429, RateLimited),
        (500, ProviderUnavailable),
        (503, ProviderUnavailable),
    ],
)
@pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
def test_status_maps_to_error_with_the_vendor_message(
    adapter: Contract, status: int, error_type: type[ProviderError], streaming: bool
) -> None:
    received: list[ChatCompletionChunk] = []
    action = adapter.streamer(received) if streaming else adapter.completer()
    with adapter.serve() as fake:
        body = adapter.error_body(f"vendor says {status}", status)
        fake.script(adapter.reply(status=status, body=body))
        with pytest.raises(error_type) as raised:
            adapter.run(fake, action)
    assert raised.value.message == f"vendor says {status}"
    assert raised.value.status_code == status
    assert received == []


def test_wrong_key_is_authentication_failed(adapter: Contract) -> None:
    with adapter.serve() as fake, pytest.raises(AuthenticationFailed):
        adapter.run(fake, adapter.completer(), api_key="sk-wrong")


def test_non_json_error_body_still_maps_by_status(adapter: Contract) -> None:
    html = "<html><body>502 Bad Gateway</body></html>"
    with adapter.serve() as fake:
        fake.script(adapter.reply(status=502, body=html, headers={"Content-Type": "text/html"}))
        with pytest.raises(ProviderUnavailable, match="HTTP 502"):
            adapter.run(fake, adapter.completer())


def rate_limited(adapter: Contract, headers: dict[str, str]) -> RateLimited:
    with adapter.serve() as fake:
        fake.script(
            adapter.reply(status=429, headers=headers, body=adapter.error_body("slow down", 429))
        )
        with pytest.raises(RateLimited) as raised:
            adapter.run(fake, adapter.completer())
    return raised.value


def test_retry_after_in_seconds(adapter: Contract) -> None:
    limited = rate_limited(adapter, {"Retry-After": "7"})
    assert limited.retry_after == 7
    assert limited.retryable


def test_retry_after_as_http_date(adapter: Contract) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    retry_after = rate_limited(adapter, {"Retry-After": when}).retry_after
    assert retry_after is not None
    assert 25 <= retry_after <= 30


def test_429_without_hints_has_no_retry_after(adapter: Contract) -> None:
    limited = rate_limited(adapter, {})
    assert limited.retry_after is None
    assert limited.message == "slow down"


def test_slow_answer_times_out(adapter: Contract) -> None:
    with adapter.serve() as fake:
        fake.script(adapter.reply(delay=5))
        with pytest.raises(ProviderTimeout):
            adapter.run(fake, adapter.completer(), read_timeout=0.2)


def test_stream_stalling_mid_way_times_out(adapter: Contract) -> None:
    received: list[ChatCompletionChunk] = []
    with adapter.serve() as fake:
        fake.script(adapter.reply(stall_after=adapter.two_words_after, stall=5))
        with pytest.raises(ProviderTimeout):
            adapter.run(fake, adapter.streamer(received), read_timeout=0.2)
    assert text_of(received) == "Hello! How"


def test_refused_connection_is_a_connection_error(adapter: Contract) -> None:
    with pytest.raises(ProviderConnectionError):
        adapter.run_at(f"http://127.0.0.1:{closed_port()}", adapter.completer())


@pytest.mark.parametrize("body", [b"not json at all", b"[1, 2]"], ids=["not-json", "list"])
def test_malformed_body(adapter: Contract, body: bytes) -> None:
    with adapter.serve() as fake:
        fake.script(adapter.reply(body=body))
        with pytest.raises(MalformedResponse):
            adapter.run(fake, adapter.completer())


def test_stream_cut_mid_way_raises(adapter: Contract) -> None:
    received: list[ChatCompletionChunk] = []
    with adapter.serve() as fake:
        fake.script(adapter.reply(cut_after=adapter.two_words_after))
        with pytest.raises(ProviderConnectionError):
            adapter.run(fake, adapter.streamer(received))
    assert text_of(received) == "Hello! How"


def test_stream_ending_before_its_end_marker_raises(adapter: Contract) -> None:
    """A body that ends cleanly but before the vendor's end marker is not whole."""
    received: list[ChatCompletionChunk] = []
    with adapter.serve() as fake:
        fake.script(adapter.unfinished())
        with pytest.raises(MalformedResponse, match=adapter.end_marker):
            adapter.run(fake, adapter.streamer(received))
    assert text_of(received) == CONTENT


def test_garbage_event_mid_stream_is_malformed(adapter: Contract) -> None:
    received: list[ChatCompletionChunk] = []
    with adapter.serve() as fake:
        fake.script(adapter.reply(garbage_after=adapter.two_words_after))
        with pytest.raises(MalformedResponse):
            adapter.run(fake, adapter.streamer(received))
    assert text_of(received) == "Hello! How"


def test_many_calls_share_a_small_pool(adapter: Contract) -> None:
    complete = adapter.completer()

    async def many(provider: HTTPProvider) -> list[ChatCompletion]:
        return await asyncio.gather(*(complete(provider) for _ in range(40)))

    with adapter.serve() as fake:
        fake.script(*[adapter.reply(delay=0.05) for _ in range(40)])
        completions = adapter.run(fake, many)
        assert len(fake.requests) == 40
    assert {c.choices[0].message.content for c in completions} == {CONTENT}
