"""Server-sent events: formatting one message, and the comment that keeps a quiet stream open.

A job's events are not formatted here: the event hub splices each stored
event into its message once for all its followers
(:func:`relayq.events.stored_frame`).
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["HEARTBEAT", "sse_message"]

HEARTBEAT = ": keep-alive\n\n"


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
