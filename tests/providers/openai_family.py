"""What the tests of the OpenAI-wire adapters share: vendors, requests, runners.

Each :class:`Vendor` pairs an adapter type with its wire-level fake, so one
battery of tests (test_openai_family.py) runs across all of them and each
vendor's own file tests only what differs.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import SecretStr

from relayq.config.settings import ProviderSettings
from relayq.providers import provider_type
from relayq.providers.http import build_http_client
from relayq.providers.openai import OpenAIProvider
from relayq.providers.sse import SSEDecoder
from relayq.schemas.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest
from tests.fakes.azure_openai_server import FakeAzureOpenAI, azure_error
from tests.fakes.blackbox_server import FakeBlackbox
from tests.fakes.grok_server import FakeGrok, xai_error
from tests.fakes.openai_server import FakeOpenAI, Reply, error_body, tool_call
from tests.fakes.openrouter_server import FakeOpenRouter, openrouter_error
from tests.fakes.perplexity_server import FakePerplexity, perplexity_error

T = TypeVar("T")
KEY = "sk-test-family"
FIXTURES = Path(__file__).parent.parent / "fixtures"

REQUEST = ChatCompletionRequest.model_validate(
    {"model": "public-name", "messages": [{"role": "user", "content": "Say hello"}]}
)
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
            "required": ["city"],
        },
    },
}
TOOL_CALL = tool_call("call_abc123", "get_weather", '{"city": "Paris", "unit": "celsius"}')
TOOL_REQUEST = ChatCompletionRequest.model_validate(
    {
        "model": "public-name",
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": [WEATHER_TOOL],
        "tool_choice": "auto",
    }
)


def _openai_error(message: str, status: int) -> Any:
    return error_body(message)


@dataclass(frozen=True)
class Vendor:
    """An adapter type and the fake that speaks its vendor's protocol."""

    type: str
    fake: Callable[..., FakeOpenAI]
    model: str
    options: dict[str, Any] = field(default_factory=dict)
    error_body: Callable[[str, int], Any] = _openai_error
    """The vendor's error body for a message and status."""
    raw_is_openai: bool = True
    """Whether every body and chunk the vendor sends is OpenAI's shape as it is."""
    models: tuple[str, ...] | None = None
    """What :meth:`list_models` answers against the fake (None: the vendor lists none)."""

    def settings(self, base_url: str, **overrides: Any) -> ProviderSettings:
        config: dict[str, Any] = {
            "type": self.type,
            "base_url": base_url,
            "api_key": SecretStr(KEY),
            "options": self.options,
            **overrides,
        }
        return ProviderSettings.model_validate(config)

    def __str__(self) -> str:
        return self.type


OPENAI = Vendor("openai", FakeOpenAI, "gpt-4o-mini", models=("gpt-4o-mini",))
OPENAI_COMPATIBLE = Vendor(
    "openai_compatible", FakeOpenAI, "meta-llama/Llama-3.1-8B-Instruct", models=("gpt-4o-mini",)
)
AZURE = Vendor(
    "azure_openai",
    FakeAzureOpenAI,
    "gpt-4o-prod",
    error_body=lambda message, status: azure_error(str(status), message),
    raw_is_openai=False,  # its prompt-filter chunk says "object": ""
)
PERPLEXITY = Vendor(
    "perplexity",
    FakePerplexity,
    "sonar",
    error_body=lambda message, status: perplexity_error(message, code=status),
    raw_is_openai=False,  # its last chunk says "object": "chat.completion.done"
)
GROK = Vendor(
    "grok",
    FakeGrok,
    "grok-3-mini",
    error_body=lambda message, status: xai_error(message),
    models=("grok-4", "grok-3-mini"),
)
BLACKBOX = Vendor(
    "blackbox",
    FakeBlackbox,
    "blackboxai/openai/gpt-4o-mini",
    raw_is_openai=False,  # absent values spelt "None"
)
OPENROUTER = Vendor(
    "openrouter",
    FakeOpenRouter,
    "openai/gpt-4o-mini",
    error_body=lambda message, status: openrouter_error(status, message),
    models=("openai/gpt-4o-mini", "anthropic/claude-sonnet-4"),
)
VENDORS = [OPENAI, OPENAI_COMPATIBLE, AZURE, PERPLEXITY, GROK, BLACKBOX, OPENROUTER]


def run(
    vendor: Vendor,
    base_url: str,
    action: Callable[[OpenAIProvider], Awaitable[T]],
    **overrides: Any,
) -> T:
    """Run ``action`` on the vendor's adapter (built through the registry), client closed after."""
    settings = vendor.settings(base_url, **overrides)

    async def go() -> T:
        async with build_http_client(max_connections=10) as http:
            adapter = provider_type(vendor.type)(name=vendor.type, settings=settings, http=http)
            assert isinstance(adapter, OpenAIProvider)
            return await action(adapter)

    return asyncio.run(go())


def completer(
    vendor: Vendor, request: ChatCompletionRequest = REQUEST
) -> Callable[[OpenAIProvider], Awaitable[ChatCompletion]]:
    async def complete(provider: OpenAIProvider) -> ChatCompletion:
        return await provider.complete(request, model=vendor.model)

    return complete


def streamer(
    vendor: Vendor, received: list[ChatCompletionChunk], request: ChatCompletionRequest = REQUEST
) -> Callable[[OpenAIProvider], Awaitable[None]]:
    """Streams ``request`` into ``received``, keeping what came before a failure."""

    async def stream(provider: OpenAIProvider) -> None:
        async for chunk in provider.stream(request, model=vendor.model):
            received.append(chunk)

    return stream


def text_of(chunks: list[ChatCompletionChunk]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def tool_calls_of(chunks: list[ChatCompletionChunk]) -> list[dict[str, Any]]:
    """Streamed tool-call deltas merged by index, as OpenAI's clients merge them."""
    calls: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or []:
                call = calls.setdefault(
                    delta["index"], {"type": "function", "function": {"arguments": ""}}
                )
                if "id" in delta:
                    call["id"] = delta["id"]
                function = delta.get("function", {})
                if "name" in function:
                    call["function"]["name"] = function["name"]
                call["function"]["arguments"] += function.get("arguments", "")
    return [calls[index] for index in sorted(calls)]


def fixture_text(vendor_dir: str, name: str) -> str:
    return (FIXTURES / vendor_dir / name).read_text()


def fixture_json(vendor_dir: str, name: str) -> Any:
    return json.loads(fixture_text(vendor_dir, name))


def sse_reply(text: str, **fields: Any) -> Reply:
    """A reply sending ``text`` as the raw body of an event stream."""
    return Reply(body=text, headers={"Content-Type": "text/event-stream"}, **fields)


def sse_payloads(text: str) -> list[Any]:
    """The JSON data of each event in an SSE body, ``[DONE]`` left out."""
    decoder = SSEDecoder()
    events = [decoder.feed(line) for line in text.splitlines()]
    events.append(decoder.flush())
    return [json.loads(e.data) for e in events if e is not None and e.data != "[DONE]"]


async def raw_exchange(
    provider: OpenAIProvider, vendor: Vendor, request: ChatCompletionRequest, *, stream: bool
) -> str:
    """The vendor's answer to ``request`` as it came over the wire, undecoded."""
    http_request = provider.build_request(request, model=vendor.model, stream=stream)
    response = await provider.http.send(http_request)
    try:
        content = (await response.aread()).decode()
    finally:
        response.release()
    assert response.status_code == 200, content
    return content
