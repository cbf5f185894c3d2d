"""The ``cohere`` adapter: Cohere's Chat API v2 (``api.cohere.com``).

Calls ``POST {base_url}/v2/chat`` with a bearer key, ``"stream": true`` for
streams (server-sent events typed by their ``type``). The request is built in
:mod:`relayq.providers.cohere_request`, the answer read in
:mod:`relayq.providers.cohere_response`; :meth:`CohereProvider._send` is the one
place that does I/O. ``list_models`` reads ``GET {base_url}/v1/models?endpoint=chat``
(every page).

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
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from relayq.providers.assembly import completion_chunks
from relayq.providers.base import Provider
from relayq.providers.cohere_request import chat_body
from relayq.providers.cohere_response import CohereStream, parse_chat
from relayq.providers.errors import (
    MalformedResponse,
    ProviderError,
    ProviderUnavailable,
    error_for_status,
)
from relayq.providers.http import (
    UpstreamRequest,
    UpstreamResponse,
    decode_json,
    request_timeout,
    send_checked,
)
from relayq.providers.openai import vendor_message
from relayq.providers.retry_after import retry_after_seconds
from relayq.providers.sse import ServerSentEvent, SSEDecoder
from relayq.schemas.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest

__all__ = ["DEFAULT_BASE_URL", "CohereOptions", "CohereProvider", "error_from_response"]

DEFAULT_BASE_URL = "https://api.cohere.com"
_DONE = "[DONE]"


class CohereOptions(BaseModel):
    """The ``options`` of a ``cohere`` provider: defaults for Cohere's own parameters."""

    model_config = ConfigDict(extra="forbid")

    safety_mode: Literal["CONTEXTUAL", "STRICT", "OFF"] | None = None
    """Cohere's ``safety_mode`` for every call that does not set one."""
    strict_tools: bool | None = None
    """Cohere's ``strict_tools`` (tool calls forced to follow the tool's schema)."""
    priority: int | None = None
    """Cohere's ``priority`` (0, the default, is the highest)."""

    def defaults(self) -> dict[str, Any]:
        """The options set, as Cohere body fields."""
        return self.model_dump(exclude_none=True)


def error_from_response(
    status_code: int, headers: Mapping[str, str], content: bytes, *, provider: str
) -> ProviderError:
    """The error for a non-2xx answer, keeping Cohere's message."""
    try:
        payload = json.loads(content)
    except ValueError:
        payload = None
    message = vendor_message(payload) or f"{provider}: upstream answered HTTP {status_code}"
    if status_code == 499:
        return ProviderUnavailable(message, status_code=status_code)
    retry_after = retry_after_seconds(headers) if status_code == 429 else None
    return error_for_status(status_code, message, retry_after=retry_after)


class CohereProvider(Provider):
    """Cohere ``/v2/chat`` with a bearer key."""

    type_name = "cohere"
    options_model = CohereOptions
    options: CohereOptions

    @property
    def base_url(self) -> str:
        """The configured base URL (or Cohere's), without a trailing slash."""
        return (self.settings.base_url or DEFAULT_BASE_URL).rstrip("/")

    def request_headers(self, *, stream: bool) -> dict[str, str]:
        """Auth and content negotiation, then the configured headers, which win."""
        headers = {"Accept": "text/event-stream" if stream else "application/json"}
        if self.settings.api_key and (key := self.settings.api_key.get_secret_value()):
            headers["Authorization"] = f"Bearer {key}"
        headers.update(self.settings.headers)
        return headers

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

    def _error_from_response(
        self, status_code: int, headers: Mapping[str, str], content: bytes
    ) -> ProviderError:
        return error_from_response(status_code, headers, content, provider=self.name)

    @asynccontextmanager
    async def _send(self, http_request: UpstreamRequest) -> AsyncIterator[UpstreamResponse]:
        """Send, raise the mapped error for a non-2xx answer, else yield the open response."""
        async with send_checked(
            self.http, http_request, provider=self.name, on_error=self._error_from_response
        ) as response:
            yield response

    def parse_completion(self, content: bytes | str, *, model: str) -> ChatCompletion:
        """A 2xx body as a ``chat.completion``; an error body in it raises ProviderUnavailable."""
        payload = decode_json(content, provider=self.name)
        if isinstance(payload, dict) and isinstance(payload.get("message"), str):
            raise ProviderUnavailable(vendor_message(payload) or f"{self.name}: error body")
        return parse_chat(payload, model=model, created=int(time.time()))

    async def complete(self, request: ChatCompletionRequest, *, model: str) -> ChatCompletion:
        """One completion, answered as a whole."""
        async with self._send(self.build_request(request, model=model, stream=False)) as response:
            content = await response.aread()
        return self.parse_completion(content, model=model)

    async def stream_from_upstream(
        self, request: ChatCompletionRequest, *, model: str
    ) -> AsyncIterator[ChatCompletionChunk]:
        """One completion as chunks, the finish reason and usage last; ends at ``message-end``

        or with the whole answer, when the upstream sent that instead.
        """
        state = CohereStream(model=model, created=int(time.time()))
        decoder = SSEDecoder()
        async with self._send(self.build_request(request, model=model, stream=True)) as response:
            # Read to the body's end (see the OpenAI adapter: the connection is reused).
            async for line in response.aiter_lines():
                if state.ended:
                    continue
                event = decoder.feed(line)
                if event is not None and (chunk := self._parse_event(event, state)) is not None:
                    yield chunk
            if state.ended:
                return
            last = decoder.flush()
            if last is not None and (chunk := self._parse_event(last, state)) is not None:
                yield chunk
        if decoder.json_body is not None:
            for chunk in completion_chunks(self.parse_completion(decoder.json_body, model=model)):
                yield chunk
            return
        if not state.ended:
            raise MalformedResponse(f"{self.name}: stream ended before message-end")

    def _parse_event(
        self, event: ServerSentEvent, state: CohereStream
    ) -> ChatCompletionChunk | None:
        if event.data.strip() == _DONE:
            return None  # only message-end ends a stream: [DONE] before it is an early end
        payload = decode_json(event.data, provider=self.name)
        if isinstance(payload, dict) and "type" not in payload and "message" in payload:
            raise ProviderUnavailable(vendor_message(payload) or f"{self.name}: stream error")
        return state.feed(payload)

    async def list_models(self) -> list[str]:
        """The names of the models that serve the chat endpoint, every page read."""
        names: list[str] = []
        params = {"endpoint": "chat", "page_size": "1000"}
        while True:
            http_request = UpstreamRequest.get(
                f"{self.base_url}/v1/models",
                params=params,
                headers=self.request_headers(stream=False),
                timeout=request_timeout(self.settings),
            )
            async with self._send(http_request) as response:
                payload = decode_json(await response.aread(), provider=self.name)
            if not isinstance(payload, dict) or not isinstance(payload.get("models"), list):
                raise MalformedResponse(f"{self.name}: model list is not a ListModelsResponse")
            names.extend(str(model.get("name", "")) for model in payload["models"])
            if not (token := payload.get("next_page_token")):
                return names
            params["page_token"] = str(token)
