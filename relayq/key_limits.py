"""Per-API-key limits: requests per minute and jobs running at once, in Redis.

The request rate is a GCRA limit (see :mod:`relayq.ratelimit`). Concurrency
is a counter per key in one Redis hash: :meth:`KeyLimits.admit` checks both
limits and, when it admits, charges the rate and counts the job as started,
all in one Lua script, so concurrent intakes on any number of API processes
cannot overshoot. The job's end (any terminal state) calls
:meth:`KeyLimits.job_finished`; so does an intake that fails after being
admitted. A process that dies between the two leaves the counter high, so
the reconciler periodically replaces every counter with the truth from SQL
(:meth:`KeyLimits.reset_counts`), which bounds the error to one interval.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import redis.asyncio as aioredis

from relayq.ratelimit import GCRA_LUA

__all__ = ["Decision", "KeyLimit", "KeyLimits"]

_ADMIT = (
    GCRA_LUA
    + """
local now, rpm, max_jobs = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if max_jobs > 0 then
  local running = tonumber(redis.call('HGET', KEYS[2], ARGV[4]) or '0')
  if running >= max_jobs then return {0, 'max_concurrent_jobs', ''} end
end
if rpm > 0 then
  local tat, wait = gcra(KEYS[1], rpm, 1, now)
  if wait > 0 then return {0, 'requests_per_minute', string.format('%.17g', wait)} end
  store(KEYS[1], tat, now)
end
redis.call('HINCRBY', KEYS[2], ARGV[4], 1)
return {1, '', ''}
"""
)
"""Returns {allowed, refusing limit, retry_after}; when allowed the job is counted."""

_FINISHED = """
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
if n <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
"""
"""Counts one job as ended; a counter never goes below zero."""


class KeyLimit(str, Enum):
    """Which of a key's limits refused a request."""

    REQUESTS_PER_MINUTE = "requests_per_minute"
    MAX_CONCURRENT_JOBS = "max_concurrent_jobs"


@dataclass(frozen=True, kw_only=True)
class Decision:
    allowed: bool
    retry_after: float | None = None
    """Seconds until the request rate admits again; ``None`` when allowed or when
    the key has too many jobs running (a slot frees when one of them ends)."""
    limit: KeyLimit | None = None
    """The limit that refused (concurrency is checked first)."""


class KeyLimits:
    """Rate and concurrency limits per API key, shared by every API process."""

    def __init__(
        self, redis: aioredis.Redis, *, key_prefix: str, clock: Callable[[], float] = time.time
    ) -> None:
        self._redis = redis
        self._rpm_prefix = f"{key_prefix}:key_limits:rpm:"
        self._jobs_key = f"{key_prefix}:key_limits:jobs"
        self._clock = clock
        self._admit = redis.register_script(_ADMIT)
        self._finished = redis.register_script(_FINISHED)

    async def admit(self, key_id: str, *, rpm: int | None, max_concurrent: int | None) -> Decision:
        """Admit one job for ``key_id`` if both limits allow (``None`` = unlimited).

        An admitted job is counted as started: call :meth:`job_finished` when
        it ends, or at once if the intake fails after all. A refusal charges
        nothing.
        """
        for limit in (rpm, max_concurrent):
            if limit is not None and limit <= 0:
                raise ValueError("a limit must be positive, or None for unlimited")
        allowed, limit_name, retry_after = await self._admit(
            keys=[self._rpm_prefix + key_id, self._jobs_key],
            args=[repr(self._clock()), rpm or 0, max_concurrent or 0, key_id],
        )
        if allowed:
            return Decision(allowed=True)
        wait = _text(retry_after)
        return Decision(
            allowed=False,
            retry_after=float(wait) if wait else None,
            limit=KeyLimit(_text(limit_name)),
        )

    async def job_started(self, key_id: str) -> None:
        """Count a job that entered without :meth:`admit` (admit already counts its own)."""
        await self._redis.hincrby(self._jobs_key, key_id, 1)

    async def job_finished(self, key_id: str) -> None:
        """A job of ``key_id`` reached a terminal state (or its intake failed)."""
        await self._finished(keys=[self._jobs_key], args=[key_id])

    async def running(self, key_ids: Sequence[str]) -> list[int]:
        """The jobs each key has running, as counted."""
        if not key_ids:
            return []
        values = await self._redis.hmget(self._jobs_key, list(key_ids))
        return [int(v) if v is not None else 0 for v in values]

    async def reset_counts(self, counts: Mapping[str, int]) -> None:
        """Replace every counter with ``counts`` (the truth from SQL), atomically."""
        mapping: dict[Any, Any] = {key: n for key, n in counts.items() if n > 0}
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._jobs_key)
            if mapping:
                pipe.hset(self._jobs_key, mapping=mapping)
            await pipe.execute()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
