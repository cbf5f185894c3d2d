"""OpenAI's Responses API on the wire, for the adapters that speak it natively.

Pure parsing, no I/O. A vendor that serves ``POST /responses`` (OpenAI, Azure
OpenAI) is sent the caller's Responses request as it came
(:meth:`~relayq.schemas.responses.ResponsesRequest.upstream_body`) and answers
a ``response`` object, or with ``stream: true`` semantic events, each an SSE
event named by its ``type`` with a ``sequence_number``, ended by
``response.completed``, ``response.incomplete`` or ``response.failed`` (no
``[DONE]``). Source: OpenAI's API reference, "Create a model response" and
"Responses streaming events",
https://platform.openai.com/docs/api-reference/responses/create and
https://platform.openai.com/docs/api-reference/responses-streaming.

Errors: an HTTP error status maps as any other call's (the caller's
adapter does it); an ``error`` event, a ``response.failed`` event or a
``response`` whose ``status`` is ``failed`` maps by its ``code``
(:func:`relayq.providers.openai.error_for_event`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from relayq.providers.errors import MalformedResponse

__all__ = ["FINAL_EVENTS", "ResponsesEvent", "final_response", "parse_response_event"]

FINAL_EVENTS = frozenset({"response.completed", "response.incomplete"})
"""The events whose ``response`` is the whole answer."""


@dataclass(frozen=True, slots=True)
class ResponsesEvent:
    """One Responses stream event: its ``type``, its data, and its upstream JSON (passed
    on to the caller as those bytes)."""

    type: str
    data: dict[str, Any]
    wire: str

    @property
    def text(self) -> str:
        """The answer's text this event adds (``response.output_text.delta``'s)."""
        if self.type != "response.output_text.delta":
            return ""
        delta = self.data.get("delta")
        return delta if isinstance(delta, str) else ""

    def sse(self) -> bytes:
        """The event as its caller gets it: ``event:`` named, ``data:`` as it came."""
        return b"event: " + self.type.encode() + b"\ndata: " + self.wire.encode() + b"\n\n"


def parse_response_event(data: str, *, provider: str) -> ResponsesEvent:
    """One stream event's data (its JSON) as a :class:`ResponsesEvent`."""
    try:
        payload = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise MalformedResponse(f"{provider}: a Responses event is not JSON") from exc
    kind = payload.get("type") if isinstance(payload, dict) else None
    if not isinstance(kind, str):
        raise MalformedResponse(f"{provider}: a Responses event has no type")
    return ResponsesEvent(type=kind, data=payload, wire=data)


def final_response(payload: object, *, provider: str) -> dict[str, Any]:
    """``payload`` if it is a whole ``response`` object (completed or incomplete)."""
    if (
        not isinstance(payload, dict)
        or payload.get("object") != "response"
        or not isinstance(payload.get("output"), list)
    ):
        raise MalformedResponse(f"{provider}: not a response object")
    return payload
