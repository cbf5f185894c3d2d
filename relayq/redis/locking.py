"""A periodic step that one process at a time runs, whichever holds a lock in Redis."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

__all__ = ["run_exclusively"]

log = logging.getLogger(__name__)

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
"""Deletes the lock only if this pass still holds it."""


async def run_exclusively(
    step: Callable[[], Awaitable[object]],
    *,
    redis: aioredis.Redis,
    lock_key: str,
    interval: float,
    name: str,
    lease: float | None = None,
) -> None:
    """Run ``step`` every ``interval`` seconds while holding ``lock_key``, until cancelled.

    The lock lapses after ``lease`` seconds (twice the interval by default),
    so a process that dies holding it stalls the step for that long at most.
    """
    release = redis.register_script(_RELEASE)
    lease_ms = int((lease if lease is not None else interval * 2) * 1000)
    while True:
        token = secrets.token_hex(8)
        try:
            if await redis.set(lock_key, token, nx=True, px=lease_ms):
                try:
                    await step()
                finally:
                    await release(keys=[lock_key], args=[token])
        except RedisError as exc:
            log.warning("%s skipped a pass, Redis unavailable: %s", name, exc)
        except Exception:
            log.exception("%s pass failed", name)
        await asyncio.sleep(interval)
