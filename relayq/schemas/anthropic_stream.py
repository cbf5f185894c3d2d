"""A streamed ``chat.completion`` as Anthropic's Messages stream events.

Pure translation, no I/O. :class:`MessageStream` takes one answer's
``chat.completion.chunk`` objects, in order, and gives the events Anthropic's
SDKs read: ``message_start`` (then a ``ping``), for each content block a
``content_block_start``, its ``content_block_delta`` events (``text_delta``
for text, ``input_json_delta`` for a tool call's argument fragments) and a
``content_block_stop``; then ``message_delta`` with the ``stop_reason`` and
the usage (the final counts: the chunks report usage at their end only, so
``message_start`` counts zero), and ``message_stop``. :func:`error_event` is
the ``error`` event that ends a stream early. Reading the chunks is
:class:`~relayq.schemas.chunk_events.ChunkEvents`'s.
"""

from __future__ import annotations

from typing import Any

from relayq.schemas.anthropic_translation import stop_reason, usage_of
from relayq.schemas.chunk_events import ChunkEvents, SSEEvent

__all__ = ["Event", "MessageStream", "error_event"]

Event = SSEEvent


def error_event(kind: str, message: str) -> Event:
    """Anthropic's ``error`` event, for a stream that ends without its answer."""
    return "error", {"type": "error", "error": {"type": kind, "message": message}}


class MessageStream(ChunkEvents):
    """One answer's chunks as Anthropic's events; the first choice only."""

    def __init__(self, *, message_id: str, model: str) -> None:
        super().__init__()
        self._id = message_id
        self._model = model
        self._started = False
        self._blocks = 0
        self._open: str | None = None
        """The open block's kind: ``text``, ``tool_use`` or none."""
        self._tools: dict[int, int] = {}
        """Block index of each tool call, by the chunks' tool call index."""

    def finish(self) -> list[Event]:
        """The events that end the message: its last block closed, its stop reason, usage."""
        events = self._start(None)
        events.extend(self._close())
        delta = {"stop_reason": stop_reason(self._finish) or "end_turn", "stop_sequence": None}
        usage = usage_of(self._usage)
        events.append(("message_delta", {"type": "message_delta", "delta": delta, "usage": usage}))
        events.append(("message_stop", {"type": "message_stop"}))
        return events

    def _start(self, model: Any) -> list[Event]:
        if self._started:
            return []
        self._started = True
        message: dict[str, Any] = {
            "id": self._id,
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": model if isinstance(model, str) and model else self._model,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return [
            ("message_start", {"type": "message_start", "message": message}),
            ("ping", {"type": "ping"}),
        ]

    def _close(self) -> list[Event]:
        if self._open is None:
            return []
        self._open = None
        index = self._blocks - 1
        return [("content_block_stop", {"type": "content_block_stop", "index": index})]

    def _begin(self, kind: str, block: dict[str, Any]) -> list[Event]:
        events = self._close()
        self._open = kind
        start = {"type": "content_block_start", "index": self._blocks, "content_block": block}
        self._blocks += 1
        events.append(("content_block_start", start))
        return events

    def _on_text(self, text: str) -> list[Event]:
        events = [] if self._open == "text" else self._begin("text", {"type": "text", "text": ""})
        delta = {"type": "text_delta", "text": text}
        index = self._blocks - 1
        events.append(
            ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
        )
        return events

    def _on_tool_call(self, call: dict[str, Any]) -> list[Event]:
        function = call.get("function") or {}
        position = int(call.get("index", 0))
        events: list[Event] = []
        if position not in self._tools:
            block: dict[str, Any] = {
                "type": "tool_use",
                "id": call.get("id") or "",
                "name": function.get("name") or "",
                "input": {},
            }
            events.extend(self._begin("tool_use", block))
            self._tools[position] = self._blocks - 1
        arguments = function.get("arguments")
        if arguments:
            delta = {"type": "input_json_delta", "partial_json": arguments}
            data = {"type": "content_block_delta", "index": self._tools[position], "delta": delta}
            events.append(("content_block_delta", data))
        return events
