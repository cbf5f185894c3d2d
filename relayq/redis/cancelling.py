"""A cancelled task that redis-py answered anyway: told apart, so its loop ends.

redis-py (8.2 at least) may answer a blocking stream read (``XREAD`` or
``XREADGROUP`` with ``BLOCK``) with an empty reply after the task awaiting it
was cancelled: the cancel is lost, and a loop around the read goes on reading.
Seen as a worker's sync-lane reader that read on after its task was cancelled.
The loops that block on Redis call :func:`raise_if_cancelled` after each read,
and a task that was asked to stop stops.
"""

from __future__ import annotations

import asyncio

__all__ = ["raise_if_cancelled"]


def raise_if_cancelled() -> None:
    """Raise :class:`asyncio.CancelledError` if the running task was asked to stop."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
