"""The adapter base classes: the interface core code calls, and the one HTTP transport path.

:class:`Provider` is what execution talks to: ``stream`` and ``complete``,
``embed`` for adapters that serve embeddings, options from settings,
per-request controls from the body. An adapter that is not a web API (the
mock) implements :meth:`Provider.stream_from_upstream` and gets its whole
answer added up from that stream.

Embeddings. :meth:`Provider.embed` checks what the adapter can take, cuts
the inputs into slices of at most :attr:`Provider.max_embedding_inputs`,
asks :meth:`Provider.embed_inputs` for each slice one after the other, and
joins the answers in order (indexes numbered on, usage summed, vectors
encoded as asked). One slice at a time, not all at once: relayq admits a
job as one call against the deployment's rate limits and the worker's
concurrency, and a job whose inputs were split then still has one call in
flight, as admitted; a slice that fails stops the job before more tokens are
spent. Splitting is rare (OpenAI takes 2,048 inputs per call, the most a
request may hold; Cohere 96, Gemini 100), and many jobs at once, not one
job's slices, are what fill a deployment.

:class:`HTTPProvider` owns the I/O of every vendor adapter: sending through
the process's :class:`~relayq.providers.http.UpstreamClient`, mapping a
non-2xx answer, reading a whole body, and the server-sent-events read loop.
An HTTP adapter is its mapping, all of it pure: :meth:`~HTTPProvider.build_request`,
:meth:`~HTTPProvider.error_from_payload`, :meth:`~HTTPProvider.parse_completion`
and a :class:`StreamParser` per streamed call (:meth:`~HTTPProvider.stream_parser`).
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from relayq.config.routes import ProviderSettings
from relayq.providers.assembly import CompletionAssembler, completion_chunks
from relayq.providers.errors import (
    InvalidRequest,
    MalformedResponse,
    ProviderError,
    error_for_status,
    vendor_message,
)
from relayq.providers.http import (
    UpstreamClient,
    UpstreamRequest,
    UpstreamResponse,
    decode_json,
    request_timeout,
    send_checked,
)
from relayq.providers.responses_wire import ResponsesEvent
from relayq.providers.retry_after import retry_after_seconds
from relayq.providers.sse import ServerSentEvent, SSEDecoder
from relayq.providers.text_stream import text_chunks
from relayq.schemas.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest
from relayq.schemas.completions import TextCompletion, TextCompletionRequest
from relayq.schemas.embeddings import EmbeddingRequest, EmbeddingResponse, join_embeddings
from relayq.schemas.images import ImageGenerationRequest, ImagesResponse
from relayq.schemas.responses import ResponsesRequest

__all__ = ["HTTPProvider", "NoOptions", "Provider", "StreamParser"]


class NoOptions(BaseModel):
    """The options of an adapter that takes none: any option is an error."""

    model_config = ConfigDict(extra="forbid")


def _problems(exc: ValidationError, *, prefix: str) -> str:
    return "; ".join(
        ".".join([prefix, *map(str, error["loc"])]) + f": {error['msg']}" for error in exc.errors()
    )


class Provider(ABC):
    """One upstream vendor's adapter.

    An adapter is built once per worker process with its settings and the
    process's shared HTTP client, and serves many calls concurrently. It
    translates the canonical OpenAI-shaped request to the vendor's wire format
    and the vendor's answer back, raising only :mod:`relayq.providers.errors`.
    """

    type_name: ClassVar[str]
    """The ``type`` that selects this adapter in :class:`ProviderSettings`."""
    options_model: ClassVar[type[BaseModel]] = NoOptions
    """Validates ``settings.options``; adapters with vendor-specific options override it."""
    controls_model: ClassVar[type[BaseModel] | None] = None
    """The per-request controls this adapter takes, if any: a request carries them in
    the extra body field named after :attr:`type_name` (``"mock": {...}``). The API
    validates that field with this model (:func:`relayq.providers.check_controls`),
    and it is never sent upstream."""

    max_embedding_inputs: ClassVar[int] = 0
    """The most inputs one upstream embeddings call takes; 0: the adapter serves no
    embeddings. :meth:`embed` cuts longer inputs into calls of at most this many."""
    embeds_token_ids: ClassVar[bool] = False
    """Whether the upstream embeds token-id arrays (OpenAI's API does); else text only."""
    serves_text_completions: ClassVar[bool] = False
    """Whether :meth:`complete_text` passes legacy completions (``/v1/completions``) on:
    the adapters that speak OpenAI's wire format to servers that still serve it."""
    serves_images: ClassVar[bool] = False
    """Whether :meth:`generate_images` draws images (``/v1/images/generations``); False:
    the adapter serves none, and a model with no deployment on one that does answers 400."""

    speaks_responses: ClassVar[bool] = False
    """Whether :meth:`respond` and :meth:`stream_response` pass OpenAI's Responses API
    (``/v1/responses``) on natively; False: a responses job is served over chat. An
    adapter whose options decide it overrides :meth:`speaks_responses_with`."""

    def __init__(self, *, name: str, settings: ProviderSettings, http: UpstreamClient) -> None:
        self.name = name
        self.settings = settings
        self.http = http
        self.options = self.validate_options(settings.options, provider=name)

    @classmethod
    def validate_options(cls, options: dict[str, object], *, provider: str) -> BaseModel:
        """``options`` parsed by :attr:`options_model`; a ValueError naming the bad field."""
        try:
            return cls.options_model.model_validate(options)
        except ValidationError as exc:
            problems = _problems(exc, prefix="options")
            raise ValueError(f"provider {provider!r} ({cls.type_name}): {problems}") from None

    @classmethod
    def request_controls(
        cls, request: BaseModel, *, defaults: Mapping[str, object] | None = None
    ) -> BaseModel:
        """The request's controls over ``defaults``, parsed by :attr:`controls_model`.

        Invalid ones (the API refuses them first, but a batch line is not
        checked there) are an :class:`InvalidRequest` naming the field.
        """
        assert cls.controls_model is not None, f"{cls.type_name} takes no controls"
        raw = (request.model_extra or {}).get(cls.type_name)
        base = dict(defaults or {})
        try:
            return cls.controls_model.model_validate(
                {**base, **raw} if isinstance(raw, dict) else base if raw is None else raw
            )
        except ValidationError as exc:
            problems = _problems(exc, prefix=cls.type_name)
            message = f"invalid {cls.type_name} controls: {problems}"
            raise InvalidRequest(message, status_code=400) from exc

    async def list_models(self) -> list[str] | None:
        """The upstream's model ids, for vendors that publish a list; None otherwise."""
        return None

    @property
    def serves_embeddings(self) -> bool:
        """Whether :meth:`embed` can answer (the adapter declares a per-call limit)."""
        return self.max_embedding_inputs > 0

    def embedding_slice_size(self) -> int:
        """How many inputs one upstream call carries: :attr:`max_embedding_inputs` here."""
        return self.max_embedding_inputs

    async def embed(self, request: EmbeddingRequest, *, model: str) -> EmbeddingResponse:
        """Embed every input of ``request`` on the upstream ``model``, in order.

        Raises :class:`InvalidRequest` (status 400, never retried) when the
        adapter serves no embeddings, when the input is token ids and the
        upstream embeds text only, or when the request carries an extra field
        that is no adapter's controls; otherwise whatever the upstream calls
        raise. An upstream answer holding fewer or more vectors than inputs
        is :class:`MalformedResponse`.
        """
        self.check_embedding_request(request)
        inputs = request.inputs()
        size = max(1, self.embedding_slice_size())
        parts = []
        for start in range(0, len(inputs), size):
            batch = inputs[start : start + size]
            part = await self.embed_inputs(batch, request=request, model=model)
            if len(part.data) != len(batch):
                raise MalformedResponse(
                    f"{self.name}: {len(part.data)} embeddings for {len(batch)} inputs"
                )
            parts.append(part)
        return join_embeddings(parts, encoding_format=request.encoding_format)

    def check_embedding_request(self, request: EmbeddingRequest) -> None:
        """Refuse, as :class:`InvalidRequest`, what this adapter cannot embed."""
        if not self.serves_embeddings:
            message = f"provider {self.name!r} ({self.type_name}) does not serve embeddings"
            raise InvalidRequest(message, status_code=400)
        if request.has_tokens and not self.embeds_token_ids:
            message = (
                f"provider {self.name!r} ({self.type_name}) embeds text only: 'input' must be "
                "a string or an array of strings, not token ids"
            )
            raise InvalidRequest(message, status_code=400)
        from relayq.providers import control_fields  # the registry imports this module

        unknown = sorted(set(request.model_extra or {}) - control_fields(request))
        if unknown:
            message = f"Unrecognized request argument supplied: {unknown[0]}"
            raise InvalidRequest(message, status_code=400)

    async def complete_text(self, request: TextCompletionRequest, *, model: str) -> TextCompletion:
        """A legacy completion of ``request`` on the upstream ``model``, answered whole.

        Raises :class:`InvalidRequest` (status 400, never retried) here: only the
        adapters that declare :attr:`serves_text_completions` serve it.
        """
        message = f"provider {self.name!r} ({self.type_name}) does not serve legacy completions"
        raise InvalidRequest(message, status_code=400)

    async def generate_images(
        self, request: ImageGenerationRequest, *, model: str
    ) -> ImagesResponse:
        """The images ``request`` asks for, drawn by the upstream ``model``, in OpenAI's
        ``ImagesResponse``: each a URL or base64 bytes, as the upstream answers.

        Raises :class:`InvalidRequest` (status 400, never retried) here: only the
        adapters that declare :attr:`serves_images` serve it.
        """
        message = f"provider {self.name!r} ({self.type_name}) does not serve image generation"
        raise InvalidRequest(message, status_code=400)

    @classmethod
    def speaks_responses_with(cls, options: Mapping[str, object]) -> bool:
        """Whether a provider of this type configured with ``options`` speaks Responses
        natively (asked of the type: no adapter is built)."""
        return cls.speaks_responses

    @property
    def native_responses(self) -> bool:
        """Whether this provider passes Responses on natively (see :attr:`speaks_responses`)."""
        return self.speaks_responses_with(self.settings.options)

    async def respond(self, request: ResponsesRequest, *, model: str) -> dict[str, Any]:
        """The ``response`` object the upstream ``model`` answers ``request`` with, as
        the vendor gave it.

        Raises :class:`InvalidRequest` here: only the adapters that declare
        :attr:`speaks_responses` serve it (the executor serves the others over chat).
        """
        message = f"provider {self.name!r} ({self.type_name}) does not speak Responses"
        raise InvalidRequest(message, status_code=400)

    def stream_response(
        self, request: ResponsesRequest, *, model: str
    ) -> AsyncIterator[ResponsesEvent]:
        """The upstream's Responses stream events, as they come (see :meth:`respond`)."""
        message = f"provider {self.name!r} ({self.type_name}) does not speak Responses"
        raise InvalidRequest(message, status_code=400)

    async def stream_text(
        self, request: TextCompletionRequest, *, model: str
    ) -> AsyncIterator[ChatCompletionChunk]:
        """A legacy completion as chunks (:mod:`relayq.providers.text_stream`): here the
        whole answer of :meth:`complete_text` as the chunks a stream of it carries."""
        whole = await self.complete_text(request, model=model)
        for chunk in text_chunks(whole.model_dump(mode="json", exclude_none=True)):
            yield chunk

    async def embed_inputs(
        self, inputs: list[str] | list[list[int]], *, request: EmbeddingRequest, model: str
    ) -> EmbeddingResponse:
        """One upstream call embedding ``inputs`` (a slice of ``request``'s), indexes from 0.

        Adapters that serve embeddings implement it; :meth:`embed` never calls
        it for one that does not.
        """
        raise NotImplementedError(f"{self.type_name} serves no embeddings")

    async def complete(self, request: ChatCompletionRequest, *, model: str) -> ChatCompletion:
        """Run one completion of ``request`` on the upstream ``model``, answered whole.

        Here the stream's chunks added up; an adapter whose upstream answers
        whole (every HTTP adapter) asks it for that instead.
        """
        assembler = CompletionAssembler()
        async for chunk in self.stream_from_upstream(request, model=model):
            assembler.add(chunk)
        try:
            return assembler.completion()
        except ValueError as exc:
            raise MalformedResponse(f"{self.name}: the stream carried no chunks") from exc

    def stream(
        self, request: ChatCompletionRequest, *, model: str
    ) -> AsyncIterator[ChatCompletionChunk]:
        """Stream one completion as chunks; the last carries usage when known.

        Workers call this for every job whose text is streamed (one created
        with ``stream: true``), and :meth:`complete` for any other. It asks
        the upstream to stream (:meth:`stream_from_upstream`) unless the
        provider's settings say ``stream_upstream: false``; then it asks for
        the whole answer (:meth:`complete`) and sends it as the chunks a
        stream of it would have carried.
        """
        if self.settings.stream_upstream:
            return self.stream_from_upstream(request, model=model)
        return self._whole_as_chunks(request, model=model)

    @abstractmethod
    def stream_from_upstream(
        self, request: ChatCompletionRequest, *, model: str
    ) -> AsyncIterator[ChatCompletionChunk]:
        """Ask the upstream to stream one completion and yield its chunks, usage last.

        A stream cut before the vendor's end marker raises, never ends quietly.
        """

    async def _whole_as_chunks(
        self, request: ChatCompletionRequest, *, model: str
    ) -> AsyncIterator[ChatCompletionChunk]:
        for chunk in completion_chunks(await self.complete(request, model=model)):
            yield chunk


class StreamParser(ABC):
    """One streamed call's events in, its chunks out; pure, built per call.

    :attr:`done` turns true at the vendor's end marker: the rest of the body
    is then read (so the connection is reused) and dropped. ``model`` is the
    upstream model asked for, ``created`` the call's time, for vendors whose
    events carry neither.
    """

    def __init__(self, *, model: str, created: int) -> None:
        self.model = model
        self.created = created
        self.done = False

    @abstractmethod
    def feed(self, event: ServerSentEvent) -> Sequence[ChatCompletionChunk]:
        """The chunks one event stands for; an error event raises its error."""

    @abstractmethod
    def end(self) -> Sequence[ChatCompletionChunk]:
        """The body ended (as events): the last chunks, or raise if it was cut short."""


class HTTPProvider(Provider):
    """A web API's adapter: the I/O here, the vendor's mapping in the subclass."""

    default_base_url: ClassVar[str] = ""
    """The vendor's base URL, used when the settings name none."""

    @property
    def base_url(self) -> str:
        """The configured base URL (or the vendor's default), without a trailing slash."""
        return (self.settings.base_url or self.default_base_url).rstrip("/")

    # The mapping: pure, per vendor.

    def auth_headers(self) -> dict[str, str]:
        """The credentials header: ``Authorization: Bearer <key>`` when a key is set."""
        key = self.settings.api_key.get_secret_value() if self.settings.api_key else ""
        return {"Authorization": f"Bearer {key}"} if key else {}

    def vendor_headers(self) -> dict[str, str]:
        """Headers a vendor asks for besides auth (attribution, versions); none here."""
        return {}

    def request_headers(self, *, stream: bool) -> dict[str, str]:
        """Content negotiation, auth and the vendor's, then the configured headers, which win."""
        headers = {"Accept": "text/event-stream" if stream else "application/json"}
        headers.update(self.auth_headers())
        headers.update(self.vendor_headers())
        headers.update(self.settings.headers)
        return headers

    @abstractmethod
    def build_request(
        self, request: ChatCompletionRequest, *, model: str, stream: bool
    ) -> UpstreamRequest:
        """The HTTP request for one call, carrying this provider's timeouts."""

    def error_from_payload(
        self, payload: object, *, status_code: int, headers: Mapping[str, str]
    ) -> ProviderError:
        """The error for a non-2xx answer whose body decoded to ``payload`` (None: not JSON).

        By status, with the vendor's message; a 429 waits as its ``Retry-After`` says.
        """
        message = vendor_message(payload) or f"{self.name}: upstream answered HTTP {status_code}"
        retry_after = retry_after_seconds(headers) if status_code == 429 else None
        return error_for_status(status_code, message, retry_after=retry_after)

    @abstractmethod
    def parse_completion(self, content: bytes | str, *, model: str, created: int) -> ChatCompletion:
        """A 2xx whole body as a ``chat.completion``; an error object in it raises its error.

        ``created`` stamps answers of vendors that send no timestamp.
        """

    @abstractmethod
    def stream_parser(self, *, model: str, created: int) -> StreamParser:
        """A parser for one streamed call's events."""

    def whole_body_chunks(self, content: str, parser: StreamParser) -> list[ChatCompletionChunk]:
        """The chunks of a stream answered with JSON instead of events.

        Here the whole answer (read by :meth:`parse_completion`) as the chunks a
        stream of it would have carried; a vendor whose JSON stream is a list
        of events reads it differently.
        """
        whole = self.parse_completion(content, model=parser.model, created=parser.created)
        return completion_chunks(whole)

    def new_decoder(self) -> SSEDecoder:
        """The event decoder for one stream's body (a vendor may frame its body differently)."""
        return SSEDecoder()

    # The I/O: shared by every HTTP adapter.

    def error_from_response(
        self, status_code: int, headers: Mapping[str, str], content: bytes
    ) -> ProviderError:
        """The error for a non-2xx answer: its body decoded, then :meth:`error_from_payload`."""
        try:
            payload = json.loads(content)
        except ValueError:
            payload = None
        return self.error_from_payload(payload, status_code=status_code, headers=headers)

    @asynccontextmanager
    async def send(self, http_request: UpstreamRequest) -> AsyncIterator[UpstreamResponse]:
        """Send, raise the mapped error for a non-2xx answer, else yield the open response."""
        async with send_checked(
            self.http, http_request, provider=self.name, on_error=self.error_from_response
        ) as response:
            yield response

    async def post_for_json(self, http_request: UpstreamRequest) -> Any:
        """Send ``http_request`` (a JSON POST), its errors mapped, its JSON body decoded."""
        async with self.send(http_request) as response:
            content = await response.aread()
        return decode_json(content, provider=self.name)

    def build_embeddings_request(
        self, inputs: list[str] | list[list[int]], *, request: EmbeddingRequest, model: str
    ) -> UpstreamRequest:
        """The HTTP request embedding ``inputs``; adapters that serve embeddings implement it."""
        raise NotImplementedError(f"{self.type_name} serves no embeddings")

    def parse_embeddings(self, payload: Any, *, model: str) -> EmbeddingResponse:
        """A decoded 2xx embeddings body as OpenAI's shape, indexes from 0."""
        raise NotImplementedError(f"{self.type_name} serves no embeddings")

    async def embed_inputs(
        self, inputs: list[str] | list[list[int]], *, request: EmbeddingRequest, model: str
    ) -> EmbeddingResponse:
        """One upstream call: :meth:`build_embeddings_request`, sent, :meth:`parse_embeddings`."""
        http_request = self.build_embeddings_request(inputs, request=request, model=model)
        return self.parse_embeddings(await self.post_for_json(http_request), model=model)

    async def get_json(self, url: str, *, params: Mapping[str, str | int] | None = None) -> Any:
        """``GET url`` with this provider's headers and timeouts, its JSON body decoded."""
        http_request = UpstreamRequest.get(
            url,
            params=params,
            headers=self.request_headers(stream=False),
            timeout=request_timeout(self.settings),
        )
        async with self.send(http_request) as response:
            content = await response.aread()
        return decode_json(content, provider=self.name)

    async def complete(self, request: ChatCompletionRequest, *, model: str) -> ChatCompletion:
        """One completion, asked for and answered whole."""
        http_request = self.build_request(request, model=model, stream=False)
        async with self.send(http_request) as response:
            content = await response.aread()
        return self.parse_completion(content, model=model, created=int(time.time()))

    async def stream_from_upstream(
        self, request: ChatCompletionRequest, *, model: str
    ) -> AsyncIterator[ChatCompletionChunk]:
        """One completion as chunks, the usage chunk last; ends only at the vendor's end

        marker (or as :meth:`StreamParser.end` says), or with the whole answer,
        when the upstream sent that instead.
        """
        parser = self.stream_parser(model=model, created=int(time.time()))
        decoder = self.new_decoder()
        http_request = self.build_request(request, model=model, stream=True)
        async with self.send(http_request) as response:
            # Read to the body's end, past the end marker: a connection whose body
            # was left unread is closed instead of reused.
            async for lines in response.aiter_line_batches():
                for line in lines:
                    if parser.done or (event := decoder.feed(line)) is None:
                        continue
                    for chunk in parser.feed(event):
                        yield chunk
            if not parser.done and (event := decoder.flush()) is not None:
                for chunk in parser.feed(event):
                    yield chunk
        if parser.done:
            return
        if (content := decoder.json_body) is not None:
            for chunk in self.whole_body_chunks(content, parser):
                yield chunk
            return
        for chunk in parser.end():
            yield chunk
