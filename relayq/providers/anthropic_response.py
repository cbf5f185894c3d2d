"""Anthropic's answers as OpenAI's: a Message, its stream events and its error bodies.

Pure translation, no I/O. :func:`completion_from_message` turns a Messages API
``message`` into a ``chat.completion``; :class:`StreamTranslator` turns one
stream's events (``message_start``, ``content_block_start`` /
``content_block_delta`` / ``content_block_stop``, ``message_delta``,
``message_stop``, ``ping``, ``error``) into ``chat.completion.chunk`` objects as
OpenAI streams them: the role first, text deltas, tool-call deltas (index, id
and name, then argument fragments), a finish chunk, then a usage chunk with
empty ``choices``. :func:`error_from_payload` maps Anthropic's
``{"type": "error", "error": {"type", "message"}}`` to the error tree.

Text blocks become the message content, ``tool_use`` blocks its tool calls
(``arguments`` = the JSON of ``input``); thinking, redacted thinking and
server-tool blocks (and their deltas) are not carried. Usage: ``prompt_tokens``
is ``input_tokens`` plus both cache counts (Anthropic counts cached input
apart, OpenAI within), with ``prompt_tokens_details.cached_tokens`` (cache
reads) and ``cache_creation_tokens`` (cache writes) when Anthropic reports
them; ``output_tokens_details.thinking_tokens`` becomes
``completion_tokens_details.reasoning_tokens``.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from relayq.providers.errors import (
    AuthenticationFailed,
    MalformedResponse,
    ProviderError,
    error_for_status,
    vendor_message,
)
from relayq.schemas.chat import (
    ChatCompletion,
    ChatCompletionChunk,
    Choice,
    ChunkChoice,
    ChunkDelta,
    FunctionCall,
    ResponseMessage,
    ToolCall,
    Usage,
)

__all__ = [
    "FINISH_REASONS",
    "StreamTranslator",
    "completion_from_message",
    "error_from_payload",
    "finish_reason",
]

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
"""OpenAI's ``finish_reason`` for each Anthropic ``stop_reason``; others read as ``stop``."""

_STATUS_BY_ERROR_TYPE = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
"""The HTTP status Anthropic documents for each error type, to classify stream errors."""


class _Usage(BaseModel):
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    output_tokens_details: dict[str, Any] | None = None


class _Block(BaseModel):
    type: str
    text: str | None = None
    id: str | None = None
    name: str | None = None
    input: Any = None


class _Message(BaseModel):
    id: str
    model: str
    content: list[_Block]
    stop_reason: str | None = None
    usage: _Usage


class _Delta(BaseModel):
    type: str | None = None
    text: str | None = None
    partial_json: str | None = None
    stop_reason: str | None = None


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True)

    type: str
    index: int = 0
    message: _Message | None = None
    content_block: _Block | None = None
    delta: _Delta | None = None
    usage: _Usage | None = None


def finish_reason(stop_reason: str | None) -> str | None:
    """OpenAI's finish reason for an Anthropic stop reason (None while unknown)."""
    return None if stop_reason is None else FINISH_REASONS.get(stop_reason, "stop")


def _usage(usage: _Usage) -> Usage:
    cache_write = usage.cache_creation_input_tokens
    cache_read = usage.cache_read_input_tokens
    prompt = (usage.input_tokens or 0) + (cache_write or 0) + (cache_read or 0)
    completion = usage.output_tokens or 0
    fields: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if cache_write is not None or cache_read is not None:
        fields["prompt_tokens_details"] = {
            "cached_tokens": cache_read or 0,
            "cache_creation_tokens": cache_write or 0,
        }
    thinking = (usage.output_tokens_details or {}).get("thinking_tokens")
    if isinstance(thinking, int):
        fields["completion_tokens_details"] = {"reasoning_tokens": thinking}
    return Usage.model_validate(fields)


def _tool_call(block: _Block) -> ToolCall:
    if not block.id or not block.name:
        raise MalformedResponse("tool_use block without an id or a name")
    arguments = json.dumps(block.input if block.input is not None else {})
    return ToolCall(id=block.id, function=FunctionCall(name=block.name, arguments=arguments))


def completion_from_message(payload: Any, *, provider: str, created: int) -> ChatCompletion:
    """A Messages API ``message`` object as a ``chat.completion`` created at ``created``."""
    try:
        message = _Message.model_validate(payload)
    except ValidationError as exc:
        raise MalformedResponse(f"{provider}: not a Messages API message: {exc}") from exc
    text = "".join(block.text or "" for block in message.content if block.type == "text")
    calls = [_tool_call(block) for block in message.content if block.type == "tool_use"]
    answer = ResponseMessage(content=text if text or not calls else None, tool_calls=calls or None)
    return ChatCompletion(
        id=message.id,
        created=created,
        model=message.model,
        choices=[Choice(message=answer, finish_reason=finish_reason(message.stop_reason))],
        usage=_usage(message.usage),
    )


def error_from_payload(
    payload: object,
    *,
    provider: str,
    status_code: int | None = None,
    retry_after: float | None = None,
) -> ProviderError:
    """The error an Anthropic error body (or ``error`` stream event) stands for.

    With an HTTP status the status decides, as for every vendor; without one
    (a stream event, an error in a 2xx body) the error ``type`` does, and the
    error carries no status. ``billing_error`` is :class:`AuthenticationFailed`
    either way: the account, not the request, is at fault, as with a bad key.
    """
    error = payload.get("error") if isinstance(payload, dict) else None
    kind = error.get("type") if isinstance(error, dict) else None
    fallback = f"upstream answered HTTP {status_code}" if status_code else "error event"
    message = vendor_message(payload) or f"{provider}: {fallback}"
    if kind == "billing_error":
        return AuthenticationFailed(message, status_code=status_code)
    if status_code is not None:
        return error_for_status(status_code, message, retry_after=retry_after)
    mapped = error_for_status(_STATUS_BY_ERROR_TYPE.get(str(kind), 500), message)
    mapped.status_code = None  # the type only classified it; no status came over the wire
    return mapped


class StreamTranslator:
    """Translates one stream's events, in order, into chunks; one per response.

    :attr:`done` turns true at ``message_stop``; a stream that ends before it
    was cut. ``created`` stamps every chunk (Anthropic sends no timestamp).
    """

    def __init__(self, *, provider: str, created: int) -> None:
        self.provider = provider
        self.created = created
        self.done = False
        self._id = ""
        self._model = ""
        self._usage = _Usage()
        self._stop_reason: str | None = None
        self._tool_index: dict[int, int] = {}  # content block index -> OpenAI tool-call index

    def feed(self, payload: Any) -> list[ChatCompletionChunk]:
        """The chunks one decoded event stands for; an ``error`` event raises its error."""
        if isinstance(payload, dict) and payload.get("type") == "error":
            raise error_from_payload(payload, provider=self.provider)
        try:
            event = _Event.model_validate(payload)
        except ValidationError as exc:
            raise MalformedResponse(f"{self.provider}: not a stream event: {exc}") from exc
        if event.type == "message_start":
            return self._start(event)
        if not self._id and event.type.startswith(("content_block", "message_")):
            raise MalformedResponse(f"{self.provider}: {event.type} before message_start")
        if event.type == "content_block_start":
            return self._block_start(event)
        if event.type == "content_block_delta":
            return self._block_delta(event)
        if event.type == "message_delta":
            self._message_delta(event)
        elif event.type == "message_stop":
            self.done = True
            usage = ChatCompletionChunk(
                id=self._id,
                created=self.created,
                model=self._model,
                choices=[],
                usage=_usage(self._usage),
            )
            return [self._chunk(ChunkDelta(), finish_reason(self._stop_reason) or "stop"), usage]
        return []  # ping, content_block_stop, and event types added after this was written

    def _chunk(self, delta: ChunkDelta, finish: str | None = None) -> ChatCompletionChunk:
        choice = ChunkChoice(delta=delta, finish_reason=finish)
        return ChatCompletionChunk(
            id=self._id, created=self.created, model=self._model, choices=[choice]
        )

    def _start(self, event: _Event) -> list[ChatCompletionChunk]:
        if event.message is None:
            raise MalformedResponse(f"{self.provider}: message_start without a message")
        self._id, self._model = event.message.id, event.message.model
        self._usage = event.message.usage
        return [self._chunk(ChunkDelta(role="assistant", content=""))]

    def _block_start(self, event: _Event) -> list[ChatCompletionChunk]:
        block = event.content_block
        if block is None:
            raise MalformedResponse(f"{self.provider}: content_block_start without a block")
        if block.type == "text" and block.text:
            return [self._chunk(ChunkDelta(content=block.text))]
        if block.type != "tool_use":
            return []
        call = _tool_call(block)
        index = self._tool_index[event.index] = len(self._tool_index)
        # Anthropic starts a tool_use with empty input and streams it as deltas.
        arguments = call.function.arguments if block.input else ""
        function = {"name": call.function.name, "arguments": arguments}
        delta = {"index": index, "id": call.id, "type": "function", "function": function}
        return [self._chunk(ChunkDelta(tool_calls=[delta]))]

    def _block_delta(self, event: _Event) -> list[ChatCompletionChunk]:
        delta = event.delta
        if delta is None:
            raise MalformedResponse(f"{self.provider}: content_block_delta without a delta")
        if delta.type == "text_delta" and delta.text:
            return [self._chunk(ChunkDelta(content=delta.text))]
        if delta.type == "input_json_delta" and delta.partial_json:
            if event.index not in self._tool_index:
                raise MalformedResponse(f"{self.provider}: input_json_delta outside a tool_use")
            fragment: dict[str, Any] = {
                "index": self._tool_index[event.index],
                "function": {"arguments": delta.partial_json},
            }
            return [self._chunk(ChunkDelta(tool_calls=[fragment]))]
        return []

    def _message_delta(self, event: _Event) -> None:
        if event.delta is not None and event.delta.stop_reason is not None:
            self._stop_reason = event.delta.stop_reason
        if event.usage is not None:
            # message_delta counts are cumulative: each one replaces what came before.
            update = event.usage.model_dump(exclude_none=True)
            self._usage = self._usage.model_copy(update=update)
