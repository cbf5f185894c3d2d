"""The ``cohere`` adapter: Cohere's Chat API v2 (``api.cohere.com``).

Calls ``POST {base_url}/v2/chat`` with a bearer key, ``"stream": true`` for
streams (server-sent events typed by their ``type``). The request is built in
:mod:`relayq.providers.cohere_request`, the answer read in
:mod:`relayq.providers.cohere_response`; the I/O is
:class:`~relayq.providers.base.HTTPProvider`'s. ``list_models`` reads
``GET {base_url}/v1/models?endpoint=chat`` (every page).

Errors, at the boundary: Cohere answers ``{"id", "message"}`` (or just
``{"message"}``) with 400, 401, 403, 404, 422, 429, 498 (a deny-listed token),
499, 500, 501, 503 or 504; each maps through
:func:`~relayq.providers.errors.error_for_status` with Cohere's message,
except 499 ("request cancelled"), which relayq never causes while it waits for
an answer, so it counts as Cohere dropping the call
(:class:`~relayq.providers.errors.ProviderUnavailable`). Cohere documents no
rate-limit headers of its own; a 429's wait is read from ``Retry-After`` when
one is sent. Inside a stream, ``message-end`` reporting an ``error`` or an
``ERROR``/``TIMEOUT`` finish raises, and so does an untyped event carrying a
``message``. A body that is not JSON, or a stream that ends before
``message-end``, is :class:`~relayq.providers.errors.MalformedResponse`; a
stream cut by the network is
:class:`~relayq.providers.errors.ProviderConnectionError`. A 2xx body holding
an error (a ``message`` string) raises ProviderUnavailable with it, like
such an event in a stream. An upstream that ignores ``"stream": true`` (a
proxy) and answers with the whole chat response is read as :meth:`complete`
reads it, and its answer yielded as chunks.

Embeddings: ``POST {base_url}/v2/embed`` (Cohere's "Embed API (v2)",
https://docs.cohere.com/reference/embed) with ``model``, ``texts`` (at most
96 per call, so longer inputs are split), ``input_type`` (the provider's
``embedding_input_type`` option, ``search_document`` unless set: Cohere's
v3 and later models require one, and embed queries differently from
documents), ``embedding_types: ["float"]`` and ``output_dimension`` from
``dimensions`` (embed-v4 and later take 256, 512, 1024 or 1536). The
vectors are read from ``embeddings.float`` and usage from
``meta.billed_units.input_tokens``. Token-id inputs and ``user`` are not
carried: Cohere embeds text and has no end-user field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from relayq.providers.base import HTTPProvider, StreamParser
from relayq.providers.cohere_request import chat_body
from relayq.providers.cohere_response import CohereStream, parse_chat
from relayq.providers.errors import (
    MalformedResponse,
    ProviderError,
    ProviderUnavailable,
    error_for_status,
    vendor_message,
)
from relayq.providers.http import UpstreamRequest, decode_json, request_timeout
from relayq.providers.retry_after import retry_after_seconds
from relayq.providers.sse import ServerSentEvent
from relayq.schemas.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest
from relayq.schemas.embeddings import (
    Embedding,
    EmbeddingRequest,
    EmbeddingResponse,
    EmbeddingUsage,
)

__all__ = [
    "DEFAULT_BASE_URL",
    "CohereOptions",
    "CohereProvider",
    "EmbeddingInputType",
    "error_from_payload",
]

DEFAULT_BASE_URL = "https://api.cohere.com"
_DONE = "[DONE]"


EmbeddingInputType = Literal["search_document", "search_query", "classification", "clustering"]
"""Cohere's ``input_type`` values for text."""


class CohereOptions(BaseModel):
    """The ``options`` of a ``cohere`` provider: defaults for Cohere's own parameters."""

    model_config = ConfigDict(extra="forbid")

    safety_mode: Literal["CONTEXTUAL", "STRICT", "OFF"] | None = None
    """Cohere's ``safety_mode`` for every call that does not set one."""
    strict_tools: bool | None = None
    """Cohere's ``strict_tools`` (tool calls forced to follow the tool's schema)."""
    priority: int | None = None
    """Cohere's ``priority`` (0, the default, is the highest)."""
    embedding_input_type: EmbeddingInputType = "search_document"
    """Cohere's ``input_type`` for every embeddings call (not a chat field)."""

    def defaults(self) -> dict[str, Any]:
        """The chat options set, as Cohere body fields."""
        return self.model_dump(exclude_none=True, exclude={"embedding_input_type"})


def error_from_payload(
    payload: object, *, status_code: int, headers: Mapping[str, str], provider: str
) -> ProviderError:
    """The error for a non-2xx answer whose body decoded to ``payload``, with Cohere's message."""
    message = vendor_message(payload) or f"{provider}: upstream answered HTTP {status_code}"
    if status_code == 499:
        return ProviderUnavailable(message, status_code=status_code)
    retry_after = retry_after_seconds(headers) if status_code == 429 else None
    return error_for_status(status_code, message, retry_after=retry_after)


class CohereStreamParser(StreamParser):
    """One Cohere stream: events typed by their ``type``, ended by ``message-end``."""

    def __init__(self, *, provider: str, model: str, created: int) -> None:
        super().__init__(model=model, created=created)
        self._provider = provider
        self._state = CohereStream(model=model, created=created)

    def feed(self, event: ServerSentEvent) -> tuple[ChatCompletionChunk, ...]:
        if event.data.strip() == _DONE:
            return ()  # only message-end ends a stream: [DONE] before it is an early end
        payload = decode_json(event.data, provider=self._provider)
        if isinstance(payload, dict) and "type" not in payload and "message" in payload:
            raise ProviderUnavailable(vendor_message(payload) or f"{self._provider}: stream error")
        chunk = self._state.feed(payload)
        self.done = self._state.ended
        return () if chunk is None else (chunk,)

    def end(self) -> tuple[ChatCompletionChunk, ...]:
        raise MalformedResponse(f"{self._provider}: stream ended before message-end")


class CohereProvider(HTTPProvider):
    """Cohere ``/v2/chat`` with a bearer key."""

    type_name = "cohere"
    options_model = CohereOptions
    options: CohereOptions
    default_base_url = DEFAULT_BASE_URL
    max_embedding_inputs = 96

    def build_request(
        self, request: ChatCompletionRequest, *, model: str, stream: bool
    ) -> UpstreamRequest:
        """The HTTP request for one call, carrying this provider's timeouts."""
        body = chat_body(request, model=model, stream=stream, defaults=self.options.defaults())
        return UpstreamRequest.post_json(
            f"{self.base_url}/v2/chat",
            json_body=body,
            headers=self.request_headers(stream=stream),
            timeout=request_timeout(self.settings),
        )

    def error_from_payload(
        self, payload: object, *, status_code: int, headers: Mapping[str, str]
    ) -> ProviderError:
        return error_from_payload(
            payload, status_code=status_code, headers=headers, provider=self.name
        )

    def parse_completion(self, content: bytes | str, *, model: str, created: int) -> ChatCompletion:
        """A 2xx body as a ``chat.completion``; an error body in it raises ProviderUnavailable."""
        payload = decode_json(content, provider=self.name)
        if isinstance(payload, dict) and isinstance(payload.get("message"), str):
            raise ProviderUnavailable(vendor_message(payload) or f"{self.name}: error body")
        return parse_chat(payload, model=model, created=created)

    def build_embeddings_request(
        self, inputs: list[str] | list[list[int]], *, request: EmbeddingRequest, model: str
    ) -> UpstreamRequest:
        """Cohere's embed v2 body for ``inputs`` (texts: the base refused token ids)."""
        body: dict[str, Any] = {
            "model": model,
            "texts": inputs,
            "input_type": self.options.embedding_input_type,
            "embedding_types": ["float"],
        }
        if request.dimensions is not None:
            body["output_dimension"] = request.dimensions
        return UpstreamRequest.post_json(
            f"{self.base_url}/v2/embed",
            json_body=body,
            headers=self.request_headers(stream=False),
            timeout=request_timeout(self.settings),
        )

    def parse_embeddings(self, payload: Any, *, model: str) -> EmbeddingResponse:
        """``embeddings.float`` in order, usage from ``meta.billed_units.input_tokens``."""
        if isinstance(payload, dict) and isinstance(payload.get("message"), str):
            raise ProviderUnavailable(vendor_message(payload) or f"{self.name}: error body")
        embeddings = payload.get("embeddings") if isinstance(payload, dict) else None
        vectors = embeddings.get("float") if isinstance(embeddings, dict) else None
        if not isinstance(vectors, list):
            raise MalformedResponse(f"{self.name}: embed response has no embeddings.float")
        meta = payload.get("meta") or {}
        billed = meta.get("billed_units") if isinstance(meta, dict) else None
        tokens = billed.get("input_tokens") if isinstance(billed, dict) else None
        tokens = int(tokens) if isinstance(tokens, int | float) else 0
        try:
            return EmbeddingResponse(
                data=[Embedding(index=i, embedding=vector) for i, vector in enumerate(vectors)],
                model=model,
                usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens),
            )
        except ValidationError as exc:
            raise MalformedResponse(f"{self.name}: an embedding is not a vector: {exc}") from exc

    def stream_parser(self, *, model: str, created: int) -> StreamParser:
        return CohereStreamParser(provider=self.name, model=model, created=created)

    async def list_models(self) -> list[str]:
        """The names of the models that serve the chat endpoint, every page read."""
        names: list[str] = []
        params = {"endpoint": "chat", "page_size": "1000"}
        while True:
            payload = await self.get_json(f"{self.base_url}/v1/models", params=params)
            if not isinstance(payload, dict) or not isinstance(payload.get("models"), list):
                raise MalformedResponse(f"{self.name}: model list is not a ListModelsResponse")
            names.extend(str(model.get("name", "")) for model in payload["models"])
            if not (token := payload.get("next_page_token")):
                return names
            params["page_token"] = str(token)
