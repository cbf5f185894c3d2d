"""The built-in ``mock`` provider: deterministic answers in-process, no network.

It stands in for a vendor in development, demos, load tests and the tests of
everything above the adapters. A request steers it through an extra body
field ``mock`` (see :class:`MockControls`), for example::

    {"model": "mock", "messages": [...], "mock": {"latency_ms": 800, "tokens": 64}}
    {"model": "mock", "messages": [...], "mock": {"fault": "rate_limit", "retry_after": 2}}

The text is ``tokens`` words (one word counts as one token) picked from a fixed
list by a hash of the last user message, so the same messages and controls
always give the same text, and a shorter answer is a prefix of a longer one.

Faults. ``timeout`` waits the provider's ``read_timeout`` and raises
:class:`ProviderTimeout`; the others raise after ``latency_ms``. A stream
raises them before its first chunk, as a vendor's HTTP status comes before its
body, except ``malformed``: a bad chunk can only arrive inside a stream, so the
stream yields its role chunk and the first half of its words, then raises
:class:`MalformedResponse` (a mid-stream failure for the layers above to handle).

Embeddings. Each input's vector is :func:`mock_vector`: ``dimensions`` values
(:data:`DEFAULT_DIMENSIONS` unless the request says) drawn from a hash of the
text (or of the token ids), scaled to unit length like OpenAI's, so the same
input always gives the same vector. Usage counts a text's words, or a token
array's ids. ``latency_ms`` and the faults apply as for chat (``malformed``
raises :class:`MalformedResponse` after the latency).

Images. Each image is a small PNG (:func:`relayq.providers.mock_image.mock_png`,
16x16 whatever ``size`` asks) drawn from a hash of the prompt and its index,
answered base64 as OpenAI's GPT image models answer (whatever
``response_format`` says), with their usage shape: the prompt's words as input
tokens and :data:`MOCK_IMAGE_TOKENS` output tokens an image. ``latency_ms`` and
the faults apply as for embeddings.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from relayq.providers.base import Provider
from relayq.providers.errors import (
    InvalidRequest,
    MalformedResponse,
    ProviderError,
    ProviderTimeout,
    RateLimited,
    error_for_status,
)
from relayq.providers.mock_image import mock_png
from relayq.schemas.chat import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChunkChoice,
    ChunkDelta,
    ResponseMessage,
    Role,
    Usage,
)
from relayq.schemas.embeddings import (
    Embedding,
    EmbeddingRequest,
    EmbeddingResponse,
    EmbeddingUsage,
)
from relayq.schemas.images import ImageData, ImageGenerationRequest, ImagesResponse, ImagesUsage

__all__ = [
    "DEFAULT_DIMENSIONS",
    "MOCK_IMAGE_TOKENS",
    "MockAnswer",
    "MockControls",
    "MockProvider",
    "mock_vector",
    "plan_answer",
]

DEFAULT_DIMENSIONS = 8
"""The length of a mock embedding when the request names no ``dimensions``."""

MOCK_IMAGE_TOKENS = 64
"""The output tokens a mock image reports."""

_WORDS = (  # noqa: SIM905 (64 words read better as text than as a 64-line literal)
    "alpha amber anchor arrow autumn beacon birch bright canyon cedar cloud coral "
    "crimson delta drift ember falcon fern forest glacier granite harbor hazel "
    "horizon island jade juniper lagoon lantern maple meadow meteor mist moss "
    "nebula north ocean orbit pebble pine prairie quartz quiet rain raven reef "
    "river saffron shadow signal silver sparrow spruce stone summit thunder tide "
    "timber valley velvet willow winter"
).split()

Fault = Literal["error", "rate_limit", "timeout", "malformed", "invalid_request"]


class MockControls(BaseModel):
    """What one request asks of the mock provider (the body's ``mock`` field)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    latency_ms: float = Field(default=0, ge=0, description="Wait before the answer / first chunk.")
    tokens: int = Field(default=16, ge=0, le=100_000, description="Words in a generated answer.")
    stream_interval_ms: float = Field(default=0, ge=0, description="Pause between word chunks.")
    text: str | None = Field(default=None, description="Answer this text instead.")
    fault: Fault | None = Field(default=None, description="Fail this way instead of answering.")
    status: int = Field(default=500, ge=400, le=599, description="HTTP status for fault=error.")
    retry_after: float | None = Field(default=None, ge=0, description="Seconds, for rate_limit.")


@dataclass(frozen=True, slots=True)
class MockAnswer:
    """A planned answer: its pieces (one per token, joined = the text), why it ends, usage."""

    pieces: tuple[str, ...]
    finish_reason: Literal["stop", "length"]
    usage: Usage

    @property
    def text(self) -> str:
        return "".join(self.pieces)


def _generated_pieces(seed_text: str, count: int) -> list[str]:
    """``count`` words chosen by a hash of ``seed_text``: a stable prefix for any count."""
    picks = hashlib.shake_256(seed_text.encode()).digest(count)
    words = [_WORDS[byte % len(_WORDS)] for byte in picks]
    return [word if i == 0 else f" {word}" for i, word in enumerate(words)]


def _text_pieces(text: str) -> list[str]:
    """``text`` cut into words, each with the whitespace before it; joined, ``text`` again."""
    pieces = re.findall(r"\s*\S+", text)
    trailing = text[len("".join(pieces)) :]
    if not pieces:
        return [text] if text else []
    pieces[-1] += trailing
    return pieces


def plan_answer(request: ChatCompletionRequest, controls: MockControls) -> MockAnswer:
    """The answer the mock gives ``request``, without waiting or failing (pure)."""
    user_texts = [m.text() for m in request.messages if m.role is Role.USER]
    seed = user_texts[-1] if user_texts else request.messages[-1].text()
    if controls.text is not None:
        pieces = _text_pieces(controls.text)
    else:
        pieces = _generated_pieces(seed, controls.tokens)
    limits = [n for n in (request.max_tokens, request.max_completion_tokens) if n is not None]
    finish: Literal["stop", "length"] = "stop"
    if limits and min(limits) < len(pieces):
        pieces = pieces[: min(limits)]
        finish = "length"
    prompt_tokens = sum(len(m.text().split()) for m in request.messages)
    usage = Usage(
        prompt_tokens=prompt_tokens,
        completion_tokens=len(pieces),
        total_tokens=prompt_tokens + len(pieces),
    )
    return MockAnswer(pieces=tuple(pieces), finish_reason=finish, usage=usage)


def mock_vector(item: str | list[int], dimensions: int) -> list[float]:
    """``dimensions`` values from a hash of ``item``, scaled to unit length (pure)."""
    seed = item if isinstance(item, str) else " ".join(map(str, item))
    raw = hashlib.shake_256(seed.encode()).digest(2 * dimensions)
    values = [int.from_bytes(raw[i : i + 2], "big") / 32767.5 - 1 for i in range(0, len(raw), 2)]
    norm = math.sqrt(sum(value * value for value in values)) or 1.0
    return [value / norm for value in values]


def _fault_error(controls: MockControls) -> ProviderError | None:
    """The error an answer-replacing fault raises (not ``timeout``, not ``malformed``)."""
    if controls.fault == "error":
        return error_for_status(
            controls.status,
            f"mock: injected fault 'error' (HTTP {controls.status})",
            retry_after=controls.retry_after,
        )
    if controls.fault == "rate_limit":
        return RateLimited("mock: injected fault 'rate_limit'", retry_after=controls.retry_after)
    if controls.fault == "invalid_request":
        return InvalidRequest("mock: injected fault 'invalid_request'", status_code=400)
    return None


class MockProvider(Provider):
    """Answers from :func:`plan_answer` after the requested delays, or fails as asked."""

    type_name = "mock"
    controls_model = MockControls
    options_model = MockControls
    """A provider's ``options`` are default controls for every call (e.g. an always
    failing provider for resilience tests); a request's own ``mock`` field wins."""

    max_embedding_inputs: ClassVar[int] = 2048
    embeds_token_ids: ClassVar[bool] = True
    serves_images: ClassVar[bool] = True

    def controls(self, request: BaseModel) -> MockControls:
        """The request's controls over the provider's options; InvalidRequest if invalid."""
        defaults = self.options.model_dump(exclude_unset=True)
        controls = self.request_controls(request, defaults=defaults)
        assert isinstance(controls, MockControls)
        return controls

    async def _wait_and_fail(self, controls: MockControls) -> None:
        """Wait as the controls say, then raise the fault that replaces the answer."""
        if controls.fault == "timeout":
            await asyncio.sleep(self.settings.read_timeout)
            raise ProviderTimeout(
                f"mock: no answer within the read timeout ({self.settings.read_timeout}s)"
            )
        await asyncio.sleep(controls.latency_ms / 1000)
        if (error := _fault_error(controls)) is not None:
            raise error

    async def embed_inputs(
        self, inputs: list[str] | list[list[int]], *, request: EmbeddingRequest, model: str
    ) -> EmbeddingResponse:
        """A :func:`mock_vector` per input after ``latency_ms``, or the requested fault."""
        controls = self.controls(request)
        await self._wait_and_fail(controls)
        if controls.fault == "malformed":
            raise MalformedResponse("mock: injected fault 'malformed'")
        dimensions = request.dimensions or DEFAULT_DIMENSIONS
        items: list[str | list[int]] = list(inputs)
        data = [
            Embedding(index=index, embedding=mock_vector(item, dimensions))
            for index, item in enumerate(items)
        ]
        tokens = sum(len(item.split()) if isinstance(item, str) else len(item) for item in items)
        usage = EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens)
        return EmbeddingResponse(data=data, model=model, usage=usage)

    async def generate_images(
        self, request: ImageGenerationRequest, *, model: str
    ) -> ImagesResponse:
        """``n`` :func:`mock_png` images, base64, after ``latency_ms``; or the requested fault."""
        controls = self.controls(request)
        await self._wait_and_fail(controls)
        if controls.fault == "malformed":
            raise MalformedResponse("mock: injected fault 'malformed'")
        count = request.images()
        data = [
            ImageData(b64_json=base64.b64encode(mock_png(request.prompt, index)).decode("ascii"))
            for index in range(count)
        ]
        words = len(request.prompt.split())
        output = MOCK_IMAGE_TOKENS * count
        usage = ImagesUsage(input_tokens=words, output_tokens=output, total_tokens=words + output)
        return ImagesResponse(created=int(time.time()), data=data, usage=usage)

    async def complete(self, request: ChatCompletionRequest, *, model: str) -> ChatCompletion:
        """The whole answer after ``latency_ms``, or the requested fault."""
        controls = self.controls(request)
        await self._wait_and_fail(controls)
        if controls.fault == "malformed":
            raise MalformedResponse("mock: injected fault 'malformed'")
        answer = plan_answer(request, controls)
        return ChatCompletion(
            id=f"chatcmpl-mock-{uuid.uuid4().hex}",
            created=int(time.time()),
            model=model,
            choices=[
                Choice(
                    message=ResponseMessage(content=answer.text),
                    finish_reason=answer.finish_reason,
                )
            ],
            usage=answer.usage,
        )

    async def stream_from_upstream(
        self, request: ChatCompletionRequest, *, model: str
    ) -> AsyncIterator[ChatCompletionChunk]:
        """Role chunk, one chunk per word, the finish chunk, then the usage chunk."""
        controls = self.controls(request)
        await self._wait_and_fail(controls)
        answer = plan_answer(request, controls)
        ident, created = f"chatcmpl-mock-{uuid.uuid4().hex}", int(time.time())

        def chunk(delta: ChunkDelta, finish: str | None = None) -> ChatCompletionChunk:
            choice = ChunkChoice(delta=delta, finish_reason=finish)
            return ChatCompletionChunk(id=ident, created=created, model=model, choices=[choice])

        yield chunk(ChunkDelta(role="assistant", content=""))
        cut = len(answer.pieces) // 2 if controls.fault == "malformed" else None
        for index, piece in enumerate(answer.pieces):
            if index == cut:
                raise MalformedResponse("mock: injected fault 'malformed' mid-stream")
            if index:
                await asyncio.sleep(controls.stream_interval_ms / 1000)
            yield chunk(ChunkDelta(content=piece))
        if cut is not None:
            raise MalformedResponse("mock: injected fault 'malformed' mid-stream")
        yield chunk(ChunkDelta(), answer.finish_reason)
        yield ChatCompletionChunk(
            id=ident, created=created, model=model, choices=[], usage=answer.usage
        )
