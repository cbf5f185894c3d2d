"""Gemini's ``GenerateContentResponse`` read back as chat completions and chunks.

Pure translation, no I/O. A response's ``candidates`` become choices: the
text parts (thought parts left out) their content, the ``functionCall`` parts
their tool calls with JSON-string arguments and an id (Gemini's own when it
sends one, else :func:`~relayq.providers.gemini_request.synthetic_call_id`).
``usageMetadata`` becomes usage, thinking tokens counted as completion tokens
(as OpenAI counts reasoning tokens) and also reported as
``completion_tokens_details.reasoning_tokens``.

Finish reasons: ``STOP`` is ``stop`` (``tool_calls`` when the candidate called
functions), ``MAX_TOKENS`` is ``length``, the safety family (``SAFETY``,
``RECITATION``, ``BLOCKLIST``, ``PROHIBITED_CONTENT``, ``SPII``, the
``IMAGE_*`` blocks) is ``content_filter``, anything else ``stop``; Gemini's own
reason stays on the choice as ``native_finish_reason``.

A prompt Gemini blocks comes back as ``promptFeedback.blockReason`` with no
candidates. It raises :class:`~relayq.providers.errors.InvalidRequest`, the
way Azure OpenAI answers a filtered prompt with a 400: the same prompt will be
blocked again, so it is neither retried nor counted against the provider.

Streams: every event is a whole ``GenerateContentResponse`` holding the next
piece of text. Gemini has no end marker (the stream ends when the connection
closes) and older models repeat ``finishReason`` on every event, so
:class:`GeminiStream` sends content as it comes and holds the finish reasons
and the latest (cumulative) usage for one last chunk, built by
:meth:`GeminiStream.finish` once the body has ended; a body that ended before
a candidate had a finish reason raises.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from relayq.providers.errors import InvalidRequest, MalformedResponse
from relayq.providers.gemini_request import synthetic_call_id
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

__all__ = ["GeminiStream", "finish_reason", "parse_completion", "usage"]

_CONTENT_FILTER = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
    }
)


def finish_reason(native: str, *, called_functions: bool) -> str:
    """OpenAI's finish reason for Gemini's ``finishReason``."""
    if native == "MAX_TOKENS":
        return "length"
    if native in _CONTENT_FILTER:
        return "content_filter"
    return "tool_calls" if called_functions else "stop"


def _count(value: object, *, default: int = 0) -> int:
    """A count or index from the response; MalformedResponse when it is not a number."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MalformedResponse(f"Gemini sent {value!r} where a number belongs")
    return int(value)


def usage(metadata: object) -> Usage | None:
    """``usageMetadata`` as usage; None when there is none."""
    if not isinstance(metadata, dict):
        return None
    prompt = _count(metadata.get("promptTokenCount"))
    thoughts = _count(metadata.get("thoughtsTokenCount"))
    completion = _count(metadata.get("candidatesTokenCount")) + thoughts
    total = _count(metadata.get("totalTokenCount"), default=prompt + completion)
    details: dict[str, Any] = {}
    if thoughts:
        details["completion_tokens_details"] = {"reasoning_tokens": thoughts}
    if cached := _count(metadata.get("cachedContentTokenCount")):
        details["prompt_tokens_details"] = {"cached_tokens": cached}
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=total, **details)


def _check_prompt(payload: dict[str, Any]) -> None:
    """Raise for a blocked prompt (feedback with a block reason and no candidates)."""
    feedback = payload.get("promptFeedback")
    if payload.get("candidates") or not isinstance(feedback, dict):
        return
    if reason := feedback.get("blockReason"):
        detail = feedback.get("blockReasonMessage") or "the prompt was blocked"
        raise InvalidRequest(f"Gemini blocked the prompt ({reason}): {detail}")


def _model_name(payload: dict[str, Any], model: str) -> str:
    version = payload.get("modelVersion")
    return str(version).removeprefix("models/") if version else model


def _completion_id(payload: dict[str, Any]) -> str:
    response_id = payload.get("responseId")
    return f"chatcmpl-{response_id}" if response_id else f"chatcmpl-{uuid.uuid4().hex}"


def _parts(candidate: dict[str, Any]) -> list[dict[str, Any]]:
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    if parts is None:
        return []
    if not isinstance(parts, list) or not all(isinstance(part, dict) for part in parts):
        raise MalformedResponse("Gemini candidate content parts are not a list of objects")
    return parts


def _split(parts: list[dict[str, Any]], *, first_call: int) -> tuple[str | None, list[ToolCall]]:
    """The text and the tool calls in ``parts``; calls numbered from ``first_call``."""
    texts: list[str] = []
    calls: list[ToolCall] = []
    for part in parts:
        call = part.get("functionCall")
        if isinstance(call, dict):
            name = str(call.get("name") or "")
            call_id = call.get("id") or synthetic_call_id(first_call + len(calls), name)
            arguments = json.dumps(call.get("args") or {}, ensure_ascii=False)
            calls.append(
                ToolCall(id=str(call_id), function=FunctionCall(name=name, arguments=arguments))
            )
        elif isinstance(part.get("text"), str) and not part.get("thought"):
            texts.append(part["text"])
    return ("".join(texts) if texts else None), calls


def parse_completion(payload: object, *, model: str, created: int) -> ChatCompletion:
    """A whole ``GenerateContentResponse`` as a ``chat.completion``."""
    if not isinstance(payload, dict):
        raise MalformedResponse("Gemini response is not a JSON object")
    _check_prompt(payload)
    candidates = payload.get("candidates")
    if not isinstance(candidates, list) or not candidates:
        raise MalformedResponse("Gemini response has no candidates")
    choices = []
    for position, candidate in enumerate(candidates):
        if not isinstance(candidate, dict):
            raise MalformedResponse("Gemini candidate is not a JSON object")
        text, calls = _split(_parts(candidate), first_call=0)
        native = str(candidate.get("finishReason") or "STOP")
        message = ResponseMessage(
            content=text if text is not None or calls else "", tool_calls=calls or None
        )
        choices.append(
            Choice(
                index=_count(candidate.get("index"), default=position),
                message=message,
                finish_reason=finish_reason(native, called_functions=bool(calls)),
                native_finish_reason=native,
            )
        )
    return ChatCompletion(
        id=_completion_id(payload),
        created=created,
        model=_model_name(payload, model),
        choices=choices,
        usage=usage(payload.get("usageMetadata")),
    )


@dataclass
class _Candidate:
    calls: int = 0
    finish: str | None = None


@dataclass
class GeminiStream:
    """Turns one stream's events into chunks; one instance per stream."""

    model: str
    created: int
    id: str | None = None
    _candidates: dict[int, _Candidate] = field(default_factory=dict, init=False)
    _usage: Usage | None = field(default=None, init=False)

    def feed(self, payload: object) -> ChatCompletionChunk | None:
        """The chunk for one event; None when it carries no new content."""
        if not isinstance(payload, dict):
            raise MalformedResponse("Gemini stream event is not a JSON object")
        _check_prompt(payload)
        if self.id is None:
            self.id = _completion_id(payload)
            self.model = _model_name(payload, self.model)
        self._usage = usage(payload.get("usageMetadata")) or self._usage
        candidates = payload.get("candidates") or []
        if not isinstance(candidates, list):
            raise MalformedResponse("Gemini stream event candidates are not a list")
        choices = [
            self._delta(candidate, position) for position, candidate in enumerate(candidates)
        ]
        sent = [choice for choice in choices if choice is not None]
        return self._chunk(sent) if sent else None

    def finish(self) -> ChatCompletionChunk:
        """The last chunk, after the body ended: every finish reason, and the usage."""
        unfinished = [i for i, state in self._candidates.items() if state.finish is None]
        if not self._candidates or unfinished:
            raise MalformedResponse("Gemini stream ended before a finishReason")
        choices = [
            ChunkChoice(
                index=index,
                delta=ChunkDelta(),
                finish_reason=finish_reason(str(state.finish), called_functions=state.calls > 0),
                native_finish_reason=state.finish,
            )
            for index, state in sorted(self._candidates.items())
        ]
        chunk = self._chunk(choices)
        chunk.usage = self._usage
        return chunk

    def _delta(self, candidate: object, position: int) -> ChunkChoice | None:
        if not isinstance(candidate, dict):
            raise MalformedResponse("Gemini candidate is not a JSON object")
        index = _count(candidate.get("index"), default=position)
        state = self._candidates.get(index)
        first = state is None
        if state is None:
            state = self._candidates[index] = _Candidate()
        text, calls = _split(_parts(candidate), first_call=state.calls)
        delta = ChunkDelta(role="assistant" if first else None, content=text)
        if calls:
            delta.tool_calls = [
                {"index": state.calls + offset, **call.model_dump()}
                for offset, call in enumerate(calls)
            ]
            state.calls += len(calls)
        if candidate.get("finishReason"):
            state.finish = str(candidate["finishReason"])
        if not first and text is None and not calls:
            return None
        return ChunkChoice(index=index, delta=delta)

    def _chunk(self, choices: list[ChunkChoice]) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=self.id or _completion_id({}),
            created=self.created,
            model=self.model,
            choices=choices,
        )
