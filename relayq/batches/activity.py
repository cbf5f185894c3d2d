"""A counter in Redis that moves whenever a batch may need the scheduler.

With no batch in progress, the scheduler's pass finds nothing, and running
it every tick is SQL for nothing (a few per cent of an idle worker's CPU).
So a batch that starts (validated) or is cancelled moves this counter, and a
quiet scheduler runs its pass only when the counter moved, or after
``batches.idle_pass_seconds`` whatever it says (a move lost to a Redis
failure, a validation message to send again). Read before the pass's SQL,
the counter never misses a batch that starts during it.
"""

from __future__ import annotations

import logging

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from relayq.redis.keys import RedisKeys

__all__ = ["BatchActivity"]

log = logging.getLogger(__name__)


class BatchActivity:
    """Moves (:meth:`note`) and reads (:meth:`read`) the batches' activity counter."""

    def __init__(self, redis: aioredis.Redis, *, key_prefix: str) -> None:
        self._redis = redis
        self._key = RedisKeys(key_prefix).batch_activity

    async def note(self) -> None:
        """A batch started or is cancelling: wake the scheduler. Never raises (the
        scheduler's idle pass finds the batch all the same)."""
        try:
            await self._redis.incr(self._key)
        except RedisError as exc:
            log.warning("batch activity not noted (the scheduler finds it later): %s", exc)

    async def read(self) -> bytes | str | None:
        """The counter as it stands (None when it never moved); raises RedisError."""
        value: bytes | str | None = await self._redis.get(self._key)
        return value
