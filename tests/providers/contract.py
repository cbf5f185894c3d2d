"""What the adapter contract suite (test_contract.py) needs to know of each adapter and its fake.

Each :class:`Contract` pairs an HTTP adapter type with its wire-level fake
and says, in the fake's own vocabulary, how to script what the suite asks
for: a vendor error body, a stream that ends without its end marker. The
fakes share the rest (``status``, ``headers``, ``body``, ``delay``,
``cut_after``, ``stall_after``, ``garbage_after``).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import SecretStr

from relayq.config.settings import ProviderSettings
from relayq.providers import provider_type
from relayq.providers.base import HTTPProvider
from relayq.providers.http import build_http_client
from relayq.schemas.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest
from tests.fakes import anthropic_server, cohere_server, gemini_server, openai_server
from tests.fakes.grok_server import FakeGrok
from tests.fakes.server import ScriptedServer
from tests.providers.openai_family import VENDORS, Vendor

T = TypeVar("T")
KEY = "sk-test-contract"
CONTENT = "Hello! How can I help you today?"
REQUEST = ChatCompletionRequest.model_validate(
    {"model": "public-name", "messages": [{"role": "user", "content": "Say hello"}]}
)

_ANTHROPIC_KINDS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}
_ANSWER_MODELS = {"azure_openai": "gpt-4o-2024-11-20", "blackbox": "openai/gpt-4o-mini"}
"""The model the fakes of vendors that answer with another name than the one asked name."""
_GOOGLE_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    503: "UNAVAILABLE",
}


@dataclass(frozen=True)
class Contract:
    """An HTTP adapter type, its fake, and how to script the fake."""

    type: str
    fake: Callable[..., ScriptedServer[Any, Any]]
    """Builds the fake; takes ``api_key`` and ``content``."""
    reply: Callable[..., Any]
    """The fake's ``Reply``."""
    model: str
    error_body: Callable[[str, int], Any]
    """The vendor's error body for a message and an HTTP status."""
    unfinished: Callable[[], Any]
    """A reply whose stream sends the whole text, then ends without the vendor's end marker."""
    end_marker: str
    """A pattern the error for such a stream names."""
    two_words_after: int
    """Stream events before which the first two words have come, and no more."""
    answer_model: str | None = None
    """The model an answer names, when the fake names another than :attr:`model`."""
    usage_on_every_chunk: bool = False
    """Whether the vendor streams the running usage on each chunk, not just the last."""
    options: dict[str, Any] = field(default_factory=dict)

    def settings(self, base_url: str, **overrides: Any) -> ProviderSettings:
        config: dict[str, Any] = {
            "type": self.type,
            "base_url": base_url,
            "api_key": SecretStr(KEY),
            "options": self.options,
            **overrides,
        }
        return ProviderSettings.model_validate(config)

    def serve(self) -> ScriptedServer[Any, Any]:
        return self.fake(api_key=KEY, content=CONTENT)

    def run(self, fake: Any, action: Callable[[HTTPProvider], Awaitable[T]], **overrides: Any) -> T:
        """Run ``action`` on this adapter (built through the registry) against ``fake``."""
        return self.run_at(fake.base_url, action, **overrides)

    def run_at(
        self, base_url: str, action: Callable[[HTTPProvider], Awaitable[T]], **overrides: Any
    ) -> T:
        settings = self.settings(base_url, **overrides)

        async def go() -> T:
            async with build_http_client(max_connections=10) as http:
                adapter = provider_type(self.type)(name=self.type, settings=settings, http=http)
                assert isinstance(adapter, HTTPProvider)
                return await action(adapter)

        return asyncio.run(go())

    def completer(self) -> Callable[[HTTPProvider], Awaitable[ChatCompletion]]:
        async def complete(provider: HTTPProvider) -> ChatCompletion:
            return await provider.complete(REQUEST, model=self.model)

        return complete

    def streamer(
        self, received: list[ChatCompletionChunk]
    ) -> Callable[[HTTPProvider], Awaitable[None]]:
        """Streams into ``received``, keeping what came before a failure."""

        async def stream(provider: HTTPProvider) -> None:
            async for chunk in provider.stream(REQUEST, model=self.model):
                received.append(chunk)

        return stream

    def __str__(self) -> str:
        return self.type


def _openai_family(vendor: Vendor) -> Contract:
    def unfinished() -> Any:
        if vendor.type != "perplexity":
            return openai_server.Reply(omit_done=True)
        # Perplexity may leave out [DONE]: its stream is whole at a finish reason.
        chunk = (
            '{"id":"p","object":"chat.completion.chunk","created":1,"model":"sonar",'
            f'"choices":[{{"index":0,"delta":{{"role":"assistant","content":"{CONTENT}"}}}}]}}'
        )
        return openai_server.Reply(
            body=f"data: {chunk}\n\n", headers={"Content-Type": "text/event-stream"}
        )

    # Grok's fake thinks aloud first by default; its own file tests that.
    fake = functools.partial(FakeGrok, reasoning=None) if vendor.type == "grok" else vendor.fake
    return Contract(
        type=vendor.type,
        fake=fake,
        reply=openai_server.Reply,
        model=vendor.model,
        error_body=vendor.error_body,
        unfinished=unfinished,
        end_marker=r"\[DONE\]",
        # Azure's prompt-filter chunk comes first; Perplexity sends no role-only chunk.
        two_words_after={"azure_openai": 4, "perplexity": 2}.get(vendor.type, 3),
        answer_model=_ANSWER_MODELS.get(vendor.type),
        usage_on_every_chunk=vendor.type == "perplexity",
        options=vendor.options,
    )


ANTHROPIC = Contract(
    type="anthropic",
    fake=anthropic_server.FakeAnthropic,
    reply=anthropic_server.Reply,
    model="claude-sonnet-4-6",
    error_body=lambda message, status: anthropic_server.error_body(
        message, type=_ANTHROPIC_KINDS.get(status, "api_error")
    ),
    unfinished=lambda: anthropic_server.Reply(omit_stop=True),
    end_marker="message_stop",
    two_words_after=5,
)
COHERE = Contract(
    type="cohere",
    fake=cohere_server.FakeCohere,
    reply=cohere_server.Reply,
    model="command-a-03-2025",
    error_body=lambda message, status: cohere_server.error_body(message),
    unfinished=lambda: cohere_server.Reply(omit_end=True),
    end_marker="message-end",
    two_words_after=4,
)
GEMINI = Contract(
    type="gemini",
    fake=gemini_server.FakeGemini,
    reply=gemini_server.Reply,
    model="gemini-2.5-flash",
    error_body=lambda message, status: gemini_server.error_body(
        status, message, _GOOGLE_NAMES.get(status, "INTERNAL")
    ),
    unfinished=lambda: gemini_server.Reply(omit_finish=True),
    end_marker="finishReason",
    two_words_after=2,
)
CONTRACTS = [*map(_openai_family, VENDORS), ANTHROPIC, COHERE, GEMINI]
"""Every HTTP adapter type (the registry's, but for the in-process mock)."""


def text_of(chunks: list[ChatCompletionChunk]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
