"""What every OpenAI-wire adapter does beyond the contract every adapter keeps.

test_contract.py runs the shared battery (answers, streams, each error
class, timeouts, cut and unfinished streams) over every adapter; this one
holds what the OpenAI-wire family shares on top: its public names, the
tool-call round trip in OpenAI's own message shapes, the statuses only
OpenAI-shaped vendors send, and that everything the fakes send and the
adapters give back parses with the official ``openai`` SDK's types.
"""

from __future__ import annotations

import importlib
import json
from typing import Any

import openai.types.chat as sdk
import pytest

from relayq.providers import provider_type
from relayq.providers.errors import (
    AuthenticationFailed,
    InvalidRequest,
    MalformedResponse,
    ProviderError,
    ProviderUnavailable,
)
from relayq.providers.openai import OpenAIProvider
from relayq.schemas.chat import ChatCompletionChunk, ChatCompletionRequest
from tests.fakes.openai_server import DEFAULT_CONTENT, FakeOpenAI, Reply
from tests.providers.openai_family import (
    KEY,
    REQUEST,
    TOOL_CALL,
    TOOL_REQUEST,
    VENDORS,
    WEATHER_TOOL,
    Vendor,
    completer,
    raw_exchange,
    run,
    sse_payloads,
    streamer,
    tool_calls_of,
)

MODULES = [
    "relayq.providers.openai",
    "relayq.providers.openai_compatible",
    "relayq.providers.azure_openai",
    "relayq.providers.perplexity",
    "relayq.providers.grok",
    "relayq.providers.blackbox",
    "relayq.providers.openrouter",
]


@pytest.fixture(params=VENDORS, ids=str)
def vendor(request: pytest.FixtureRequest) -> Vendor:
    chosen: Vendor = request.param
    return chosen


@pytest.mark.parametrize("module_name", MODULES)
def test_public_names_exist(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert module.__all__
    for name in module.__all__:
        assert hasattr(module, name), f"{module_name}.{name}"


@pytest.mark.parametrize("module_name", MODULES[1:])
def test_registry_finds_each_adapter(module_name: str) -> None:
    module = importlib.import_module(module_name)
    (adapter,) = [
        getattr(module, name)
        for name in module.__all__
        if isinstance(getattr(module, name), type) and name.endswith("Provider")
    ]
    assert provider_type(adapter.type_name) is adapter
    assert issubclass(adapter, OpenAIProvider)


def serve(vendor: Vendor) -> FakeOpenAI:
    return vendor.fake(api_key=KEY)


def test_tool_call_round_trip(vendor: Vendor) -> None:
    with serve(vendor) as fake:
        fake.script(Reply(tool_calls=[TOOL_CALL]))
        first = run(vendor, fake.base_url, completer(vendor, TOOL_REQUEST))
        message = first.choices[0].message
        assert first.choices[0].finish_reason == "tool_calls"
        assert message.tool_calls is not None
        assert [c.model_dump() for c in message.tool_calls] == [TOOL_CALL]

        follow_up = ChatCompletionRequest.model_validate(
            {
                "model": "public-name",
                "messages": [
                    *TOOL_REQUEST.model_dump(exclude_none=True)["messages"],
                    {
                        "role": "assistant",
                        "tool_calls": [c.model_dump() for c in message.tool_calls],
                    },
                    {"role": "tool", "tool_call_id": "call_abc123", "content": '{"temp": 18}'},
                ],
                "tools": [WEATHER_TOOL],
            }
        )
        second = run(vendor, fake.base_url, completer(vendor, follow_up))
        assert second.choices[0].message.content == DEFAULT_CONTENT
        sent = fake.requests[-1].json
    assert sent["messages"] == [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "tool_calls": [TOOL_CALL]},
        {"role": "tool", "tool_call_id": "call_abc123", "content": '{"temp": 18}'},
    ]
    assert sent["tools"] == [WEATHER_TOOL]
    sdk.ChatCompletion.model_validate(first.model_dump(mode="json"))


def test_streamed_tool_call_deltas_merge_into_the_call(vendor: Vendor) -> None:
    received: list[ChatCompletionChunk] = []
    with serve(vendor) as fake:
        fake.script(Reply(tool_calls=[TOOL_CALL]))
        run(vendor, fake.base_url, streamer(vendor, received, TOOL_REQUEST))
    assert tool_calls_of(received) == [TOOL_CALL]
    assert [c.choices[0].finish_reason for c in received if c.choices][-1] == "tool_calls"


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (422, InvalidRequest),
        (529, ProviderUnavailable),
    ],
)
@pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
def test_status_maps_to_error_with_the_vendor_message(
    vendor: Vendor, status: int, error_type: type[ProviderError], streaming: bool
) -> None:
    received: list[ChatCompletionChunk] = []
    action = streamer(vendor, received) if streaming else completer(vendor)
    with serve(vendor) as fake:
        fake.script(Reply(status=status, body=vendor.error_body(f"vendor says {status}", status)))
        with pytest.raises(error_type) as raised:
            run(vendor, fake.base_url, action)
    assert raised.value.message == f"vendor says {status}"
    assert raised.value.status_code == status
    assert received == []


@pytest.mark.parametrize("body", [{"object": "chat.completion"}], ids=str)
def test_malformed_body(vendor: Vendor, body: bytes | dict[str, Any]) -> None:
    with serve(vendor) as fake:
        fake.script(Reply(body=body))
        with pytest.raises(MalformedResponse):
            run(vendor, fake.base_url, completer(vendor))


@pytest.mark.parametrize("request_", [REQUEST, TOOL_REQUEST], ids=["text", "tools"])
def test_everything_the_fake_sends_parses_with_the_openai_sdk(
    vendor: Vendor, request_: ChatCompletionRequest
) -> None:
    """The fake's bodies and chunks are OpenAI's, once the adapter's documented
    normalisation (identity for most vendors) has run."""

    async def exchange(provider: OpenAIProvider) -> tuple[str, str, OpenAIProvider]:
        body = await raw_exchange(provider, vendor, request_, stream=False)
        events = await raw_exchange(provider, vendor, request_, stream=True)
        return body, events, provider

    with serve(vendor) as fake:
        fake.script(*[Reply(tool_calls=[TOOL_CALL])] * 2)
        body, events, provider = run(vendor, fake.base_url, exchange)
    completion = json.loads(body)
    chunks = sse_payloads(events)
    sdk.ChatCompletion.model_validate(provider.completion_payload(completion))
    for chunk in chunks:
        sdk.ChatCompletionChunk.model_validate(provider.chunk_payload(chunk))
    if vendor.raw_is_openai:
        sdk.ChatCompletion.model_validate(json.loads(body))
        for chunk in sse_payloads(events):
            sdk.ChatCompletionChunk.model_validate(chunk)


def test_list_models(vendor: Vendor) -> None:
    async def models(provider: OpenAIProvider) -> list[str] | None:
        return await provider.list_models()

    with serve(vendor) as fake:
        assert run(vendor, fake.base_url, models) == (
            list(vendor.models) if vendor.models is not None else None
        )
        if vendor.models is not None:
            with pytest.raises(AuthenticationFailed):
                run(vendor, fake.base_url, models, api_key="sk-wrong")
