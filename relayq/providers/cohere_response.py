"""Cohere Chat API v2 answers read back as chat completions and chunks.

Pure translation, no I/O. A chat response's ``message.content`` text items
become the content (``thinking`` items are left out), its ``tool_calls`` are
OpenAI-shaped already; the ``tool_plan`` Cohere writes before calling tools is
the content when there is no text, so the next request can hand it back.

Finish reasons: ``COMPLETE`` and ``STOP_SEQUENCE`` are ``stop``,
``MAX_TOKENS`` is ``length``, ``TOOL_CALL`` is ``tool_calls``; ``ERROR`` raises
:class:`~relayq.providers.errors.ProviderUnavailable` and ``TIMEOUT``
:class:`~relayq.providers.errors.ProviderTimeout` (Cohere gave up generating;
another try may succeed). Cohere's own reason stays on the choice as
``native_finish_reason``.

Usage: Cohere reports ``billed_units`` (the tokens of the caller's messages
and of the answer, as charged) and ``tokens`` (everything the model read,
Cohere's own instructions included). Prompt and completion tokens are the
billed ones, falling back to ``tokens`` when no billed units are given.

Streams: :class:`CohereStream` turns the typed events into chunks:
``message-start`` the role, ``content-delta`` and ``tool-plan-delta`` text,
``tool-call-start`` and ``tool-call-delta`` OpenAI's streamed tool calls,
``message-end`` the last chunk with the finish reason and usage (or the error
it reports). Other events (``content-start``, ``citation-*``, ``debug``...)
carry nothing to send.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from relayq.providers.errors import (
    MalformedResponse,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
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

__all__ = ["CohereStream", "finish_reason", "parse_chat", "usage"]

_FINISH_REASONS = {
    "COMPLETE": "stop",
    "STOP_SEQUENCE": "stop",
    "MAX_TOKENS": "length",
    "TOOL_CALL": "tool_calls",
}


def finish_reason(native: object, *, error: object = None) -> str:
    """OpenAI's finish reason for Cohere's; raises for a generation that failed."""
    if error or native in ("ERROR", "TIMEOUT"):
        message = str(error or f"Cohere stopped the generation: {native}")
        failure: type[ProviderError] = (
            ProviderTimeout if native == "TIMEOUT" else ProviderUnavailable
        )
        raise failure(message)
    return _FINISH_REASONS.get(str(native), "stop")


def usage(payload: object) -> Usage | None:
    """Cohere's ``usage`` as usage; None when there is none."""
    if not isinstance(payload, dict):
        return None
    billed = _object(payload.get("billed_units"))
    tokens = _object(payload.get("tokens"))
    counts = billed if billed.get("input_tokens") is not None else tokens
    prompt = _count(counts.get("input_tokens"))
    completion = _count(counts.get("output_tokens"))
    details: dict[str, Any] = {}
    if cached := _count(payload.get("cached_tokens")):
        details["prompt_tokens_details"] = {"cached_tokens": cached}
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        **details,
    )


def _count(value: object) -> int:
    """A token count (Cohere sends numbers, at times as floats); MalformedResponse if not one."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MalformedResponse(f"Cohere sent {value!r} where a token count belongs")
    return int(value)


def _tool_call(call: object) -> ToolCall:
    fields = _object(call)
    function = _object(fields.get("function"))
    if not fields.get("id") or not function.get("name"):
        raise MalformedResponse(f"Cohere tool call without an id or a name: {call!r}")
    arguments = str(function.get("arguments") or "{}")
    return ToolCall(
        id=str(fields["id"]), function=FunctionCall(name=str(function["name"]), arguments=arguments)
    )


def _object(value: object) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty one (a missing field reads as empty)."""
    return value if isinstance(value, dict) else {}


def _text(content: object) -> str | None:
    if not isinstance(content, list):
        return None
    texts = [
        str(item.get("text", ""))
        for item in content
        if isinstance(item, dict) and item.get("type") == "text"
    ]
    return "".join(texts) if texts else None


def parse_chat(payload: object, *, model: str, created: int) -> ChatCompletion:
    """A whole v2 chat response as a ``chat.completion``."""
    if not isinstance(payload, dict) or not isinstance(payload.get("message"), dict):
        raise MalformedResponse("Cohere response has no message")
    message = payload["message"]
    native = payload.get("finish_reason")
    reason = finish_reason(native)
    calls = [_tool_call(call) for call in message.get("tool_calls") or []]
    text = _text(message.get("content"))
    if text is None and calls:
        text = message.get("tool_plan") or None
    choice = Choice(
        message=ResponseMessage(
            content=text if text is not None or calls else "", tool_calls=calls or None
        ),
        finish_reason=reason,
        native_finish_reason=native,
    )
    return ChatCompletion(
        id=str(payload.get("id") or "chatcmpl-cohere"),
        created=created,
        model=model,
        choices=[choice],
        usage=usage(payload.get("usage")),
    )


@dataclass
class CohereStream:
    """Turns one stream's events into chunks; one instance per stream."""

    model: str
    created: int
    id: str = "chatcmpl-cohere"
    ended: bool = False

    def feed(self, payload: object) -> ChatCompletionChunk | None:
        """The chunk for one event; None for an event that carries nothing to send."""
        if not isinstance(payload, dict) or not isinstance(payload.get("type"), str):
            raise MalformedResponse("Cohere stream event has no type")
        kind = payload["type"]
        delta = _object(payload.get("delta"))
        message = _object(delta.get("message"))
        if kind == "message-start":
            self.id = str(payload.get("id") or self.id)
            return self._chunk(ChunkChoice(delta=ChunkDelta(role="assistant", content="")))
        if kind == "content-delta":
            text = _object(message.get("content")).get("text")
            return self._chunk(ChunkChoice(delta=ChunkDelta(content=text))) if text else None
        if kind == "tool-plan-delta":
            plan = message.get("tool_plan")
            return self._chunk(ChunkChoice(delta=ChunkDelta(content=plan))) if plan else None
        if kind in ("tool-call-start", "tool-call-delta"):
            return self._tool_call(kind, payload.get("index"), _object(message.get("tool_calls")))
        if kind == "message-end":
            self.ended = True
            native = delta.get("finish_reason")
            choice = ChunkChoice(
                delta=ChunkDelta(),
                finish_reason=finish_reason(native, error=delta.get("error")),
                native_finish_reason=native,
            )
            return self._chunk(choice, usage=usage(delta.get("usage")))
        return None

    def _tool_call(self, kind: str, index: object, call: dict[str, Any]) -> ChatCompletionChunk:
        if not isinstance(index, int):
            raise MalformedResponse(f"Cohere {kind} event has no index")
        function = _object(call.get("function"))
        streamed: dict[str, Any] = {"index": index}
        if kind == "tool-call-start":
            streamed.update(id=call.get("id"), type="function")
            streamed["function"] = {
                "name": function.get("name"),
                "arguments": function.get("arguments") or "",
            }
        else:
            streamed["function"] = {"arguments": function.get("arguments") or ""}
        return self._chunk(ChunkChoice(delta=ChunkDelta(tool_calls=[streamed])))

    def _chunk(self, choice: ChunkChoice, *, usage: Usage | None = None) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=self.id, created=self.created, model=self.model, choices=[choice], usage=usage
        )
