"""Server-sent events: formatting one message, and the comment that keeps a quiet stream open.

A job's events are not formatted here: the event hub splices each stored
event into its message once for all its followers
(:func:`relayq.events.stored_frame`).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Send

__all__ = ["DONE", "HEARTBEAT", "CompletionStream", "sse_message"]

HEARTBEAT = ": keep-alive\n\n"
DONE = "data: [DONE]\n\n"
"""The message that ends an OpenAI-style stream."""
_DONE = DONE.encode()


class CompletionStream(StreamingResponse):
    """An OpenAI-style event stream, whose ``data: [DONE]`` goes out with the body's end.

    Starlette ends a streamed body with a message of its own, after the last
    chunk. A client that stops reading at ``[DONE]`` (most do) then finds the
    response unfinished and closes its connection, so its next call pays for a
    new one (about a millisecond on loopback: the handshake, uvicorn's setup).
    Here the chunk that ends with ``[DONE]`` ends the body in the same write,
    and nothing after it is read from the iterator.
    """

    async def stream_response(self, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        iterator = self.body_iterator
        try:
            async for chunk in iterator:
                body = chunk.encode(self.charset) if isinstance(chunk, str) else bytes(chunk)
                last = body.endswith(_DONE)
                await send({"type": "http.response.body", "body": body, "more_body": not last})
                if last:
                    return
        finally:
            close = getattr(iterator, "aclose", None)
            if close is not None:
                await close()
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def sse_message(*, data: Any, event: str | None = None, id: str | None = None) -> str:
    """One SSE message; ``data`` is sent as JSON unless it is already a string."""
    lines = []
    if id is not None:
        lines.append(f"id: {id}")
    if event is not None:
        lines.append(f"event: {event}")
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    lines.extend(f"data: {line}" for line in text.split("\n"))
    return "\n".join(lines) + "\n\n"
