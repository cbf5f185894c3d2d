"""A streamed ``chat.completion`` read for another API's event stream.

relayq's pipeline streams OpenAI chat completion chunks; the Messages and
Responses APIs stream events of their own. :class:`ChunkEvents` reads one
answer's chunks (the first choice only) and hands its text and its tool
call fragments to its dialect's hooks, keeping the finish reason and the
usage (the chunks report usage at their end only) for the events that end
the stream. :func:`chunks_of` reads the chunks back out of the ``data:``
lines a worker rendered for a waiting caller.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import orjson

__all__ = ["ChunkEvents", "SSEEvent", "chunks_of"]

SSEEvent = tuple[str, dict[str, Any]]
"""An SSE event: its name and its data."""

_DATA = b"data: "


def chunks_of(sse: bytes) -> list[dict[str, Any]]:
    """The chunks of OpenAI-style ``data: {chunk}`` lines (``[DONE]`` skipped)."""
    chunks: list[dict[str, Any]] = []
    for line in sse.split(b"\n"):
        if line.startswith(_DATA) and line != b"data: [DONE]":
            chunks.append(orjson.loads(line[len(_DATA) :]))
    return chunks


class ChunkEvents(ABC):
    """One answer's chunks, in order, as a dialect's events."""

    def __init__(self) -> None:
        self._finish: str | None = None
        """The first choice's ``finish_reason``, once a chunk gave it."""
        self._usage: dict[str, Any] | None = None
        """The answer's usage, once a chunk gave it."""

    def feed(self, chunk: dict[str, Any]) -> list[SSEEvent]:
        """The events ``chunk`` adds (the stream's start with the first)."""
        events = self._start(chunk.get("model"))
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            text = delta.get("content") or delta.get("refusal")
            if isinstance(text, str) and text:
                events.extend(self._on_text(text))
            for call in delta.get("tool_calls") or []:
                events.extend(self._on_tool_call(call))
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
        return events

    @abstractmethod
    def finish(self) -> list[SSEEvent]:
        """The events that end the stream once its last chunk was fed."""

    @abstractmethod
    def _start(self, model: Any) -> list[SSEEvent]:
        """The events that open the stream, the first time only (``model``: the chunk's)."""

    @abstractmethod
    def _on_text(self, text: str) -> list[SSEEvent]:
        """The events of a piece of the answer's text."""

    @abstractmethod
    def _on_tool_call(self, call: dict[str, Any]) -> list[SSEEvent]:
        """The events of a tool call's fragment (a chunk's ``delta.tool_calls[i]``)."""
