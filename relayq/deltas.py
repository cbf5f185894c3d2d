"""Streamed chunks as ``delta`` events, batched so a fast stream costs few round trips.

The first chunk goes out at once (time to first token is what a streaming
caller feels); later ones are gathered for ``interval`` seconds and sent
together, each batch one delta carrying its text and the chunks themselves.
Where they go is the caller's choice: the job's event stream, or the reply
stream of the API process whose caller waits (:mod:`relayq.replies`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from relayq.assembly import chunk_text
from relayq.chat import ChatCompletionChunk

__all__ = ["DeltaPublisher", "DeltaSink"]

DeltaSink = Callable[[dict[str, Any]], Awaitable[None]]
"""Sends one delta's data (``text`` and ``chunks``) on its way."""


class DeltaPublisher:
    def __init__(self, send: DeltaSink, *, interval: float = 0.02) -> None:
        self._send = send
        self._interval = interval
        self._pending: list[ChatCompletionChunk] = []
        self._last_flush: float | None = None
        self.text_sent = False
        """Whether any text went out: the caller may then hold this attempt's words."""

    async def add(self, chunk: ChatCompletionChunk) -> None:
        self._pending.append(chunk)
        now = time.monotonic()
        if self._last_flush is None or now - self._last_flush >= self._interval:
            await self.flush()

    async def flush(self) -> None:
        """Send what is pending as one delta."""
        if not self._pending:
            return
        chunks, self._pending = self._pending, []
        self._last_flush = time.monotonic()
        data: dict[str, Any] = {
            "text": "".join(chunk_text(chunk) for chunk in chunks),
            "chunks": [chunk.model_dump(mode="json", exclude_none=True) for chunk in chunks],
        }
        self.text_sent = self.text_sent or bool(data["text"])
        await self._send(data)
