"""Legacy completions streamed: ``text_completion`` chunks through the chat stream's path.

A streamed legacy completion reaches its followers the way a chat stream does
(:mod:`relayq.execution.deltas`): each upstream chunk is carried as a
:class:`~relayq.schemas.chat.ChatCompletionChunk` whose choices hold its text
as ``delta.content`` (what followers' ``text`` is read from) and whose wire
JSON is the upstream's ``text_completion`` chunk itself, so a streaming
caller gets that JSON as the upstream sent it. :class:`TextAssembler` adds the
chunks up to the whole ``text_completion`` the job stores;
:func:`text_chunks` turns a whole answer back into chunks (an upstream that
answered whole, a cached answer replayed to a streaming caller).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from relayq.schemas.chat import ChatCompletionChunk, ChunkChoice, ChunkDelta, Usage
from relayq.schemas.completions import TextChoice, TextCompletion

__all__ = ["TextAssembler", "text_chunk", "text_chunks"]


def text_chunk(payload: Mapping[str, Any], *, wire: str | None = None) -> ChatCompletionChunk:
    """One upstream ``text_completion`` chunk (decoded ``payload``, its JSON ``wire``)."""
    choices = [
        ChunkChoice(
            index=int(choice.get("index") or 0),
            delta=ChunkDelta(content=choice.get("text") or ""),
            finish_reason=choice.get("finish_reason"),
            logprobs=choice.get("logprobs"),
        )
        for choice in payload.get("choices") or []
        if isinstance(choice, Mapping)
    ]
    usage = payload.get("usage")
    chunk = ChatCompletionChunk(
        id=str(payload.get("id") or ""),
        created=int(payload.get("created") or 0),
        model=str(payload.get("model") or ""),
        choices=choices,
        usage=Usage.model_validate(usage) if isinstance(usage, Mapping) else None,
    )
    text = wire if wire is not None else orjson.dumps(dict(payload)).decode()
    return chunk.keep_wire(text)


def text_chunks(completion: Mapping[str, Any]) -> list[ChatCompletionChunk]:
    """A whole ``text_completion`` as the chunks a stream of it would carry: one per
    choice, then one with its usage and no choices."""
    head = {
        "id": completion.get("id", ""),
        "object": "text_completion",
        "created": completion.get("created", 0),
        "model": completion.get("model", ""),
    }
    chunks = [text_chunk({**head, "choices": [choice]}) for choice in completion["choices"]]
    if completion.get("usage") is not None:
        chunks.append(text_chunk({**head, "choices": [], "usage": completion["usage"]}))
    return chunks


@dataclass
class _Parts:
    text: list[str] = field(default_factory=list)
    finish_reason: str | None = None


class TextAssembler:
    """Adds streamed ``text_completion`` chunks (as :func:`text_chunk` made them) up to the
    whole ``text_completion``: each choice's text, finish reason and the usage. Streamed
    ``logprobs`` reach a streaming caller in the chunks but are not added up."""

    def __init__(self) -> None:
        self._head: ChatCompletionChunk | None = None
        self._choices: dict[int, _Parts] = {}
        self._usage: Usage | None = None

    def add(self, chunk: ChatCompletionChunk) -> None:
        if self._head is None:
            self._head = chunk
        for choice in chunk.choices:
            parts = self._choices.setdefault(choice.index, _Parts())
            parts.text.append(choice.delta.content or "")
            if choice.finish_reason is not None:
                parts.finish_reason = choice.finish_reason
        if chunk.usage is not None:
            self._usage = chunk.usage

    def completion(self) -> TextCompletion:
        """The whole answer; ValueError if no chunk came."""
        if self._head is None:
            raise ValueError("no chunks")
        choices = [
            TextChoice(
                text="".join(parts.text),
                index=index,
                finish_reason=parts.finish_reason,
            )
            for index, parts in sorted(self._choices.items())
        ]
        head = self._head
        return TextCompletion(
            id=head.id, created=head.created, model=head.model, choices=choices, usage=self._usage
        )
