"""The ``openai`` adapter: OpenAI's chat completions API, and the base of its kin.

Vendors that speak OpenAI's wire format with small differences (a base URL, an
auth header, a body tweak, a quirk in their error bodies) subclass
:class:`OpenAIProvider` and override the pure hook concerned:
:meth:`~OpenAIProvider.chat_url`, :meth:`~OpenAIProvider.auth_headers`,
:meth:`~OpenAIProvider.vendor_headers`, :meth:`~OpenAIProvider.request_body`,
:meth:`~OpenAIProvider.completion_payload`, :meth:`~OpenAIProvider.chunk_payload`,
:meth:`~OpenAIProvider.adjust_error`, :meth:`~OpenAIProvider.stream_complete`
and :meth:`~OpenAIProvider.models_url`. Building the request, parsing the
answer, parsing each stream event and mapping errors are pure; the I/O is
:class:`~relayq.providers.base.HTTPProvider`'s.

Errors, at the boundary: an HTTP status maps through
:func:`relayq.providers.errors.error_for_status` with the vendor's own
``error.message`` as the message (a 429 also carries the wait from its
headers); an ``{"error": {...}}`` object inside a stream, or in a 2xx body,
maps by its ``code`` or ``type``; a body that is not JSON or not the expected
shape is :class:`MalformedResponse`; a stream that ends without
``data: [DONE]`` is :class:`MalformedResponse` too, one cut by the network is
:class:`ProviderConnectionError`; transport failures map in
:func:`relayq.providers.http.transport_errors`.

A server that ignores ``"stream": true`` (some OpenAI-compatible servers and
proxies do) answers with the whole ``chat.completion``; the stream reads it with
:meth:`~OpenAIProvider.parse_completion`, error objects included, and yields
it as chunks.

Embeddings: ``POST {base_url}/embeddings`` with OpenAI's own body (``input``
as a slice of the request's items, strings or token-id arrays, ``model``,
``dimensions``, ``encoding_format``, ``user``) and its answer read as it
comes: ``encoding_format`` is asked of the upstream as the caller asked it,
since each format is cheapest to read as it is (a base64 vector passes on
undecoded; floats asked as base64 would be decoded and listed again).
Source: OpenAI's API reference, "Create embeddings",
https://platform.openai.com/docs/api-reference/embeddings/create (at most
2,048 inputs per call). Adapters of vendors that serve no embeddings
set :attr:`~relayq.providers.base.Provider.max_embedding_inputs` to 0.

Images: ``POST {base_url}/images/generations`` with OpenAI's body as the caller
sent it (the deployment's model, relayq's controls left out) and its
``ImagesResponse`` read as it comes. Source: OpenAI's API reference, "Create
image", https://platform.openai.com/docs/api-reference/images/create. Its
``response_format`` is the DALL·E models' alone: a GPT image model
(``gpt-image-*``, ``chatgpt-image-*``) answers it with 400 ``unknown_parameter`` and always sends
base64, so it is left out of a call to one (relayq then answers a caller who
asked for ``url`` with a URL of its own: docs/api.md). Adapters of vendors
that draw no images set :attr:`~relayq.providers.base.Provider.serves_images`
to False.

Responses: ``POST {base_url}/responses`` with the caller's Responses request as
it came (:mod:`relayq.providers.responses_wire`): the deployment's model,
``store: false``, relayq's controls left out; the ``response`` and the stream's
events as the upstream sends them. Adapters of vendors that do not serve it set
:attr:`~relayq.providers.base.Provider.speaks_responses` to False (a responses
job is then served over chat completions).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar

from pydantic import ValidationError

from relayq.providers import control_fields
from relayq.providers.base import HTTPProvider, StreamParser
from relayq.providers.errors import (
    MalformedResponse,
    ProviderError,
    error_for_status,
    vendor_message,
)
from relayq.providers.http import UpstreamRequest, decode_json, request_timeout
from relayq.providers.responses_wire import (
    FINAL_EVENTS,
    ResponsesEvent,
    final_response,
    parse_response_event,
)
from relayq.providers.sse import ServerSentEvent
from relayq.providers.text_stream import text_chunk, text_chunks
from relayq.schemas.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest
from relayq.schemas.completions import TextCompletion, TextCompletionRequest
from relayq.schemas.embeddings import EmbeddingRequest, EmbeddingResponse
from relayq.schemas.images import ImageGenerationRequest, ImagesResponse, is_gpt_image_model
from relayq.schemas.responses import ResponsesRequest

__all__ = ["DEFAULT_BASE_URL", "OpenAIProvider", "error_for_event"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
_DONE = "[DONE]"

_STATUS_BY_ERROR_KIND = {
    "invalid_request_error": 400,
    "invalid_api_key": 401,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "model_not_found": 404,
    "rate_limit_exceeded": 429,
    "rate_limit_error": 429,
    "insufficient_quota": 429,
    "server_error": 500,
    "api_error": 500,
    "overloaded_error": 529,
}
"""HTTP status an error object stands for, by its ``code`` or ``type``: OpenAI's
names and the ones OpenAI-compatible servers borrow from Anthropic's API."""


def error_for_event(error: object, *, provider: str) -> ProviderError:
    """The error an ``{"error": {...}}`` object stands for when no HTTP status came with it.

    An integer ``code`` is read as a status (vLLM and others send one);
    otherwise OpenAI's ``code`` or ``type`` names decide. An error the names
    do not classify counts as the provider failing (retryable). Only an
    integer ``code`` ends up as the error's ``status_code``.
    """
    fields: dict[str, Any] = error if isinstance(error, dict) else {}
    message = vendor_message({"error": error}) or f"{provider}: error event in the stream"
    code = fields.get("code")
    if isinstance(code, int) and 400 <= code <= 599:
        return error_for_status(code, message)
    kinds = (str(code), str(fields.get("type")))
    status = next((_STATUS_BY_ERROR_KIND[k] for k in kinds if k in _STATUS_BY_ERROR_KIND), 500)
    mapped = error_for_status(status, message)
    mapped.status_code = None  # the status only classified it; none came over the wire
    return mapped


class OpenAIStream(StreamParser):
    """One OpenAI-shaped stream: a chunk per event, ended by ``data: [DONE]``."""

    def __init__(self, adapter: OpenAIProvider, *, model: str, created: int) -> None:
        super().__init__(model=model, created=created)
        self._adapter = adapter
        self._last: ChatCompletionChunk | None = None

    def feed(self, event: ServerSentEvent) -> tuple[ChatCompletionChunk, ...]:
        chunk = self._adapter.parse_event(event)
        if chunk is None:
            self.done = True
            return ()
        self._last = chunk
        return (chunk,)

    def end(self) -> tuple[ChatCompletionChunk, ...]:
        if not self._adapter.stream_complete(self._last):
            raise MalformedResponse(f"{self._adapter.name}: stream ended before data: {_DONE}")
        return ()


class OpenAIProvider(HTTPProvider):
    """Chat completions on ``{base_url}/chat/completions`` with a bearer key."""

    type_name = "openai"
    default_base_url: ClassVar[str] = DEFAULT_BASE_URL
    lists_models: ClassVar[bool] = True
    """Whether :meth:`list_models` asks the upstream (``GET {base_url}/models``)."""
    max_embedding_inputs: ClassVar[int] = 2048
    embeds_token_ids: ClassVar[bool] = True
    serves_text_completions: ClassVar[bool] = True
    serves_images: ClassVar[bool] = True
    speaks_responses: ClassVar[bool] = True

    def chat_url(self, *, model: str) -> str:
        """Where a chat completion of ``model`` is posted."""
        return f"{self.base_url}/chat/completions"

    def embeddings_url(self, *, model: str) -> str:
        """Where an embeddings call for ``model`` is posted."""
        return f"{self.base_url}/embeddings"

    def completions_url(self, *, model: str) -> str:
        """Where a legacy completion of ``model`` is posted."""
        return f"{self.base_url}/completions"

    async def complete_text(self, request: TextCompletionRequest, *, model: str) -> TextCompletion:
        """A legacy completion, passed through: the body as it came (the deployment's model,
        relayq's controls left out), the ``text_completion`` as the upstream sent it."""
        if not self.serves_text_completions:
            return await super().complete_text(request, model=model)
        http_request = UpstreamRequest.post_json(
            self.completions_url(model=model),
            json_body=request.upstream_body(model=model, controls=control_fields(request)),
            headers=self.request_headers(stream=False),
            timeout=request_timeout(self.settings),
        )
        payload = await self.post_for_json(http_request)
        if isinstance(payload, dict) and "error" in payload and "choices" not in payload:
            raise self.adjust_error(error_for_event(payload["error"], provider=self.name), payload)
        try:
            return TextCompletion.model_validate(payload)
        except ValidationError as exc:
            raise MalformedResponse(f"{self.name}: not a text_completion: {exc}") from exc

    async def stream_text(
        self, request: TextCompletionRequest, *, model: str
    ) -> AsyncIterator[ChatCompletionChunk]:
        """A legacy completion streamed: each upstream chunk as it comes, its JSON kept
        (:func:`~relayq.providers.text_stream.text_chunk`), usage asked for; an upstream
        that answers whole instead, as that answer's chunks."""
        if not self.serves_text_completions:
            async for chunk in super().stream_text(request, model=model):
                yield chunk
            return
        body = request.upstream_body(model=model, controls=control_fields(request))
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
        http_request = UpstreamRequest.post_json(
            self.completions_url(model=model),
            json_body=body,
            headers=self.request_headers(stream=True),
            timeout=request_timeout(self.settings),
        )
        decoder = self.new_decoder()
        done = False
        async with self.send(http_request) as response:
            async for lines in response.aiter_line_batches():
                for line in lines:
                    if done or (event := decoder.feed(line)) is None:
                        continue
                    parsed = self._text_event(event)
                    done = parsed is None
                    if parsed is not None:
                        yield parsed
            if not done and (event := decoder.flush()) is not None:
                parsed = self._text_event(event)
                done = parsed is None
                if parsed is not None:
                    yield parsed
        if not done and (content := decoder.json_body) is not None:
            whole = decode_json(content, provider=self.name)
            for chunk in text_chunks(whole):
                yield chunk

    def _text_event(self, event: ServerSentEvent) -> ChatCompletionChunk | None:
        """One legacy completion's stream event as a chunk; None for ``[DONE]``."""
        if event.data.strip() == _DONE:
            return None
        payload = decode_json(event.data, provider=self.name)
        if not isinstance(payload, dict) or "choices" not in payload:
            error = payload.get("error", payload) if isinstance(payload, dict) else payload
            raise self.adjust_error(error_for_event(error, provider=self.name), payload)
        return text_chunk(payload, wire=event.data)

    def responses_url(self, *, model: str) -> str:
        """Where a Responses request for ``model`` is posted."""
        return f"{self.base_url}/responses"

    def build_responses_request(
        self, request: ResponsesRequest, *, model: str, stream: bool
    ) -> UpstreamRequest:
        """The caller's Responses request as it came: the deployment's ``model``,
        ``store: false``, relayq's controls left out."""
        body = request.upstream_body(model=model, controls=control_fields(request), stream=stream)
        return UpstreamRequest.post_json(
            self.responses_url(model=model),
            json_body=body,
            headers=self.request_headers(stream=stream),
            timeout=request_timeout(self.settings),
        )

    async def respond(self, request: ResponsesRequest, *, model: str) -> dict[str, Any]:
        """The ``response`` as the upstream gave it; a failed one raises its error."""
        if not self.native_responses:
            return await super().respond(request, model=model)
        payload = await self.post_for_json(
            self.build_responses_request(request, model=model, stream=False)
        )
        if (
            isinstance(payload, dict)
            and payload.get("error")
            and payload.get("status") != ("incomplete")
        ):
            raise self.adjust_error(error_for_event(payload["error"], provider=self.name), payload)
        return final_response(payload, provider=self.name)

    async def stream_response(
        self, request: ResponsesRequest, *, model: str
    ) -> AsyncIterator[ResponsesEvent]:
        """The upstream's events as they come, up to the one that ends the response; an
        ``error`` or ``response.failed`` event raises its error."""
        if not self.native_responses:
            async for event in super().stream_response(request, model=model):
                yield event
            return
        http_request = self.build_responses_request(request, model=model, stream=True)
        decoder = self.new_decoder()
        async with self.send(http_request) as response:
            async for lines in response.aiter_line_batches():
                for line in lines:
                    if (sse := decoder.feed(line)) is None:
                        continue
                    event = self._responses_event(sse)
                    yield event
                    if event.type in FINAL_EVENTS:
                        return
        raise MalformedResponse(f"{self.name}: the Responses stream ended before its response")

    def _responses_event(self, sse: ServerSentEvent) -> ResponsesEvent:
        event = parse_response_event(sse.data, provider=self.name)
        if event.type == "error" or event.type == "response.failed":
            response = event.data.get("response")
            error = response.get("error") if isinstance(response, dict) else event.data
            raise self.adjust_error(error_for_event(error, provider=self.name), event.data)
        return event

    def images_url(self, *, model: str) -> str:
        """Where an image generation by ``model`` is posted."""
        return f"{self.base_url}/images/generations"

    def images_body(self, request: ImageGenerationRequest, *, model: str) -> dict[str, Any]:
        """OpenAI's body for ``request`` drawn by ``model``: as it came, but for a GPT image
        model's ``response_format``, which it refuses (it always answers base64)."""
        body = request.upstream_body(model=model, controls=control_fields(request))
        if is_gpt_image_model(model):
            body.pop("response_format", None)
        return body

    async def generate_images(
        self, request: ImageGenerationRequest, *, model: str
    ) -> ImagesResponse:
        """OpenAI's image generation, passed through (:meth:`images_body`); the
        ``ImagesResponse`` as the upstream sent it."""
        if not self.serves_images:
            return await super().generate_images(request, model=model)
        http_request = UpstreamRequest.post_json(
            self.images_url(model=model),
            json_body=self.images_body(request, model=model),
            headers=self.request_headers(stream=False),
            timeout=request_timeout(self.settings),
        )
        payload = await self.post_for_json(http_request)
        return self.parse_images(payload)

    def parse_images(self, payload: Any) -> ImagesResponse:
        """A decoded 2xx images body; an error object in it raises its error, an answer
        without an image is :class:`MalformedResponse`."""
        if isinstance(payload, dict) and "error" in payload and "data" not in payload:
            raise self.adjust_error(error_for_event(payload["error"], provider=self.name), payload)
        try:
            answer = ImagesResponse.model_validate(payload)
        except ValidationError as exc:
            raise MalformedResponse(f"{self.name}: not an images response: {exc}") from exc
        if not answer.data or any(not (i.url or i.b64_json) for i in answer.data):
            raise MalformedResponse(f"{self.name}: an images response without an image")
        return answer

    def models_url(self) -> str:
        """Where the upstream lists its models."""
        return f"{self.base_url}/models"

    def request_body(
        self, request: ChatCompletionRequest, *, model: str, stream: bool
    ) -> dict[str, Any]:
        """The JSON body for one call: the canonical request as OpenAI takes it."""
        return request.upstream_body(model=model, stream=stream, controls=control_fields(request))

    def build_request(
        self, request: ChatCompletionRequest, *, model: str, stream: bool
    ) -> UpstreamRequest:
        """The HTTP request for one call, carrying this provider's timeouts."""
        return UpstreamRequest.post_json(
            self.chat_url(model=model),
            json_body=self.request_body(request, model=model, stream=stream),
            headers=self.request_headers(stream=stream),
            timeout=request_timeout(self.settings),
        )

    def build_embeddings_request(
        self, inputs: list[str] | list[list[int]], *, request: EmbeddingRequest, model: str
    ) -> UpstreamRequest:
        """OpenAI's embeddings body for ``inputs``; relayq's own fields and controls not sent."""
        body: dict[str, Any] = {"model": model, "input": inputs}
        body["encoding_format"] = request.encoding_format
        if request.dimensions is not None:
            body["dimensions"] = request.dimensions
        if request.user is not None:
            body["user"] = request.user
        return UpstreamRequest.post_json(
            self.embeddings_url(model=model),
            json_body=body,
            headers=self.request_headers(stream=False),
            timeout=request_timeout(self.settings),
        )

    def parse_embeddings(self, payload: Any, *, model: str) -> EmbeddingResponse:
        """OpenAI's ``list`` of embeddings; an error object in a 2xx body raises its error."""
        if isinstance(payload, dict) and "error" in payload and "data" not in payload:
            raise self.adjust_error(error_for_event(payload["error"], provider=self.name), payload)
        if isinstance(payload, dict) and not payload.get("model"):
            payload["model"] = model  # some compatible servers leave it out
        try:
            return EmbeddingResponse.model_validate(payload)
        except ValidationError as exc:
            raise MalformedResponse(f"{self.name}: not an embeddings list: {exc}") from exc

    def adjust_error(self, error: ProviderError, payload: object) -> ProviderError:
        """The vendor's say on an error already mapped from ``payload``; unchanged here.

        Called for HTTP error answers and for error objects in bodies and
        streams, with the decoded JSON (None when the body was not JSON).
        """
        return error

    def error_from_payload(
        self, payload: object, *, status_code: int, headers: Mapping[str, str]
    ) -> ProviderError:
        """The error for a non-2xx answer, keeping the vendor's message."""
        error = super().error_from_payload(payload, status_code=status_code, headers=headers)
        return self.adjust_error(error, payload)

    def completion_payload(self, payload: Any) -> Any:
        """A decoded 2xx body made OpenAI-shaped before validation; unchanged here."""
        return payload

    def chunk_payload(self, payload: Any) -> Any:
        """A decoded stream event made OpenAI-shaped before validation; unchanged here."""
        return payload

    @property
    def passes_chunks_through(self) -> bool:
        """Whether the upstream's chunk JSON is what a client gets, byte for byte.

        Then each chunk keeps its upstream text (:meth:`ChatCompletionChunk.keep_wire`)
        and the layers above pass it on undecoded. An adapter whose
        :meth:`chunk_payload` changes chunks says no.
        """
        return type(self).chunk_payload is OpenAIProvider.chunk_payload

    def parse_completion(
        self, content: bytes | str, *, model: str = "", created: int = 0
    ) -> ChatCompletion:
        """A 2xx body as a ``chat.completion``; an error object in it raises its error."""
        payload = decode_json(content, provider=self.name)
        if isinstance(payload, dict) and "error" in payload and "choices" not in payload:
            raise self.adjust_error(error_for_event(payload["error"], provider=self.name), payload)
        try:
            return ChatCompletion.model_validate(self.completion_payload(payload))
        except ValidationError as exc:
            raise MalformedResponse(f"{self.name}: not a chat.completion: {exc}") from exc

    def parse_event(self, event: ServerSentEvent) -> ChatCompletionChunk | None:
        """One stream event as a chunk; None for the ``[DONE]`` end marker."""
        if event.data.strip() == _DONE:
            return None
        payload = decode_json(event.data, provider=self.name)
        if isinstance(payload, dict) and ("error" in payload or event.event == "error"):
            error = error_for_event(payload.get("error", payload), provider=self.name)
            raise self.adjust_error(error, payload)
        try:
            chunk = ChatCompletionChunk.model_validate(self.chunk_payload(payload))
        except ValidationError as exc:
            raise MalformedResponse(f"{self.name}: not a chat.completion.chunk: {exc}") from exc
        return chunk.keep_wire(event.data) if self.passes_chunks_through else chunk

    def stream_parser(self, *, model: str, created: int) -> OpenAIStream:
        return OpenAIStream(self, model=model, created=created)

    def stream_complete(self, last: ChatCompletionChunk | None) -> bool:
        """Whether a stream whose body ended without ``[DONE]`` after ``last`` is whole.

        OpenAI always sends the marker, so never; vendors that end streams
        differently say how their last chunk shows it.
        """
        return False

    def parse_models(self, payload: Any) -> list[str]:
        """The model ids in OpenAI's list shape, ``{"data": [{"id": ...}, ...]}``.

        A bare array of models is taken too (Together's ``/models`` answers one).
        """
        data = payload.get("data") if isinstance(payload, dict) else payload
        if not isinstance(data, list):
            raise MalformedResponse(f"{self.name}: not a model list")
        ids = [item.get("id") for item in data if isinstance(item, dict)]
        if not all(isinstance(model_id, str) for model_id in ids):
            raise MalformedResponse(f"{self.name}: a listed model has no id")
        return [str(model_id) for model_id in ids]

    async def list_models(self) -> list[str] | None:
        """The upstream's model ids from ``GET {base_url}/models``; None if it lists none."""
        if not self.lists_models:
            return None
        return self.parse_models(await self.get_json(self.models_url()))
