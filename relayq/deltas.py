"""Streamed chunks as ``delta`` events, batched so a fast stream costs few round trips.

The first chunk goes out at once (time to first token is what a streaming
caller feels); later ones are gathered for ``interval`` seconds and logged
together, each batch one event carrying its text and the chunks themselves.
"""

from __future__ import annotations

import time
from typing import Any

from relayq.assembly import chunk_text
from relayq.chat import ChatCompletionChunk
from relayq.events import EventLog, EventType, JobEvent

__all__ = ["DeltaPublisher"]


class DeltaPublisher:
    def __init__(
        self, events: EventLog, *, job_id: str, key_id: str, interval: float = 0.02
    ) -> None:
        self._events = events
        self._job_id = job_id
        self._key_id = key_id
        self._interval = interval
        self._pending: list[ChatCompletionChunk] = []
        self._last_flush: float | None = None

    async def add(self, chunk: ChatCompletionChunk) -> None:
        self._pending.append(chunk)
        now = time.monotonic()
        if self._last_flush is None or now - self._last_flush >= self._interval:
            await self.flush()

    async def flush(self) -> None:
        """Log what is pending as one ``delta`` event."""
        if not self._pending:
            return
        chunks, self._pending = self._pending, []
        self._last_flush = time.monotonic()
        data: dict[str, Any] = {
            "text": "".join(chunk_text(chunk) for chunk in chunks),
            "chunks": [chunk.model_dump(mode="json", exclude_none=True) for chunk in chunks],
        }
        event = JobEvent(job_id=self._job_id, key_id=self._key_id, type=EventType.DELTA, data=data)
        await self._events.emit_deltas([event])
