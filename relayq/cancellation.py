"""Cancel signals for running jobs, over Redis pub/sub.

The job's status in SQL is what makes a cancel stick (the worker's outcome
write is then refused); the signal only stops the provider call early so the
worker slot and the upstream tokens are not spent for nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

__all__ = ["cancel_channel", "listen_for_cancels", "publish_cancel"]

log = logging.getLogger(__name__)


def cancel_channel(key_prefix: str) -> str:
    return f"{key_prefix}:cancel"


async def publish_cancel(client: aioredis.Redis, *, key_prefix: str, job_id: str) -> None:
    """Ask every worker to stop ``job_id``'s call; best effort."""
    try:
        await client.publish(cancel_channel(key_prefix), job_id)
    except RedisError as exc:
        log.warning("cancel signal for %s not sent: %s", job_id, exc)


async def listen_for_cancels(
    client: aioredis.Redis,
    *,
    key_prefix: str,
    on_cancel: Callable[[str], object],
    listening: Callable[[float | None], object] | None = None,
    reconnect_delay: float = 1.0,
) -> None:
    """Call ``on_cancel(job_id)`` for each cancel signal, until cancelled.

    ``listening(since)``: told when every signal published from ``since`` (wall
    clock) on reaches ``on_cancel``, and ``None`` when the channel is lost.
    """
    channel = cancel_channel(key_prefix)
    while True:
        try:
            async with client.pubsub() as pubsub:
                await pubsub.subscribe(channel)
                async for message in pubsub.listen():
                    data = message.get("data")
                    if message["type"] == "subscribe":  # Redis confirmed: from now on
                        if listening is not None:
                            listening(time.time())
                    elif isinstance(data, bytes):
                        on_cancel(data.decode())
                    elif isinstance(data, str):
                        on_cancel(data)
        except (RedisError, OSError) as exc:
            log.warning("cancel listener lost Redis (%s); reconnecting", exc)
        finally:
            if listening is not None:
                listening(None)
        await asyncio.sleep(reconnect_delay)
