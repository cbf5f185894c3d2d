"""Server-sent events: formatting one message, and the comment that keeps a quiet stream open.

A job's events are not formatted here: the event hub splices each stored
event into its message once for all its followers
(:func:`relayq.events.log.stored_frame`).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

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

    And the stream runs in the request's own task: Starlette runs it in a task
    of an anyio task group beside a disconnect listener, which put a task's
    start and the group's machinery between a caller's first token and its
    write. Here the listener is the one extra task; a caller that leaves
    cancels the stream (its iterator's ``finally`` runs), and the answer ends
    quietly, as Starlette's does.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        streaming = asyncio.current_task()
        assert streaming is not None
        left = False

        async def until_gone() -> None:
            nonlocal left
            while (await receive())["type"] != "http.disconnect":
                pass
            left = True
            streaming.cancel()

        listener = asyncio.ensure_future(until_gone())
        try:
            await self.stream_response(send)
        except asyncio.CancelledError:
            if not left:
                raise
            streaming.uncancel()  # the caller's leaving ends the answer, nothing more
        finally:
            listener.cancel()

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
