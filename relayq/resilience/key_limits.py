"""Per-API-key limits: requests per minute and jobs running at once, in Redis.

The request rate is a GCRA limit (see :mod:`relayq.resilience.ratelimit`). Concurrency
is counted by job: every unfinished job of a key is a member of one sorted
set, and a hash holds each key's count of members. :meth:`KeyLimits.admit`
checks both limits and, when it admits, charges the rate and adds the job,
all in one Lua script, so concurrent intakes on any number of API processes
cannot overshoot. The job's end (any terminal state) calls
:meth:`KeyLimits.job_finished`; so does an intake that fails after being
admitted.

Adding and removing a job are idempotent (the count moves only when the
member set does), so repairs can run beside live traffic without losing its
updates. A process that dies between admitting a job and storing it, or
between ending it and releasing it, leaves a member behind: the reconciler
reads members it has not checked for a while (:meth:`KeyLimits.unchecked`),
releases those whose job has ended or was never stored, and marks the rest
checked. Jobs that SQL holds unfinished but Redis lost (a flushed Redis, or
one that was down at intake) are added back (:meth:`KeyLimits.jobs_started`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, cast

import redis.asyncio as aioredis

from relayq.redis.keys import RedisKeys
from relayq.redis.pipeline import CommandBatch
from relayq.resilience.ratelimit import GCRA_LUA

__all__ = ["Decision", "KeyLimit", "KeyLimits", "RunningJob"]

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
if redis.call('ZADD', KEYS[3], 'NX', ARGV[1], ARGV[5]) == 1 then
  redis.call('HINCRBY', KEYS[2], ARGV[4], 1)
end
return {1, '', ''}
"""
)

# _ADMIT, and on admission, in the same step, the sync lane's message added to its
# stream (KEYS[4], ARGV[6]): a refused call sends nothing, an admitted one costs
# the API one round trip, not two.
_ADMIT_AND_ADD = _ADMIT.replace(
    "return {1, '', ''}", "redis.call('XADD', KEYS[4], '*', 'm', ARGV[6])\nreturn {1, '', ''}"
)

"""Returns {allowed, refusing limit, retry_after}; when allowed the job is counted."""

_STARTED = """
if redis.call('ZADD', KEYS[2], 'NX', ARGV[3], ARGV[2]) == 1 then
  redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
end
"""
"""Counts one job as unfinished, unless it already is."""

_FINISHED = """
if redis.call('ZREM', KEYS[2], ARGV[2]) == 1 then
  local n = redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
  if n <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
end
"""
"""Counts one job as ended, if it was counted."""


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


@dataclass(frozen=True)
class RunningJob:
    """A job counted against its key's concurrency."""

    key_id: str
    job_id: str


class KeyLimits:
    """Rate and concurrency limits per API key, shared by every API process."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        key_prefix: str,
        clock: Callable[[], float] = time.time,
        batch: CommandBatch | None = None,
    ) -> None:
        """``batch``: the pipelines to share (a tick's); else the limits' own."""
        self._redis = redis
        self._batch = batch or CommandBatch(redis)
        self._keys = RedisKeys(key_prefix)
        self._counts_key = self._keys.key_running
        self._members_key = self._keys.key_members
        self._clock = clock
        self._admit = redis.register_script(_ADMIT)
        self._admit_and_add = redis.register_script(_ADMIT_AND_ADD)
        self._started = redis.register_script(_STARTED)
        self._finished = redis.register_script(_FINISHED)

    async def admit(
        self,
        key_id: str,
        job_id: str,
        *,
        rpm: int | None,
        max_concurrent: int | None,
        then_add: tuple[str, bytes] | None = None,
    ) -> Decision:
        """Admit job ``job_id`` of ``key_id`` if both limits allow (``None`` = unlimited).

        An admitted job is counted as unfinished: call :meth:`job_finished`
        when it ends, or at once if the intake fails after all. A refusal
        charges nothing. ``then_add`` (a stream and a message): added to the
        stream in the same step if the job is admitted, not otherwise.
        """
        for limit in (rpm, max_concurrent):
            if limit is not None and limit <= 0:
                raise ValueError("a limit must be positive, or None for unlimited")
        keys: list[Any] = [self._keys.key_rpm(key_id), self._counts_key, self._members_key]
        args: list[Any] = [
            repr(self._clock()),
            rpm or 0,
            max_concurrent or 0,
            key_id,
            _member(key_id, job_id),
        ]
        script = self._admit
        if then_add is not None:
            stream, entry = then_add
            keys.append(stream)
            args.append(entry)
            script = self._admit_and_add
        allowed, limit_name, retry_after = await self._batch.run_script(script, keys, args)
        if allowed:
            return Decision(allowed=True)
        wait = _text(retry_after)
        return Decision(
            allowed=False,
            retry_after=float(wait) if wait else None,
            limit=KeyLimit(_text(limit_name)),
        )

    async def jobs_started(self, key_id: str, jobs: Sequence[tuple[str, float]]) -> None:
        """Count jobs ``(job_id, since)`` of ``key_id`` that entered without :meth:`admit`.

        A job already counted is left as it is. One round trip for them all.
        """
        if not jobs:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for job_id, since in jobs:
                await self._started(
                    keys=[self._counts_key, self._members_key],
                    args=[key_id, _member(key_id, job_id), repr(since)],
                    client=pipe,
                )
            await pipe.execute()

    async def job_finished(self, key_id: str, job_id: str) -> None:
        """Job ``job_id`` of ``key_id`` ended (or its intake failed); nothing if not counted."""
        await self._batch.run_script(
            self._finished, [self._counts_key, self._members_key], [key_id, _member(key_id, job_id)]
        )

    async def jobs_finished(self, jobs: Sequence[RunningJob]) -> None:
        """:meth:`job_finished` for each of ``jobs``, in one round trip."""
        if not jobs:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for job in jobs:
                await self._finished(
                    keys=[self._counts_key, self._members_key],
                    args=[job.key_id, _member(job.key_id, job.job_id)],
                    client=pipe,
                )
            await pipe.execute()

    async def running(self, key_ids: Sequence[str]) -> list[int]:
        """The jobs each key has unfinished, as counted."""
        if not key_ids:
            return []
        values = await self._redis.hmget(self._counts_key, list(key_ids))
        return [int(v) if v is not None else 0 for v in values]

    async def unchecked(self, *, since: float, limit: int) -> list[RunningJob]:
        """Up to ``limit`` counted jobs, oldest first, not added or checked since ``since``."""
        members = await self._redis.zrangebyscore(
            self._members_key, "-inf", f"({since!r}", start=0, num=limit
        )
        return [_running_job(_text(cast(bytes, m))) for m in members]

    async def checked(self, jobs: Sequence[RunningJob], *, now: float) -> None:
        """Mark counted jobs as checked at ``now``; jobs no longer counted stay so."""
        if jobs:
            mapping = {_member(j.key_id, j.job_id): now for j in jobs}
            await self._redis.zadd(self._members_key, mapping, xx=True)


def _member(key_id: str, job_id: str) -> str:
    return f"{job_id} {key_id}"  # ids never hold a space


def _running_job(member: str) -> RunningJob:
    job_id, _, key_id = member.partition(" ")
    return RunningJob(key_id=key_id, job_id=job_id)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
