"""The ``gemini`` adapter: Google's Gemini API (``generativelanguage.googleapis.com``).

Calls ``POST {base_url}/{api_version}/models/{model}:generateContent``, and
``:streamGenerateContent?alt=sse`` for streams, with the key in the
``x-goog-api-key`` header. The request is built in
:mod:`relayq.providers.gemini_request`, the answer read in
:mod:`relayq.providers.gemini_response`; the I/O is
:class:`~relayq.providers.base.HTTPProvider`'s. ``list_models`` reads
``GET {base_url}/{api_version}/models`` (every page) and returns the models
that serve ``generateContent``, without the ``models/`` prefix.

Errors, at the boundary: Google's ``{"error": {"code", "message", "status",
"details"}}`` body (also inside a one-element array) maps by HTTP status
through :func:`~relayq.providers.errors.error_for_status` with Google's
message, except that an ``ErrorInfo`` reason ``API_KEY_*`` (Gemini answers a
bad key with 400 ``INVALID_ARGUMENT``) and a 402 (the key's prepaid credit is
spent: no call will pass until someone pays) are
:class:`~relayq.providers.errors.AuthenticationFailed`, ``DEADLINE_EXCEEDED``
(504) is :class:`~relayq.providers.errors.ProviderTimeout`, and 499
``CANCELLED``, which relayq never causes while it waits for an answer, counts
as Google dropping the call (:class:`~relayq.providers.errors.ProviderUnavailable`).
A 429's wait comes
from ``Retry-After`` when sent, else from the ``google.rpc.RetryInfo``
detail's ``retryDelay`` (``"7s"``, ``"29.7s"``). Inside a stream, an error
arrives either as a ``data: {"error": ...}`` event or as raw JSON lines after
the events (as Google's SDK expects); both raise the mapped error, classified
by the error's ``code``, or its ``status`` name when there is no code. A body
that is not JSON, or a stream that ends before a finish reason, is
:class:`~relayq.providers.errors.MalformedResponse`; a stream cut by the
network is :class:`~relayq.providers.errors.ProviderConnectionError`.

A stream answered with JSON and no events at all (what Gemini sends without
``alt=sse``, one JSON array of responses, or a proxy's single response) is
read response by response as the events would have been.

Embeddings: ``POST {base_url}/{api_version}/models/{model}:batchEmbedContents``
(Gemini API reference, "Embeddings": https://ai.google.dev/api/embeddings)
with one ``EmbedContentRequest`` per text, ``{model: "models/{model}",
content: {parts: [{text}]}, outputDimensionality}`` (``dimensions``), plus
``taskType`` when the ``embedding_task_type`` option is set; at most 100
requests per call, so longer inputs are split. The vectors are read from
``embeddings[].values``. Gemini reports no token usage for embeddings, and
relayq estimates none: usage is 0. Token-id inputs and ``user`` are not
carried.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from relayq.providers.base import HTTPProvider, StreamParser
from relayq.providers.errors import (
    AuthenticationFailed,
    MalformedResponse,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    error_for_status,
)
from relayq.providers.gemini_request import SchemaDialect, generate_content_body
from relayq.providers.gemini_response import GeminiStream, parse_completion
from relayq.providers.http import UpstreamRequest, decode_json, request_timeout
from relayq.providers.retry_after import parse_duration, retry_after_seconds
from relayq.providers.sse import ServerSentEvent, SSEDecoder
from relayq.schemas.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest
from relayq.schemas.embeddings import Embedding, EmbeddingRequest, EmbeddingResponse

__all__ = ["DEFAULT_BASE_URL", "GeminiOptions", "GeminiProvider", "error_from_payload"]

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"

_STATUS_BY_NAME = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ABORTED": 409,
    "CANCELLED": 499,
    "RESOURCE_EXHAUSTED": 429,
    "INTERNAL": 500,
    "UNKNOWN": 500,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}
"""HTTP status of each ``google.rpc.Code`` name Gemini sends, for errors that come without one."""


class GeminiOptions(BaseModel):
    """The ``options`` of a ``gemini`` provider."""

    model_config = ConfigDict(extra="forbid")

    api_version: str = Field(default="v1beta", pattern=r"^v\w+$")
    """The API version in the path; ``v1beta`` carries every feature this adapter maps."""
    schema_dialect: SchemaDialect = "json_schema"
    """``json_schema`` sends ``responseJsonSchema``/``parametersJsonSchema`` (Gemini 2.5+);
    ``openapi`` sends ``responseSchema``/``parameters`` (Google's OpenAPI subset)."""
    thought_signature_fallback: str | None = "skip_thought_signature_validator"
    """Sent as ``thoughtSignature`` on replayed function calls (see gemini_request); None: none."""
    generation_config: dict[str, Any] = Field(default_factory=dict)
    """``generationConfig`` entries for every call (``thinkingConfig``...); the request's win."""
    safety_settings: list[dict[str, Any]] | None = None
    """``safetySettings`` for every call, as Gemini takes them."""
    embedding_task_type: str | None = None
    """Gemini's ``taskType`` for every embeddings call (``RETRIEVAL_DOCUMENT``...); None: none."""


def _retry_delay(error: dict[str, Any]) -> float | None:
    for detail in error.get("details") or []:
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("RetryInfo"):
            return parse_duration(str(detail.get("retryDelay", "")))
    return None


def _is_key_error(error: dict[str, Any]) -> bool:
    return any(
        isinstance(detail, dict) and str(detail.get("reason", "")).startswith("API_KEY_")
        for detail in error.get("details") or []
    )


def error_from_payload(
    payload: object,
    *,
    provider: str,
    status_code: int | None = None,
    headers: Mapping[str, str] | None = None,
) -> ProviderError:
    """The error a Google error body (or stream error object) stands for.

    ``status_code`` is the HTTP status when the body came with one; inside a
    stream the error's own ``code`` (or ``status`` name) decides.
    """
    if isinstance(payload, list) and payload:
        payload = payload[0]
    error = payload.get("error") if isinstance(payload, dict) else None
    error = error if isinstance(error, dict) else {}
    name = str(error.get("status") or "")
    code = error.get("code")
    status = status_code or (code if isinstance(code, int) else _STATUS_BY_NAME.get(name, 500))
    message = str(error.get("message") or f"{provider}: upstream answered HTTP {status}")
    if _is_key_error(error) or status == 402:
        return AuthenticationFailed(message, status_code=status)
    if name == "DEADLINE_EXCEEDED":
        return ProviderTimeout(message, status_code=status)
    if status == 499:
        return ProviderUnavailable(message, status_code=status)
    retry_after = None
    if status == 429:
        retry_after = retry_after_seconds(headers or {})
        if retry_after is None:
            retry_after = _retry_delay(error)
    return error_for_status(status, message, retry_after=retry_after)


class GoogleDecoder(SSEDecoder):
    """Events, and the JSON Google writes into the body instead of them.

    A line opening a JSON object or array, and every line after it, is kept
    as :attr:`json_body` (an error after the events, or a whole answer
    without events) instead of being read as an event.
    """

    def __init__(self) -> None:
        super().__init__()
        self._raw: list[str] = []

    @property
    def json_body(self) -> str | None:
        return "\n".join(self._raw) if self._raw else None

    def feed(self, line: str) -> ServerSentEvent | None:
        if self._raw or line.lstrip().startswith(("{", "[")):
            self._raw.append(line)
            return None
        return super().feed(line)


class GeminiStreamParser(StreamParser):
    """One Gemini stream: a ``GenerateContentResponse`` per event; the finish comes last."""

    def __init__(self, *, provider: str, model: str, created: int) -> None:
        super().__init__(model=model, created=created)
        self.provider = provider
        self.state = GeminiStream(model=model, created=created)

    def feed(self, event: ServerSentEvent) -> tuple[ChatCompletionChunk, ...]:
        payload = decode_json(event.data, provider=self.provider)
        if isinstance(payload, dict) and "error" in payload:
            raise error_from_payload(payload, provider=self.provider)
        chunk = self.state.feed(payload)
        return () if chunk is None else (chunk,)

    def end(self) -> tuple[ChatCompletionChunk, ...]:
        """The finish reasons and usage, once the body ended."""
        return (self.state.finish(),)

    def raw_json(self, text: str) -> list[ChatCompletionChunk]:
        """The chunks of JSON written into the body instead of events, then the last.

        An error raises it. Other JSON is a whole answer only when no event
        came before it (responses in an array, or one alone); after events it
        is malformed.
        """
        payload = decode_json(text, provider=self.provider)
        whole = self.state.id is None
        chunks = []
        for response in payload if isinstance(payload, list) else [payload]:
            if isinstance(response, dict) and "error" in response:
                raise error_from_payload(response, provider=self.provider)
            if not whole:
                break
            if (chunk := self.state.feed(response)) is not None:
                chunks.append(chunk)
        if not whole:
            raise MalformedResponse(f"{self.provider}: stream holds JSON outside its events")
        return [*chunks, *self.end()]


class GeminiProvider(HTTPProvider):
    """Gemini ``generateContent`` with an API key."""

    type_name = "gemini"
    options_model = GeminiOptions
    options: GeminiOptions
    default_base_url = DEFAULT_BASE_URL
    max_embedding_inputs = 100

    def auth_headers(self) -> dict[str, str]:
        """The API key, as ``x-goog-api-key``."""
        key = self.settings.api_key.get_secret_value() if self.settings.api_key else ""
        return {"x-goog-api-key": key} if key else {}

    def model_url(self, model: str, *, stream: bool, method: str | None = None) -> str:
        """The method URL for ``model``: ``gemini-2.5-flash``, or a full ``tunedModels/x`` name."""
        path = model if "/" in model else f"models/{model}"
        method = method or ("streamGenerateContent?alt=sse" if stream else "generateContent")
        return f"{self.base_url}/{self.options.api_version}/{quote(path, safe='/')}:{method}"

    def build_embeddings_request(
        self, inputs: list[str] | list[list[int]], *, request: EmbeddingRequest, model: str
    ) -> UpstreamRequest:
        """One ``EmbedContentRequest`` per text (the base refused token ids), in order."""
        name = model if "/" in model else f"models/{model}"
        extra: dict[str, Any] = {}
        if request.dimensions is not None:
            extra["outputDimensionality"] = request.dimensions
        if self.options.embedding_task_type is not None:
            extra["taskType"] = self.options.embedding_task_type
        requests = [
            {"model": name, "content": {"parts": [{"text": text}]}, **extra} for text in inputs
        ]
        return UpstreamRequest.post_json(
            self.model_url(model, stream=False, method="batchEmbedContents"),
            json_body={"requests": requests},
            headers=self.request_headers(stream=False),
            timeout=request_timeout(self.settings),
        )

    def parse_embeddings(self, payload: Any, *, model: str) -> EmbeddingResponse:
        """``embeddings[].values`` in order; Gemini reports no usage, so it is 0."""
        if isinstance(payload, dict) and "error" in payload and "embeddings" not in payload:
            raise error_from_payload(payload, provider=self.name)
        embeddings = payload.get("embeddings") if isinstance(payload, dict) else None
        if not isinstance(embeddings, list):
            raise MalformedResponse(f"{self.name}: not a BatchEmbedContentsResponse")
        try:
            data = [
                Embedding(index=index, embedding=item["values"])
                for index, item in enumerate(embeddings)
            ]
        except (TypeError, KeyError, ValidationError) as exc:
            raise MalformedResponse(f"{self.name}: an embedding has no values: {exc}") from exc
        return EmbeddingResponse(data=data, model=model)

    def build_request(
        self, request: ChatCompletionRequest, *, model: str, stream: bool
    ) -> UpstreamRequest:
        """The HTTP request for one call, carrying this provider's timeouts."""
        body = generate_content_body(
            request,
            schema_dialect=self.options.schema_dialect,
            thought_signature_fallback=self.options.thought_signature_fallback,
            generation_defaults=self.options.generation_config,
            safety_settings=self.options.safety_settings,
        )
        return UpstreamRequest.post_json(
            self.model_url(model, stream=stream),
            json_body=body,
            headers=self.request_headers(stream=stream),
            timeout=request_timeout(self.settings),
        )

    def error_from_payload(
        self, payload: object, *, status_code: int, headers: Mapping[str, str]
    ) -> ProviderError:
        return error_from_payload(
            payload, provider=self.name, status_code=status_code, headers=headers
        )

    def parse_completion(self, content: bytes | str, *, model: str, created: int) -> ChatCompletion:
        """A 2xx body as a ``chat.completion``; an error object in it raises its error."""
        payload = decode_json(content, provider=self.name)
        if isinstance(payload, dict) and "error" in payload and "candidates" not in payload:
            raise error_from_payload(payload, provider=self.name)
        return parse_completion(payload, model=model, created=created)

    def new_decoder(self) -> SSEDecoder:
        return GoogleDecoder()

    def stream_parser(self, *, model: str, created: int) -> StreamParser:
        return GeminiStreamParser(provider=self.name, model=model, created=created)

    def whole_body_chunks(self, content: str, parser: StreamParser) -> list[ChatCompletionChunk]:
        """JSON instead of events, or after them: read response by response, then finished."""
        assert isinstance(parser, GeminiStreamParser)
        return parser.raw_json(content)

    async def list_models(self) -> list[str]:
        """The ids of the models that serve ``generateContent``, every page read."""
        names: list[str] = []
        params: dict[str, str] = {"pageSize": "1000"}
        while True:
            url = f"{self.base_url}/{self.options.api_version}/models"
            payload = await self.get_json(url, params=params)
            if not isinstance(payload, dict) or not isinstance(payload.get("models", []), list):
                raise MalformedResponse(f"{self.name}: model list is not a ListModelsResponse")
            for model in payload.get("models", []):
                methods = model.get("supportedGenerationMethods") or ["generateContent"]
                if "generateContent" in methods:
                    names.append(str(model.get("name", "")).removeprefix("models/"))
            if not (token := payload.get("nextPageToken")):
                return names
            params["pageToken"] = str(token)
