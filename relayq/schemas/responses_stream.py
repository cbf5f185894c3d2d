"""A streamed ``chat.completion`` as OpenAI Responses stream events.

Pure translation, no I/O. :class:`ResponsesEventStream` takes one answer's
``chat.completion.chunk`` objects, in order, and gives the events OpenAI's
SDK reads (``client.responses.stream``), each with its ``sequence_number``:
``response.created`` and ``response.in_progress``; for the text, a
``message`` item (``response.output_item.added``,
``response.content_part.added``, ``response.output_text.delta`` per piece,
then ``response.output_text.done``, ``response.content_part.done``,
``response.output_item.done``); for each tool call a ``function_call`` item
(``response.output_item.added``, ``response.function_call_arguments.delta``
per fragment, ``response.function_call_arguments.done``,
``response.output_item.done``); then ``response.completed``, or
``response.incomplete`` when the answer was cut, with the whole response and
its usage (the chunks report usage at their end only). :meth:`fail` ends a
stream early: an ``error`` event, then ``response.failed``.

:func:`events_of_response` streams a whole ``response`` (a cached answer) as
the same events, whatever its items (a reasoning item too).
"""

from __future__ import annotations

from typing import Any

from relayq.schemas.chunk_events import ChunkEvents, SSEEvent
from relayq.schemas.responses_translation import (
    function_call_item,
    incomplete_reason,
    item_ids,
    response_id,
    usage_of,
)

__all__ = ["ResponsesEventStream", "StreamEvent", "events_of_response"]

StreamEvent = SSEEvent
"""An SSE event: its name (its ``type``) and its data."""


class ResponsesEventStream(ChunkEvents):
    """One answer's chunks as Responses events; the first choice only."""

    def __init__(self, *, job_id: str, model: str, echo: dict[str, Any], created_at: int) -> None:
        super().__init__()
        self._id = response_id(job_id)
        self._message_id, self._call_prefix = item_ids(job_id)
        self._model = model
        self._echo = echo
        self._created_at = created_at
        self._sequence = 0
        self._started = False
        self._items: list[dict[str, Any]] = []
        """The output items so far, in output order."""
        self._open: int | None = None
        """The output index of the item still receiving deltas."""
        self._text: int | None = None
        """The output index of the message item."""
        self._calls: dict[int, int] = {}
        """The output index of each tool call, by the chunks' tool call index."""

    def finish(self) -> list[StreamEvent]:
        """The events that end the response: its last item closed, then the response."""
        events = self._start(None)
        events.extend(self._close())
        reason = incomplete_reason(self._finish)
        status = "incomplete" if reason else "completed"
        response = self._response(status)
        response["incomplete_details"] = {"reason": reason} if reason else None
        response["usage"] = usage_of(self._usage)
        events.append(self._event(f"response.{status}", {"response": response}))
        return events

    def fail(self, error: dict[str, Any]) -> list[StreamEvent]:
        """The events that end a response without its answer: ``error``, ``response.failed``."""
        events = self._start(None)
        message = str(error.get("message") or "The response failed.")
        code = error.get("code")
        events.append(
            self._event("error", {"code": code, "message": message, "param": error.get("param")})
        )
        response = self._response("failed")
        response["error"] = {"code": "server_error", "message": message}
        events.append(self._event("response.failed", {"response": response}))
        return events

    def _event(self, kind: str, data: dict[str, Any]) -> StreamEvent:
        event = (kind, {"type": kind, "sequence_number": self._sequence, **data})
        self._sequence += 1
        return event

    def _response(self, status: str) -> dict[str, Any]:
        return {
            "id": self._id,
            "object": "response",
            "created_at": self._created_at,
            "status": status,
            "error": None,
            "incomplete_details": None,
            "model": self._model,
            "output": [dict(item) for item in self._items] if status != "in_progress" else [],
            "usage": None,
            **self._echo,
        }

    def _start(self, model: Any) -> list[StreamEvent]:
        if self._started:
            return []
        self._started = True
        if isinstance(model, str) and model:
            self._model = model
        return [
            self._event("response.created", {"response": self._response("in_progress")}),
            self._event("response.in_progress", {"response": self._response("in_progress")}),
        ]

    def _close(self) -> list[StreamEvent]:
        index = self._open
        if index is None:
            return []
        self._open = None
        item = self._items[index]
        item["status"] = "incomplete" if incomplete_reason(self._finish) else "completed"
        events: list[StreamEvent] = []
        where = {"item_id": item["id"], "output_index": index}
        if item["type"] == "message":
            part = item["content"][0]
            text = {"content_index": 0, "text": part["text"], "logprobs": []}
            events.append(self._event("response.output_text.done", where | text))
            done = {"content_index": 0, "part": dict(part)}
            events.append(self._event("response.content_part.done", where | done))
        else:
            arguments = {"arguments": item["arguments"]}
            events.append(self._event("response.function_call_arguments.done", where | arguments))
        events.append(
            self._event("response.output_item.done", {"output_index": index, "item": _copy(item)})
        )
        return events

    def _begin(self, item: dict[str, Any]) -> list[StreamEvent]:
        events = self._close()
        index = len(self._items)
        self._items.append(item)
        self._open = index
        events.append(
            self._event("response.output_item.added", {"output_index": index, "item": _copy(item)})
        )
        return events

    def _on_text(self, text: str) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        if self._text is None:
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            message = {
                "id": self._message_id,
                "type": "message",
                "status": "in_progress",
                "role": "assistant",
                "content": [part],
            }
            events.extend(self._begin(message))
            self._text = self._open
            where = {"item_id": self._message_id, "output_index": self._text}
            added = {"content_index": 0, "part": dict(part)}
            events.append(self._event("response.content_part.added", where | added))
        index = self._text
        assert index is not None
        self._items[index]["content"][0]["text"] += text
        delta = {
            "item_id": self._message_id,
            "output_index": index,
            "content_index": 0,
            "delta": text,
            "logprobs": [],
        }
        events.append(self._event("response.output_text.delta", delta))
        return events

    def _on_tool_call(self, call: dict[str, Any]) -> list[StreamEvent]:
        position = int(call.get("index", 0))
        events: list[StreamEvent] = []
        if position not in self._calls:
            item_id = f"{self._call_prefix}_{len(self._calls)}"
            first = {**call, "function": {**(call.get("function") or {}), "arguments": ""}}
            events.extend(
                self._begin(function_call_item(first, item_id=item_id, status="in_progress"))
            )
            self._calls[position] = len(self._items) - 1
        index = self._calls[position]
        item = self._items[index]
        arguments = (call.get("function") or {}).get("arguments")
        if isinstance(arguments, str) and arguments:
            item["arguments"] += arguments
            delta = {"item_id": item["id"], "output_index": index, "delta": arguments}
            events.append(self._event("response.function_call_arguments.delta", delta))
        return events


def _copy(item: dict[str, Any]) -> dict[str, Any]:
    """An item as it stands, apart from the one that goes on growing."""
    copied = dict(item)
    if "content" in copied:
        copied["content"] = [dict(part) for part in copied["content"]]
    return copied


def events_of_response(response: dict[str, Any]) -> list[StreamEvent]:
    """A whole ``response`` as the events a stream of it carries: ``response.created``,
    each output item added (a message's text and a function call's arguments in one
    delta each) and done, then the response's own end (``response.completed`` or
    ``response.incomplete``)."""
    events: list[StreamEvent] = []

    def event(kind: str, data: dict[str, Any]) -> None:
        events.append((kind, {"type": kind, "sequence_number": len(events), **data}))

    items: list[dict[str, Any]] = list(response.get("output") or [])
    event("response.created", {"response": {**response, "status": "in_progress", "output": []}})
    for index, item in enumerate(items):
        where = {"item_id": item.get("id"), "output_index": index}
        if item.get("type") == "message":
            event(
                "response.output_item.added",
                {"output_index": index, "item": {**item, "content": []}},
            )
            for position, part in enumerate(item.get("content") or []):
                at = where | {"content_index": position}
                text = part.get("text") if part.get("type") == "output_text" else None
                event(
                    "response.content_part.added",
                    at | {"part": {**part, "text": ""} if text is not None else part},
                )
                if text is not None:
                    event("response.output_text.delta", at | {"delta": text, "logprobs": []})
                    event("response.output_text.done", at | {"text": text, "logprobs": []})
                event("response.content_part.done", at | {"part": part})
        elif item.get("type") == "function_call":
            arguments = str(item.get("arguments") or "")
            event(
                "response.output_item.added",
                {"output_index": index, "item": {**item, "arguments": ""}},
            )
            event("response.function_call_arguments.delta", where | {"delta": arguments})
            event("response.function_call_arguments.done", where | {"arguments": arguments})
        else:
            event("response.output_item.added", {"output_index": index, "item": item})
        event("response.output_item.done", {"output_index": index, "item": item})
    status = "incomplete" if response.get("status") == "incomplete" else "completed"
    event(f"response.{status}", {"response": response})
    return events
