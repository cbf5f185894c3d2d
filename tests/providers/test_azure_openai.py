"""The azure_openai adapter's differences from OpenAI's, against the fake Azure resource.

The behaviour it shares with the other OpenAI-wire adapters is tested in
test_openai_family.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from relayq.config.settings import ProviderSettings
from relayq.providers.azure_openai import DEFAULT_API_VERSION, AzureOpenAIProvider
from relayq.providers.errors import InvalidRequest, ModelNotFound, RateLimited
from relayq.providers.http import build_http_client
from relayq.providers.openai import OpenAIProvider
from relayq.schemas.chat import ChatCompletionChunk
from tests.fakes.azure_openai_server import FakeAzureOpenAI, content_filter_error
from tests.fakes.openai_server import Reply
from tests.providers.openai_family import (
    AZURE,
    KEY,
    Vendor,
    completer,
    fixture_json,
    fixture_text,
    run,
    sse_reply,
    streamer,
    text_of,
)

V1 = Vendor("azure_openai", FakeAzureOpenAI, "gpt-4o-prod", options={"api_style": "v1"})


def test_request_on_the_wire_names_the_deployment_and_api_version() -> None:
    with FakeAzureOpenAI(api_key=KEY) as fake:
        run(AZURE, fake.base_url + "/", completer(AZURE), headers={"x-ms-client-request-id": "r1"})
        (sent,) = fake.requests
    assert (sent.method, sent.path) == ("POST", "/openai/deployments/gpt-4o-prod/chat/completions")
    assert sent.query == {"api-version": DEFAULT_API_VERSION}
    assert sent.headers["api-key"] == KEY
    assert "authorization" not in sent.headers
    assert sent.headers["x-ms-client-request-id"] == "r1"
    assert sent.json == {
        "model": "gpt-4o-prod",
        "messages": [{"role": "user", "content": "Say hello"}],
    }


def test_api_version_is_configurable() -> None:
    vendor = Vendor("azure_openai", FakeAzureOpenAI, "gpt-4o-prod", {"api_version": "2025-04-01"})
    with FakeAzureOpenAI(api_key=KEY) as fake:
        run(vendor, fake.base_url, completer(vendor))
        assert fake.requests[0].query == {"api-version": "2025-04-01"}


def test_v1_style_posts_to_the_v1_route_with_the_deployment_as_model() -> None:
    received: list[ChatCompletionChunk] = []
    with FakeAzureOpenAI(api_key=KEY) as fake:
        completion = run(V1, fake.base_url, completer(V1))
        run(V1, fake.base_url, streamer(V1, received))
        plain, streamed = fake.requests
    assert (plain.path, plain.query) == ("/openai/v1/chat/completions", {})
    assert plain.json["model"] == "gpt-4o-prod"
    assert plain.headers["api-key"] == KEY
    assert streamed.json["stream_options"] == {"include_usage": True}
    assert completion.model == "gpt-4o-2024-11-20"
    assert text_of(received) == completion.choices[0].message.content


def test_azure_additions_pass_through() -> None:
    received: list[ChatCompletionChunk] = []
    with FakeAzureOpenAI(api_key=KEY) as fake:
        completion = run(AZURE, fake.base_url, completer(AZURE))
        run(AZURE, fake.base_url, streamer(AZURE, received))
    extra = completion.model_extra or {}
    assert extra["prompt_filter_results"][0]["prompt_index"] == 0
    assert (completion.choices[0].model_extra or {})["content_filter_results"]["hate"] == {
        "filtered": False,
        "severity": "safe",
    }
    first = received[0]
    assert (first.object, first.id, first.choices) == ("chat.completion.chunk", "", [])
    assert "prompt_filter_results" in (first.model_extra or {})


def test_unknown_deployment_is_model_not_found() -> None:
    vendor = Vendor("azure_openai", FakeAzureOpenAI, "no-such-deployment")
    with FakeAzureOpenAI(api_key=KEY) as fake, pytest.raises(ModelNotFound) as raised:
        run(vendor, fake.base_url, completer(vendor))
    assert "deployment for this resource does not exist" in raised.value.message


@pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
def test_content_filter_rejection_is_invalid_request(streaming: bool) -> None:
    body = fixture_json("azure_openai", "content_filter_error.json")
    received: list[ChatCompletionChunk] = []
    action = streamer(AZURE, received) if streaming else completer(AZURE)
    with FakeAzureOpenAI(api_key=KEY) as fake:
        fake.script(Reply(status=400, body=body))
        with pytest.raises(InvalidRequest) as raised:
            run(AZURE, fake.base_url, action)
    assert raised.value.message == body["error"]["message"]
    assert raised.value.status_code == 400
    assert not raised.value.provider_side


def test_content_filter_code_is_invalid_request_whatever_the_status() -> None:
    with FakeAzureOpenAI(api_key=KEY) as fake:
        fake.script(Reply(status=500, body=content_filter_error()))
        with pytest.raises(InvalidRequest):
            run(AZURE, fake.base_url, completer(AZURE))


def test_content_filter_finish_reason_passes_through() -> None:
    answer = fixture_json("azure_openai", "chat_completion.json")
    answer["choices"][0]["finish_reason"] = "content_filter"
    answer["choices"][0]["message"]["content"] = None
    with FakeAzureOpenAI(api_key=KEY) as fake:
        fake.script(Reply(body=answer))
        completion = run(AZURE, fake.base_url, completer(AZURE))
    assert completion.choices[0].finish_reason == "content_filter"


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after-ms": "1500", "Retry-After": "2"}, 1.5),
        ({"Retry-After": "6"}, 6),
        ({"x-ratelimit-reset-requests": "1", "x-ratelimit-reset-tokens": "6"}, 6),
    ],
)
def test_rate_limit_reads_azures_headers(headers: dict[str, str], seconds: float) -> None:
    body = fixture_json("azure_openai", "rate_limit_error.json")
    with FakeAzureOpenAI(api_key=KEY) as fake:
        fake.script(Reply(status=429, headers=headers, body=body))
        with pytest.raises(RateLimited) as raised:
            run(AZURE, fake.base_url, completer(AZURE))
    assert raised.value.retry_after == seconds
    assert raised.value.message.startswith("Requests to the ChatCompletions_Create Operation")


def test_recorded_answers_parse() -> None:
    received: list[ChatCompletionChunk] = []
    with FakeAzureOpenAI(api_key=KEY) as fake:
        fake.script(
            Reply(body=fixture_json("azure_openai", "chat_completion.json")),
            sse_reply(fixture_text("azure_openai", "chat_completion_stream.sse")),
        )
        completion = run(AZURE, fake.base_url, completer(AZURE))
        run(AZURE, fake.base_url, streamer(AZURE, received))
    assert completion.choices[0].message.content == (
        "Yes, Azure OpenAI supports customer managed keys."
    )
    assert completion.usage is not None
    assert completion.usage.total_tokens == 45
    assert text_of(received) == "Yes, it does."
    assert received[-1].usage is not None
    assert received[-1].usage.total_tokens == 17


def build(**config: Any) -> AzureOpenAIProvider:
    async def make() -> AzureOpenAIProvider:
        async with build_http_client(max_connections=10) as http:
            settings = ProviderSettings.model_validate({"type": "azure_openai", **config})
            return AzureOpenAIProvider(name="azure", settings=settings, http=http)

    return asyncio.run(make())


def test_base_url_is_required() -> None:
    with pytest.raises(ValueError, match=r"'azure'.*base_url is required"):
        build()


def test_unknown_api_style_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"options\.api_style"):
        build(base_url="https://r.openai.azure.com", options={"api_style": "v2"})


def test_url_of_each_style() -> None:
    base = "https://contoso.openai.azure.com/"
    deployments = build(base_url=base)
    v1 = build(base_url=base, options={"api_style": "v1", "api_version": "preview"})
    assert deployments.chat_url(model="my deploy") == (
        "https://contoso.openai.azure.com/openai/deployments/my%20deploy/chat/completions"
        f"?api-version={DEFAULT_API_VERSION}"
    )
    assert v1.chat_url(model="x") == (
        "https://contoso.openai.azure.com/openai/v1/chat/completions?api-version=preview"
    )


def test_lists_no_models() -> None:
    async def models(provider: OpenAIProvider) -> list[str] | None:
        return await provider.list_models()

    with FakeAzureOpenAI(api_key=KEY) as fake:
        assert run(AZURE, fake.base_url, models) is None
        assert fake.requests == []
