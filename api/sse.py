"""Server-sent events: formatting, and waiting on events with heartbeats in between."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any, TypeVar

__all__ = ["HEARTBEAT", "Tick", "sse_message", "with_ticks"]

T = TypeVar("T")

HEARTBEAT = ": keep-alive\n\n"


class Tick:
    """Yielded by :func:`with_ticks` when nothing came for ``interval`` seconds."""


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


async def with_ticks(items: AsyncIterator[T], interval: float) -> AsyncIterator[T | Tick]:
    """``items``, with a :class:`Tick` whenever none arrives for ``interval`` seconds.

    The pending ``__anext__`` is kept across ticks, never cancelled, so the
    source generator is not disturbed by the waiting.
    """
    iterator = aiter(items)
    pending: asyncio.Task[T] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(iterator))
            done, _ = await asyncio.wait({pending}, timeout=interval)
            if not done:
                yield Tick()
                continue
            try:
                item = pending.result()
            except StopAsyncIteration:
                return
            pending = None
            yield item
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await pending
        close = getattr(iterator, "aclose", None)
        if close is not None:
            await close()
