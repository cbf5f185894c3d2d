"""Listening to one Redis pub/sub channel for as long as a process runs.

Pub/sub delivers a message only to whoever is subscribed when it is
published. So a listener says when it hears everything (from Redis's
confirmation of the subscription on) and when it may no longer (its
connection was lost), and connects again after ``reconnect_delay``. Its
users (cancel signals, admission announcements) decide what a gap means.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from relayq.redis.cancelling import raise_if_cancelled

__all__ = ["listen"]

log = logging.getLogger(__name__)

_WAKE_SECONDS = 1.0
"""The longest a listener blocks on Redis before it checks whether it was cancelled."""


async def listen(
    client: aioredis.Redis,
    channel: str,
    *,
    on_message: Callable[[str], object],
    listening: Callable[[float | None], object] | None = None,
    reconnect_delay: float = 1.0,
) -> None:
    """Call ``on_message(data)`` for each message on ``channel``, until cancelled.

    ``listening(since)``: every message published from ``since`` (wall clock)
    on reaches ``on_message``; ``listening(None)``: not any more.
    """
    while True:
        try:
            async with client.pubsub() as pubsub:
                await pubsub.subscribe(channel)
                while True:
                    # Not ``pubsub.listen()``: redis-py may swallow a cancel of its blocking
                    # read and read on, so the loop wakes at least every second to look.
                    message = await pubsub.get_message(timeout=_WAKE_SECONDS)
                    raise_if_cancelled()
                    if message is None:
                        continue
                    if message["type"] == "subscribe":  # Redis confirmed: from now on
                        if listening is not None:
                            listening(time.time())
                    elif message["type"] == "message":
                        data = message["data"]
                        on_message(data.decode() if isinstance(data, bytes) else str(data))
        except (RedisError, OSError) as exc:
            raise_if_cancelled()
            log.warning("listener of %s lost Redis (%s); reconnecting", channel, exc)
        finally:
            if listening is not None:
                listening(None)
        raise_if_cancelled()
        await asyncio.sleep(reconnect_delay)
