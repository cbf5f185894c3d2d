"""Cancel signals for running jobs, over Redis pub/sub.

The job's status in SQL is what makes a cancel stick (the worker's outcome
write is then refused); the signal only stops the provider call early so the
worker slot and the upstream tokens are not spent for nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from relayq.redis.channels import listen
from relayq.redis.keys import RedisKeys

__all__ = ["listen_for_cancels", "publish_cancel"]

log = logging.getLogger(__name__)


async def publish_cancel(client: aioredis.Redis, *, key_prefix: str, job_id: str) -> None:
    """Ask every worker to stop ``job_id``'s call; best effort."""
    try:
        await client.publish(RedisKeys(key_prefix).cancel_channel, job_id)
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
    await listen(
        client,
        RedisKeys(key_prefix).cancel_channel,
        on_message=on_cancel,
        listening=listening,
        reconnect_delay=reconnect_delay,
    )
