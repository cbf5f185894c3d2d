"""Embeddings through every adapter that serves them, each against its vendor's wire-level fake.

What every HTTP adapter must do (vectors in order, base64 as OpenAI's SDK
decodes it, ``dimensions`` carried, inputs split at the vendor's per-call
limit and joined in order, vendor errors in our tree) runs over each one;
then what differs per vendor, the mock, and refusals made before any call.
"""

from __future__ import annotations

import array
import asyncio
import base64
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import openai.types as sdk
import pytest
from pydantic import SecretStr

from relayq.config.settings import ProviderSettings
from relayq.providers import provider_type
from relayq.providers.base import Provider
from relayq.providers.errors import (
    AuthenticationFailed,
    InvalidRequest,
    MalformedResponse,
    ModelNotFound,
    ProviderError,
    RateLimited,
)
from relayq.providers.http import build_http_client
from relayq.schemas.embeddings import MAX_INPUTS, EmbeddingRequest, EmbeddingResponse
from tests.fakes import cohere_server, gemini_server, openai_server
from tests.fakes.azure_openai_server import FakeAzureOpenAI, azure_error
from tests.fakes.vectors import fake_vector

KEY = "sk-test-embeddings"


@dataclass(frozen=True)
class Vendor:
    """One adapter type, its fake, and how that vendor words an error and a reply."""

    type: str
    serve: Callable[[], AbstractContextManager[Any]]
    model: str
    limit: int
    reply: Callable[..., Any]
    error_body: Callable[[str, int], Any]
    bills_tokens: bool = True
    options: dict[str, Any] = field(default_factory=dict)
    base: Callable[[Any], str] = lambda fake: str(fake.base_url)

    def __str__(self) -> str:
        return self.type


def _openai_error(message: str, status: int) -> Any:
    return openai_server.error_body(message)


def _google_error(message: str, status: int) -> Any:
    names = {400: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL"}
    return gemini_server.error_body(status, message, names.get(status, "UNKNOWN"))


OPENAI = Vendor(
    "openai",
    lambda: openai_server.FakeOpenAI(api_key=KEY),
    "text-embedding-3-small",
    2048,
    openai_server.Reply,
    _openai_error,
)
COMPATIBLE = Vendor(
    "openai_compatible",
    lambda: openai_server.FakeOpenAI(api_key=KEY),
    "bge-m3",
    50,
    openai_server.Reply,
    _openai_error,
    options={"max_embedding_inputs": 50},
)
AZURE = Vendor(
    "azure_openai",
    lambda: FakeAzureOpenAI(api_key=KEY, deployments=("embed-prod",)),
    "embed-prod",
    2048,
    openai_server.Reply,
    lambda message, status: azure_error(str(status), message),
)
COHERE = Vendor(
    "cohere",
    lambda: cohere_server.FakeCohere(api_key=KEY),
    "embed-v4.0",
    96,
    cohere_server.Reply,
    lambda message, status: cohere_server.error_body(message),
)
GEMINI = Vendor(
    "gemini",
    lambda: gemini_server.FakeGemini(api_key=KEY),
    "gemini-embedding-001",
    100,
    gemini_server.Reply,
    _google_error,
    bills_tokens=False,
)
VENDORS = [OPENAI, COMPATIBLE, AZURE, COHERE, GEMINI]
SPLITTING = [vendor for vendor in VENDORS if vendor.limit < MAX_INPUTS]


@pytest.fixture(params=VENDORS, ids=str)
def vendor(request: pytest.FixtureRequest) -> Vendor:
    chosen: Vendor = request.param
    return chosen


def provider(vendor_type: str, base_url: str, **settings: Any) -> Callable[..., Provider]:
    config = ProviderSettings.model_validate(
        {"type": vendor_type, "base_url": base_url, "api_key": SecretStr(KEY), **settings}
    )
    return lambda http: provider_type(vendor_type)(name=vendor_type, settings=config, http=http)


def embed(
    vendor_type: str, base_url: str, body: dict[str, Any], *, model: str, **settings: Any
) -> EmbeddingResponse:
    """``body`` embedded through a ``vendor_type`` adapter over the real HTTP client."""
    build = provider(vendor_type, base_url, **settings)
    request = EmbeddingRequest.model_validate({"model": "alias", **body})

    async def run() -> EmbeddingResponse:
        async with build_http_client(max_connections=10) as http:
            return await build(http).embed(request, model=model)

    return asyncio.run(run())


def through(vendor: Vendor, fake: Any, body: dict[str, Any], **settings: Any) -> EmbeddingResponse:
    options = {**vendor.options, **settings.pop("options", {})}
    return embed(
        vendor.type, vendor.base(fake), body, model=vendor.model, options=options, **settings
    )


def sdk_floats(text: str) -> list[float]:
    """A base64 embedding decoded as OpenAI's SDK decodes it without numpy."""
    return array.array("f", base64.b64decode(text)).tolist()


def upstream_inputs(vendor: Vendor, sent: Any) -> list[str]:
    """The texts one recorded upstream call carried, in the vendor's own field."""
    if vendor.type == "cohere":
        return list(sent.json["texts"])
    if vendor.type == "gemini":
        return [item["content"]["parts"][0]["text"] for item in sent.json["requests"]]
    return list(sent.json["input"])


# What every adapter does.


def test_vectors_come_back_in_order_with_usage(vendor: Vendor) -> None:
    texts = ["alpha beta", "gamma"]
    with vendor.serve() as fake:
        answer = through(vendor, fake, {"input": texts})
        (sent,) = fake.requests
    assert upstream_inputs(vendor, sent) == texts
    assert [item.index for item in answer.data] == [0, 1]
    assert [item.embedding for item in answer.data] == [fake_vector(text) for text in texts]
    assert (
        answer.usage.prompt_tokens == answer.usage.total_tokens == (3 if vendor.bills_tokens else 0)
    )
    assert answer.model
    sdk.CreateEmbeddingResponse.model_validate(answer.model_dump(mode="json"))


def test_a_single_string_is_one_embedding(vendor: Vendor) -> None:
    with vendor.serve() as fake:
        answer = through(vendor, fake, {"input": "just one"})
    assert [(item.index, item.embedding) for item in answer.data] == [(0, fake_vector("just one"))]


def test_base64_decodes_to_the_float_vectors(vendor: Vendor) -> None:
    texts = ["alpha beta", "gamma", "delta"]
    with vendor.serve() as fake:
        answer = through(vendor, fake, {"input": texts, "encoding_format": "base64"})
        (sent,) = fake.requests
    if vendor.type in ("openai", "openai_compatible", "azure_openai"):
        assert sent.json["encoding_format"] == "base64"  # asked of the upstream, passed on
    for item, text in zip(answer.data, texts, strict=True):
        assert isinstance(item.embedding, str)
        assert sdk_floats(item.embedding) == pytest.approx(fake_vector(text), rel=1e-6)


def test_dimensions_are_asked_for(vendor: Vendor) -> None:
    with vendor.serve() as fake:
        answer = through(vendor, fake, {"input": ["a", "b"], "dimensions": 3})
        (sent,) = fake.requests
    if vendor.type == "cohere":
        assert sent.json["output_dimension"] == 3
    elif vendor.type == "gemini":
        assert [item["outputDimensionality"] for item in sent.json["requests"]] == [3, 3]
    else:
        assert sent.json["dimensions"] == 3
    assert [len(item.floats()) for item in answer.data] == [3, 3]


@pytest.mark.parametrize("vendor", SPLITTING, ids=str)
def test_inputs_past_the_limit_are_split_and_joined_in_order(vendor: Vendor) -> None:
    tail = vendor.limit // 2 + 10
    count = 2 * vendor.limit + tail  # 250 for Cohere: 96 + 96 + 58
    texts = [f"text {number}" for number in range(count)]
    with vendor.serve() as fake:
        answer = through(vendor, fake, {"input": texts})
        calls = fake.requests
    assert [len(upstream_inputs(vendor, sent)) for sent in calls] == [vendor.limit] * 2 + [tail]
    assert [text for sent in calls for text in upstream_inputs(vendor, sent)] == texts
    assert [item.index for item in answer.data] == list(range(count))
    assert [item.embedding for item in answer.data] == [fake_vector(text) for text in texts]
    assert answer.usage.total_tokens == (2 * count if vendor.bills_tokens else 0)


@pytest.mark.parametrize("vendor", [OPENAI, AZURE], ids=str)
def test_openai_takes_the_most_a_request_may_hold_in_one_call(vendor: Vendor) -> None:
    texts = [f"t{number}" for number in range(MAX_INPUTS)]
    with vendor.serve() as fake:
        answer = through(vendor, fake, {"input": texts})
        (sent,) = fake.requests
    assert sent.json["input"] == texts
    assert [item.index for item in answer.data] == list(range(MAX_INPUTS))


@pytest.mark.parametrize(
    ("status", "error_type"),
    [(400, InvalidRequest), (429, RateLimited), (500, ProviderError)],
)
def test_vendor_errors_map_with_the_vendor_message(
    vendor: Vendor, status: int, error_type: type[ProviderError]
) -> None:
    with vendor.serve() as fake:
        body = vendor.error_body(f"vendor says {status}", status)
        fake.script(vendor.reply(status=status, body=body, headers={"Retry-After": "7"}))
        with pytest.raises(error_type) as raised:
            through(vendor, fake, {"input": ["a"]})
    assert raised.value.message == f"vendor says {status}"
    assert raised.value.status_code == status
    if isinstance(raised.value, RateLimited):
        assert raised.value.retry_after == 7


@pytest.mark.parametrize("vendor", SPLITTING, ids=str)
def test_a_failed_slice_stops_the_rest(vendor: Vendor) -> None:
    texts = [f"t{number}" for number in range(vendor.limit + 1)]
    with vendor.serve() as fake:
        fake.script(vendor.reply(status=429, body=vendor.error_body("slow down", 429)))
        with pytest.raises(RateLimited):
            through(vendor, fake, {"input": texts})
        assert len(fake.requests) == 1


def test_wrong_key_is_authentication_failed(vendor: Vendor) -> None:
    with vendor.serve() as fake, pytest.raises(AuthenticationFailed):
        through(vendor, fake, {"input": ["a"]}, api_key=SecretStr("sk-wrong"))


def test_too_few_vectors_is_a_malformed_response(vendor: Vendor) -> None:
    bodies = {
        "cohere": {"id": "x", "embeddings": {"float": [[0.5]]}, "meta": {}},
        "gemini": {"embeddings": [{"values": [0.5]}]},
    }
    one = {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.5]}]}
    with vendor.serve() as fake:
        fake.script(vendor.reply(body=bodies.get(vendor.type, {**one, "model": "m"})))
        with pytest.raises(MalformedResponse, match="1 embeddings for 2 inputs"):
            through(vendor, fake, {"input": ["a", "b"]})


def test_a_body_that_is_no_embeddings_list_is_malformed(vendor: Vendor) -> None:
    with vendor.serve() as fake:
        fake.script(vendor.reply(body={"unexpected": True}))
        with pytest.raises(MalformedResponse):
            through(vendor, fake, {"input": ["a"]})


def test_an_unknown_field_is_refused_before_any_call(vendor: Vendor) -> None:
    with vendor.serve() as fake:
        with pytest.raises(InvalidRequest, match="Unrecognized request argument supplied: foo"):
            through(vendor, fake, {"input": ["a"], "foo": 1})
        assert fake.requests == []


def test_an_adapters_controls_ride_along_unsent(vendor: Vendor) -> None:
    with vendor.serve() as fake:
        through(vendor, fake, {"input": ["a"], "mock": {"latency_ms": 5}})
        (sent,) = fake.requests
    assert "mock" not in sent.json


# Token ids.


@pytest.mark.parametrize("vendor", [OPENAI, COMPATIBLE, AZURE], ids=str)
@pytest.mark.parametrize("tokens", [[1, 2, 3], [[1, 2, 3], [4]]], ids=["array", "arrays"])
def test_openai_wire_adapters_send_token_ids(vendor: Vendor, tokens: list[Any]) -> None:
    items = tokens if isinstance(tokens[0], list) else [tokens]
    with vendor.serve() as fake:
        answer = through(vendor, fake, {"input": tokens})
        (sent,) = fake.requests
    assert sent.json["input"] == items
    assert [item.embedding for item in answer.data] == [fake_vector(item) for item in items]


@pytest.mark.parametrize("vendor", [COHERE, GEMINI], ids=str)
def test_text_only_vendors_refuse_token_ids_before_any_call(vendor: Vendor) -> None:
    with vendor.serve() as fake:
        with pytest.raises(InvalidRequest, match="embeds text only") as raised:
            through(vendor, fake, {"input": [[1, 2, 3]]})
        assert fake.requests == []
    assert raised.value.status_code == 400
    assert not raised.value.retryable


@pytest.mark.parametrize(
    "vendor_type", ["perplexity", "grok", "blackbox", "openrouter", "anthropic"]
)
def test_adapters_without_embeddings_say_so(vendor_type: str) -> None:
    with pytest.raises(
        InvalidRequest, match=f"provider '{vendor_type}' .* does not serve embeddings"
    ):
        embed(vendor_type, "http://127.0.0.1:9", {"input": "a"}, model="m")
    assert not provider_type(vendor_type).max_embedding_inputs


# Per vendor.


def test_openai_request_on_the_wire() -> None:
    with OPENAI.serve() as fake:
        through(OPENAI, fake, {"input": ["a"], "user": "u-1"})
        (sent,) = fake.requests
    assert (sent.method, sent.path) == ("POST", "/v1/embeddings")
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.json == {
        "model": "text-embedding-3-small",
        "input": ["a"],
        "encoding_format": "float",
        "user": "u-1",
    }


def test_openai_compatible_limit_is_an_option() -> None:
    texts = [f"t{number}" for number in range(5)]
    with COMPATIBLE.serve() as fake:
        answer = through(COMPATIBLE, fake, {"input": texts}, options={"max_embedding_inputs": 2})
        sizes = [len(sent.json["input"]) for sent in fake.requests]
    assert sizes == [2, 2, 1]
    assert [item.embedding for item in answer.data] == [fake_vector(text) for text in texts]


def test_azure_posts_to_the_deployment_with_its_api_version_and_key() -> None:
    with AZURE.serve() as fake:
        answer = through(AZURE, fake, {"input": ["a"]})
        (sent,) = fake.requests
    assert sent.path == "/openai/deployments/embed-prod/embeddings"
    assert sent.query == {"api-version": "2024-10-21"}
    assert sent.headers["api-key"] == KEY
    assert answer.model == "gpt-4o-2024-11-20"  # Azure names the deployed model


def test_azure_v1_route() -> None:
    with AZURE.serve() as fake:
        through(AZURE, fake, {"input": ["a"]}, options={"api_style": "v1"})
        (sent,) = fake.requests
    assert (sent.path, sent.query, sent.json["model"]) == (
        "/openai/v1/embeddings",
        {},
        "embed-prod",
    )


def test_azure_unknown_deployment_is_model_not_found() -> None:
    with AZURE.serve() as fake, pytest.raises(ModelNotFound, match="deployment"):
        embed("azure_openai", fake.base_url, {"input": ["a"]}, model="nope")


def test_cohere_request_on_the_wire() -> None:
    with COHERE.serve() as fake:
        through(COHERE, fake, {"input": ["a", "b"], "user": "u-1"})
        (sent,) = fake.requests
    assert (sent.method, sent.path) == ("POST", "/v2/embed")
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.json == {
        "model": "embed-v4.0",
        "texts": ["a", "b"],
        "input_type": "search_document",
        "embedding_types": ["float"],
    }


def test_cohere_input_type_is_an_option() -> None:
    with COHERE.serve() as fake:
        through(COHERE, fake, {"input": ["a"]}, options={"embedding_input_type": "search_query"})
        (sent,) = fake.requests
    assert sent.json["input_type"] == "search_query"


def test_cohere_chat_bodies_do_not_carry_the_embedding_option() -> None:
    options = provider_type("cohere").options_model.model_validate(
        {"embedding_input_type": "clustering", "priority": 1}
    )
    assert options.defaults() == {"priority": 1}  # type: ignore[attr-defined]


def test_gemini_request_on_the_wire() -> None:
    with GEMINI.serve() as fake:
        through(
            GEMINI, fake, {"input": ["a", "b"]}, options={"embedding_task_type": "RETRIEVAL_QUERY"}
        )
        (sent,) = fake.requests
    assert (sent.method, sent.path) == (
        "POST",
        "/v1beta/models/gemini-embedding-001:batchEmbedContents",
    )
    assert sent.headers["x-goog-api-key"] == KEY
    assert sent.json == {
        "requests": [
            {
                "model": "models/gemini-embedding-001",
                "content": {"parts": [{"text": text}]},
                "taskType": "RETRIEVAL_QUERY",
            }
            for text in ("a", "b")
        ]
    }


# The mock.


def mock_embed(body: dict[str, Any], **options: Any) -> EmbeddingResponse:
    return embed("mock", "", body, model="mock-embed", options=options)


def test_mock_vectors_are_fixed_by_the_text() -> None:
    first = mock_embed({"input": ["a cat", "a dog"]})
    again = mock_embed({"input": ["a dog", "a cat"]})
    assert [item.embedding for item in first.data] == [
        item.embedding for item in reversed(again.data)
    ]
    assert first.data[0].embedding != first.data[1].embedding
    assert [len(item.floats()) for item in first.data] == [8, 8]
    for item in first.data:
        assert sum(value * value for value in item.floats()) == pytest.approx(1.0)
    assert (first.model, first.usage.prompt_tokens, first.usage.total_tokens) == (
        "mock-embed",
        4,
        4,
    )


def test_mock_honours_dimensions_base64_and_token_ids() -> None:
    floats = mock_embed({"input": [[5, 6, 7]], "dimensions": 32})
    encoded = mock_embed({"input": [5, 6, 7], "dimensions": 32, "encoding_format": "base64"})
    (vector,) = [item.floats() for item in floats.data]
    (text,) = [item.embedding for item in encoded.data]
    assert len(vector) == 32
    assert isinstance(text, str)
    assert sdk_floats(text) == pytest.approx(vector, rel=1e-6)
    assert floats.usage.prompt_tokens == 3


def test_mock_faults_apply_to_embeddings() -> None:
    with pytest.raises(RateLimited) as raised:
        mock_embed({"input": "a", "mock": {"fault": "rate_limit", "retry_after": 3}})
    assert raised.value.retry_after == 3
    with pytest.raises(MalformedResponse):
        mock_embed({"input": "a"}, fault="malformed")
    with pytest.raises(InvalidRequest, match="invalid mock controls"):
        mock_embed({"input": "a", "mock": {"speed": 2}})
