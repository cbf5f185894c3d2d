"""The ``anthropic`` adapter: Anthropic's Messages API, ``POST {base_url}/v1/messages``.

The request is built in :mod:`relayq.providers.anthropic_request`, the answer,
stream events and error bodies are read in
:mod:`relayq.providers.anthropic_response`; both are pure, and the I/O is
:class:`~relayq.providers.base.HTTPProvider`'s. Calls carry
``x-api-key``, ``anthropic-version`` (option ``api_version``) and, when the
``betas`` option names any, ``anthropic-beta``.

Carried: system/developer messages (as ``system``), user text, image and PDF
parts, assistant text and tool calls, tool results, tools (with ``strict``),
``tool_choice`` and ``parallel_tool_calls``, a ``json_schema``
``response_format`` (as ``output_config.format``), ``temperature``,
``top_p``, ``max_completion_tokens`` / ``max_tokens`` (option
``default_max_tokens`` when the request has neither: Anthropic requires one),
``stop`` (as ``stop_sequences``), ``user`` (as ``metadata.user_id``) and the
extra field ``top_k``.

Not carried, because Anthropic has no equivalent: ``seed``,
``presence_penalty``, ``frequency_penalty``, ``logit_bias``, ``logprobs`` /
``top_logprobs`` (dropped); ``response_format`` ``json_object`` (JSON without
a schema) and a schema's ``name``/``strict`` (Anthropic always enforces the
schema); a message's ``name``; an image's ``detail``; any other extra body
field (OpenAI's ``reasoning_effort``, ``service_tier``, ``metadata`` mean
other things or nothing to Anthropic). ``n`` > 1, audio parts, OpenAI file
ids and non-PDF files, and non-function tools raise
:class:`~relayq.providers.errors.InvalidRequest` instead, since dropping them
would change the answer's meaning. ``temperature`` goes as given: Anthropic's
range is 0 to 1 and it answers 400 above. Extended thinking is not carried: its
signed thinking blocks must be sent back in later turns of a tool loop, and a
chat-completions message has no place for them; thinking and server-tool
blocks in an answer are skipped, as are citations and ``stop_details``.

Errors, at the boundary: an HTTP status maps through
:func:`~relayq.providers.errors.error_for_status` with Anthropic's
``error.message``; a 429's wait comes from ``retry-after``, else from the
``anthropic-ratelimit-*-reset`` timestamps (:func:`ratelimit_reset_seconds`);
an ``error`` event in a stream (e.g. ``overloaded_error``) maps by its type; a
stream that ends without ``message_stop`` is
:class:`~relayq.providers.errors.MalformedResponse`, one cut by the network
:class:`~relayq.providers.errors.ProviderConnectionError`. An upstream that
ignores ``"stream": true`` (a proxy or an Anthropic-compatible server) and
answers with the whole ``message`` is read as :meth:`complete` reads it, and
its answer yielded as chunks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field

from relayq.providers.anthropic_request import messages_body
from relayq.providers.anthropic_response import (
    StreamTranslator,
    completion_from_message,
    error_from_payload,
)
from relayq.providers.base import HTTPProvider, StreamParser
from relayq.providers.errors import MalformedResponse, ProviderError
from relayq.providers.http import UpstreamRequest, decode_json, request_timeout
from relayq.providers.retry_after import retry_after_seconds
from relayq.providers.sse import ServerSentEvent
from relayq.schemas.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest

__all__ = [
    "DEFAULT_API_VERSION",
    "DEFAULT_BASE_URL",
    "AnthropicOptions",
    "AnthropicProvider",
    "ratelimit_reset_seconds",
]

DEFAULT_BASE_URL = "https://api.anthropic.com"
DEFAULT_API_VERSION = "2023-06-01"
_RATE_LIMITS = ("requests", "tokens", "input-tokens", "output-tokens")


class AnthropicOptions(BaseModel):
    """The ``options`` of an ``anthropic`` provider."""

    model_config = ConfigDict(extra="forbid")

    api_version: str = Field(default=DEFAULT_API_VERSION, min_length=1)
    """Sent as ``anthropic-version``."""
    default_max_tokens: int = Field(default=4096, ge=1)
    """``max_tokens`` for requests that set neither it nor ``max_completion_tokens``."""
    betas: list[str] = Field(default_factory=list)
    """Beta features to enable, sent comma-separated as ``anthropic-beta``."""


def ratelimit_reset_seconds(
    headers: Mapping[str, str], *, now: datetime | None = None
) -> float | None:
    """Seconds until the exhausted limits reset, from ``anthropic-ratelimit-*-reset``.

    Each reset is an RFC 3339 timestamp. The limits whose ``-remaining`` is 0
    decide (a retry must wait for all of them); when none says so, every
    reset given does. None when no reset header is readable.
    """
    headers = {name.lower(): value for name, value in headers.items()}
    current = now or datetime.now(UTC)
    exhausted: list[float] = []
    every: list[float] = []
    for limit in _RATE_LIMITS:
        try:
            when = datetime.fromisoformat(headers[f"anthropic-ratelimit-{limit}-reset"].strip())
        except (KeyError, ValueError):
            continue
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = max((when - current).total_seconds(), 0.0)
        every.append(seconds)
        if headers.get(f"anthropic-ratelimit-{limit}-remaining", "").strip() == "0":
            exhausted.append(seconds)
    chosen = exhausted or every
    return max(chosen) if chosen else None


class AnthropicStream(StreamParser):
    """One Messages stream, typed events in (see :class:`StreamTranslator`), ended by
    ``message_stop``."""

    def __init__(self, *, provider: str, model: str, created: int) -> None:
        super().__init__(model=model, created=created)
        self._translator = StreamTranslator(provider=provider, created=created)

    def feed(self, event: ServerSentEvent) -> list[ChatCompletionChunk]:
        """The chunks one stream event stands for; an ``error`` event raises its error."""
        payload = decode_json(event.data, provider=self._translator.provider)
        if event.event == "error" and not (isinstance(payload, dict) and "type" in payload):
            payload = {"type": "error", "error": payload}
        chunks = self._translator.feed(payload)
        self.done = self._translator.done
        return chunks

    def end(self) -> Sequence[ChatCompletionChunk]:
        raise MalformedResponse(f"{self._translator.provider}: stream ended before message_stop")


class AnthropicProvider(HTTPProvider):
    """Chat completions served by Anthropic's Messages API."""

    type_name = "anthropic"
    options_model = AnthropicOptions
    default_base_url = DEFAULT_BASE_URL

    @property
    def anthropic_options(self) -> AnthropicOptions:
        """The validated ``options``."""
        assert isinstance(self.options, AnthropicOptions)
        return self.options

    def request_headers(self, *, stream: bool) -> dict[str, str]:
        """Auth, version and content negotiation; configured headers win, whatever their case."""
        headers = {
            "Accept": "text/event-stream" if stream else "application/json",
            "anthropic-version": self.anthropic_options.api_version,
        }
        if self.anthropic_options.betas:
            headers["anthropic-beta"] = ",".join(self.anthropic_options.betas)
        if self.settings.api_key and (key := self.settings.api_key.get_secret_value()):
            headers["x-api-key"] = key
        configured = {name.lower() for name in self.settings.headers}
        headers = {name: v for name, v in headers.items() if name.lower() not in configured}
        headers.update(self.settings.headers)
        return headers

    def build_request(
        self, request: ChatCompletionRequest, *, model: str, stream: bool
    ) -> UpstreamRequest:
        """The HTTP request for one call, carrying this provider's timeouts."""
        body = messages_body(
            request,
            model=model,
            default_max_tokens=self.anthropic_options.default_max_tokens,
            stream=stream,
        )
        return UpstreamRequest.post_json(
            f"{self.base_url}/v1/messages",
            json_body=body,
            headers=self.request_headers(stream=stream),
            timeout=request_timeout(self.settings),
        )

    def error_from_payload(
        self, payload: object, *, status_code: int, headers: Mapping[str, str]
    ) -> ProviderError:
        """The error for a non-2xx answer, keeping Anthropic's message."""
        retry_after = None
        if status_code == 429:
            retry_after = retry_after_seconds(headers)
            if retry_after is None:
                retry_after = ratelimit_reset_seconds(headers)
        return error_from_payload(
            payload, provider=self.name, status_code=status_code, retry_after=retry_after
        )

    def parse_completion(
        self, content: bytes | str, *, model: str = "", created: int
    ) -> ChatCompletion:
        """A 2xx body as a ``chat.completion``; an error object in it raises its error."""
        payload = decode_json(content, provider=self.name)
        if isinstance(payload, dict) and payload.get("type") == "error":
            raise error_from_payload(payload, provider=self.name)
        return completion_from_message(payload, provider=self.name, created=created)

    def stream_parser(self, *, model: str, created: int) -> AnthropicStream:
        return AnthropicStream(provider=self.name, model=model, created=created)

    async def list_models(self) -> list[str] | None:
        """The model ids of ``GET /v1/models``, every page."""
        ids: list[str] = []
        params: dict[str, str | int] = {"limit": 1000}
        while True:
            payload = await self.get_json(f"{self.base_url}/v1/models", params=params)
            try:
                page = [str(model["id"]) for model in payload["data"]]
                more = bool(payload.get("has_more")) and bool(page)
            except (KeyError, TypeError) as exc:
                raise MalformedResponse(f"{self.name}: not a model list: {exc}") from exc
            ids += page
            if not more:
                return ids
            params["after_id"] = page[-1]
