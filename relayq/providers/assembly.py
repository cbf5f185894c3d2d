"""Streams and whole answers, each made from the other.

Workers stream the calls of streamed jobs (so followers see tokens as they
come) and store the whole ``chat.completion`` they add up to; a job answered whole (from the
cache) is replayed to a streaming caller as chunks, and so is an upstream's
whole answer to a call that asked it to stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from relayq.schemas.chat import (
    ChatCompletion,
    ChatCompletionChunk,
    Choice,
    ResponseMessage,
    Usage,
)

__all__ = ["CompletionAssembler", "chunk_text", "chunks_from_completion", "completion_chunks"]

_CHUNK_FIELDS = frozenset({"id", "object", "created", "model", "choices", "usage"})
_DELTA_FIELDS = frozenset({"role", "content", "tool_calls"})


@dataclass
class _ChoiceParts:
    content: list[str] = field(default_factory=list)
    refusal: list[str] = field(default_factory=list)
    tool_calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    finish_reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class CompletionAssembler:
    """Adds ``chat.completion.chunk`` objects up to the ``chat.completion`` they stream."""

    def __init__(self) -> None:
        self._first: ChatCompletionChunk | None = None
        self._choices: dict[int, _ChoiceParts] = {}
        self._usage: Usage | None = None
        self._extra: dict[str, Any] = {}

    def add(self, chunk: ChatCompletionChunk) -> None:
        if self._first is None:
            self._first = chunk
        if chunk.usage is not None:
            self._usage = chunk.usage
        self._extra.update(chunk.model_extra or {})
        for choice in chunk.choices:
            parts = self._choices.setdefault(choice.index, _ChoiceParts())
            delta = choice.delta
            if delta.content:
                parts.content.append(delta.content)
            refusal = (delta.model_extra or {}).get("refusal")
            if isinstance(refusal, str):
                parts.refusal.append(refusal)
            for call in delta.tool_calls or []:
                _merge_tool_call(parts.tool_calls, call)
            for name, value in (delta.model_extra or {}).items():
                if name != "refusal" and isinstance(value, str):
                    parts.extra[name] = parts.extra.get(name, "") + value
            if choice.finish_reason is not None:
                parts.finish_reason = choice.finish_reason

    def completion(self) -> ChatCompletion:
        """The whole answer; the stream must have produced at least one chunk."""
        if self._first is None:
            raise ValueError("no chunks to assemble")
        choices = [
            Choice(index=index, message=_message(parts), finish_reason=parts.finish_reason)
            for index, parts in sorted(self._choices.items())
        ]
        return ChatCompletion.model_validate(
            {
                **self._extra,
                "id": self._first.id,
                "created": self._first.created,
                "model": self._first.model,
                "choices": [c.model_dump(exclude_none=True) for c in choices],
                "usage": self._usage.model_dump() if self._usage else None,
            }
        )


def _message(parts: _ChoiceParts) -> ResponseMessage:
    tool_calls = [_tool_call(call) for _, call in sorted(parts.tool_calls.items())]
    return ResponseMessage.model_validate(
        {
            **parts.extra,
            "content": "".join(parts.content) if parts.content or not tool_calls else None,
            "tool_calls": tool_calls or None,
            "refusal": "".join(parts.refusal) or None,
        }
    )


def _merge_tool_call(calls: dict[int, dict[str, Any]], delta: dict[str, Any]) -> None:
    index = int(delta.get("index", len(calls)))
    call = calls.setdefault(index, {"id": "", "name": "", "arguments": []})
    if delta.get("id"):
        call["id"] = delta["id"]
    function = delta.get("function") or {}
    if function.get("name"):
        call["name"] = function["name"]
    if function.get("arguments"):
        call["arguments"].append(function["arguments"])


def _tool_call(call: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": call["id"],
        "type": "function",
        "function": {"name": call["name"], "arguments": "".join(call["arguments"])},
    }


def chunks_from_completion(completion: dict[str, Any]) -> list[dict[str, Any]]:
    """A whole ``chat.completion`` as the chunks a stream of it would have sent.

    The completion's other fields (``system_fingerprint``, a vendor's
    ``citations``) ride on every chunk, as vendors stream them, and a
    message's other fields (``refusal``, ``reasoning_content``) on its content
    chunk, so :class:`CompletionAssembler` adds the chunks back up to the
    completion; per-choice fields (``logprobs``) are not carried.
    """
    extra = {k: v for k, v in completion.items() if k not in _CHUNK_FIELDS and v is not None}
    base = {
        **extra,
        "id": completion["id"],
        "object": "chat.completion.chunk",
        "created": completion["created"],
        "model": completion["model"],
    }
    chunks: list[dict[str, Any]] = []
    for choice in completion.get("choices", []):
        message = choice.get("message") or {}
        index = choice.get("index", 0)
        chunks.append({**base, "choices": [{"index": index, "delta": {"role": "assistant"}}]})
        delta = {k: v for k, v in message.items() if k not in _DELTA_FIELDS and v is not None}
        if message.get("content"):
            delta["content"] = message["content"]
        if message.get("tool_calls"):
            delta["tool_calls"] = [
                {**call, "index": i} for i, call in enumerate(message["tool_calls"])
            ]
        if delta:
            chunks.append({**base, "choices": [{"index": index, "delta": delta}]})
        finish = {"index": index, "delta": {}, "finish_reason": choice.get("finish_reason")}
        chunks.append({**base, "choices": [finish]})
    if completion.get("usage"):
        chunks.append({**base, "choices": [], "usage": completion["usage"]})
    return chunks


def completion_chunks(completion: ChatCompletion) -> list[ChatCompletionChunk]:
    """A whole answer as the chunks a stream of it would have sent (see
    :func:`chunks_from_completion`)."""
    chunks = chunks_from_completion(completion.model_dump(exclude_none=True))
    return [ChatCompletionChunk.model_validate(chunk) for chunk in chunks]


def chunk_text(chunk: ChatCompletionChunk) -> str:
    """The text a chunk adds (first choice), for followers that want just text."""
    return "".join(choice.delta.content or "" for choice in chunk.choices if choice.index == 0)
