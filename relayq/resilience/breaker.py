"""A circuit breaker per deployment, shared by every process through Redis.

CLOSED lets every call through and counts outcomes; it turns OPEN after
``failure_threshold`` consecutive failures, or when failures reach
``failure_rate`` of the calls in the last ``window_seconds`` (once the window
holds ``min_requests``). OPEN refuses every call for ``cooldown_seconds``,
then turns HALF_OPEN, which admits at most ``half_open_probes`` calls at once:
a probe's success closes the breaker and clears its counts, a probe's failure
opens it again for a new cooldown. A probe that never reports back frees its
slot after ``probe_timeout_seconds``; its late report is then ignored.

The caller alone decides what a failure is (relayq counts provider-side
failures only: an invalid request says nothing about a deployment's health).
Reports of calls admitted before the breaker opened are ignored while it is
OPEN or HALF_OPEN. Each deployment's state is one Redis hash changed only by
Lua scripts, so every decision is atomic across processes. Time comes from
the injected clock, never from Redis, so process clocks should be in sync.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum

import redis.asyncio as aioredis

from relayq.coalescing import Coalescer
from relayq.config.settings import BreakerSettings
from relayq.redis.keys import RedisKeys
from relayq.redis.pipeline import CommandBatch

__all__ = ["BreakerState", "BreakerStatus", "CircuitBreaker", "Permit"]

log = logging.getLogger(__name__)

WINDOW_BUCKETS = 12
"""The failure-rate window slides in steps of ``window_seconds / WINDOW_BUCKETS``."""

_KEY_TTL_SECONDS = 86_400
"""An untouched breaker is forgotten (closed) after a day."""

_ACQUIRE = """
local now = tonumber(ARGV[1])
local s = redis.call('HMGET', KEYS[1], 'state', 'opened_at')
local state = s[1] or 'closed'
if state == 'closed' then return {1, state, 0, ''} end
if state == 'open' then
  local ready = tonumber(s[2]) + tonumber(ARGV[2])
  if now < ready then return {0, state, 0, string.format('%.17g', ready - now)} end
  state = 'half_open'
  redis.call('HSET', KEYS[1], 'state', state)
end
local fields = redis.call('HGETALL', KEYS[1])
local live = 0
for i = 1, #fields, 2 do
  if string.sub(fields[i], 1, 2) == 'p:' then
    if tonumber(fields[i + 1]) <= now then redis.call('HDEL', KEYS[1], fields[i])
    else live = live + 1 end
  end
end
if live >= tonumber(ARGV[3]) then return {0, state, 0, ''} end
redis.call('HSET', KEYS[1], 'p:' .. ARGV[5], string.format('%.17g', now + tonumber(ARGV[4])))
redis.call('EXPIRE', KEYS[1], ARGV[6])
return {1, state, 1, ''}
"""
"""Returns {allowed, state, probe, retry_after}; takes a probe slot in HALF_OPEN."""

_RECORD = """
local key, now, failed = KEYS[1], tonumber(ARGV[1]), ARGV[2] == '0'
local state = redis.call('HGET', key, 'state') or 'closed'
local function open()
  local fields = redis.call('HKEYS', key)
  for _, f in ipairs(fields) do
    if string.sub(f, 1, 2) == 'p:' then redis.call('HDEL', key, f) end
  end
  redis.call('HSET', key, 'state', 'open', 'opened_at', string.format('%.17g', now))
  redis.call('EXPIRE', key, ARGV[9])
  redis.call('PUBLISH', ARGV[10], key)
  return 'opened'
end
if ARGV[3] ~= '' then
  local expires = tonumber(redis.call('HGET', key, 'p:' .. ARGV[3]) or '0')
  if state ~= 'half_open' or expires <= now then return '' end
  if failed then return open() end
  redis.call('DEL', key)
  return 'closed'
end
if state ~= 'closed' then return '' end
local bucket = math.floor(now / tonumber(ARGV[7]))
local oldest = bucket - tonumber(ARGV[8]) + 1
redis.call('HINCRBY', key, string.format('r:%d', bucket), tonumber(ARGV[11]))
local consecutive = 0
if failed then
  redis.call('HINCRBY', key, string.format('f:%d', bucket), 1)
  consecutive = redis.call('HINCRBY', key, 'consecutive', 1)
else
  redis.call('HSET', key, 'consecutive', 0)
end
local fields = redis.call('HGETALL', key)
local requests, failures = 0, 0
for i = 1, #fields, 2 do
  local kind = string.sub(fields[i], 1, 2)
  if kind == 'r:' or kind == 'f:' then
    if tonumber(string.sub(fields[i], 3)) < oldest then redis.call('HDEL', key, fields[i])
    elseif kind == 'r:' then requests = requests + tonumber(fields[i + 1])
    else failures = failures + tonumber(fields[i + 1]) end
  end
end
redis.call('EXPIRE', key, ARGV[9])
if failed and (consecutive >= tonumber(ARGV[4]) or
    (requests >= tonumber(ARGV[6]) and failures >= tonumber(ARGV[5]) * requests)) then
  return open()
end
return ''
"""
"""Counts ARGV[11] outcomes alike (several only for successes in CLOSED); returns
'opened', 'closed' or '' (no transition).

An opening is announced on the admission channel (ARGV[10]) in the same step,
so no worker goes on admitting calls by itself (:mod:`relayq.resilience.clearance`)."""


class BreakerState(str, Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, kw_only=True)
class Permit:
    """The answer to :meth:`CircuitBreaker.acquire`; hand it back to ``record``."""

    allowed: bool
    state: BreakerState
    probe: bool = False
    retry_after: float | None = None
    """Seconds until an OPEN breaker lets probes through; ``None`` when allowed, or
    when HALF_OPEN with every probe slot taken (the probes' outcome decides)."""
    probe_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class BreakerStatus:
    deployment: str
    state: BreakerState
    consecutive_failures: int
    window_failures: int
    window_requests: int
    opened_at: float | None
    next_probe_at: float | None
    """When a probe may next go out: the end of the cooldown, now if a probe slot
    is free, or when the oldest probe in flight expires; ``None`` when closed."""
    probes_in_flight: int


class CircuitBreaker:
    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        key_prefix: str,
        settings: BreakerSettings,
        clock: Callable[[], float] = time.time,
        batch: CommandBatch | None = None,
    ) -> None:
        """``batch``: the pipelines to share (a worker's tick); else the breaker's own."""
        self._redis = redis
        self._batch = batch or CommandBatch(redis)
        self._keys = RedisKeys(key_prefix)
        self._channel = self._keys.admission_channel
        self._settings = settings
        self._clock = clock
        self._bucket_seconds = settings.window_seconds / WINDOW_BUCKETS
        self._acquire = redis.register_script(_ACQUIRE)
        self._record = redis.register_script(_RECORD)
        self._successes: Coalescer[str, None] = Coalescer(self._record_successes)

    @property
    def success_reports(self) -> int:
        """Script calls that reported batches of successes (for tests and metrics)."""
        return self._successes.batches

    async def acquire(self, deployment: str) -> Permit:
        """May a call go to ``deployment`` now? In HALF_OPEN an allowed call is a probe."""
        s = self._settings
        probe_id = secrets.token_hex(8)
        allowed, state, probe, retry_after = await self._batch.run_script(
            self._acquire,
            [self._keys.breaker(deployment)],
            [
                repr(self._clock()),
                repr(s.cooldown_seconds),
                s.half_open_probes,
                repr(s.probe_timeout_seconds),
                probe_id,
                _KEY_TTL_SECONDS,
            ],
        )
        return Permit(
            allowed=bool(allowed),
            state=BreakerState(_text(state)),
            probe=bool(probe),
            retry_after=float(_text(retry_after)) if _text(retry_after) else None,
            probe_id=probe_id if probe else None,
        )

    async def release(self, deployment: str, permit: Permit) -> None:
        """Give back ``permit`` unused (no call was made): a probe frees its slot."""
        if permit.probe_id is None:
            return
        key = self._keys.breaker(deployment)
        probe = "p:" + permit.probe_id
        (reply,) = await self._batch.execute(lambda pipe: pipe.hdel(key, probe))
        if isinstance(reply, Exception):
            raise reply

    async def record(self, deployment: str, *, success: bool, permit: Permit) -> None:
        """Report how the call made under ``permit`` went (refused permits are ignored).

        The successes of calls that were not probes, reported meanwhile, go
        together: one script call per deployment and tick, counting them all
        (a clump of jobs that end together made one each).
        """
        if not permit.allowed:
            return
        if success and permit.probe_id is None:
            await self._successes.submit(deployment)
            return
        await self._record_outcomes(deployment, success=success, probe_id=permit.probe_id or "")

    async def _record_successes(self, deployments: list[str]) -> list[None]:
        counts = Counter(deployments)
        await asyncio.gather(
            *(self._record_outcomes(d, success=True, count=n) for d, n in counts.items())
        )
        return [None] * len(deployments)

    async def _record_outcomes(
        self, deployment: str, *, success: bool, probe_id: str = "", count: int = 1
    ) -> None:
        s = self._settings
        transition = await self._batch.run_script(
            self._record,
            [self._keys.breaker(deployment)],
            [
                repr(self._clock()),
                int(success),
                probe_id,
                s.failure_threshold,
                repr(s.failure_rate),
                s.min_requests,
                repr(self._bucket_seconds),
                WINDOW_BUCKETS,
                _KEY_TTL_SECONDS,
                self._channel,
                count,
            ],
        )
        if _text(transition) == "opened":
            log.warning("circuit breaker opened for %s", deployment)
        elif _text(transition) == "closed":
            log.info("circuit breaker closed for %s", deployment)

    async def status(self, deployments: Sequence[str]) -> list[BreakerStatus]:
        """Each deployment's state and counts, as of the clock's now."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for deployment in deployments:
                pipe.hgetall(self._keys.breaker(deployment))
            hashes = await pipe.execute()
        now = self._clock()
        return [self._status(d, raw=h, now=now) for d, h in zip(deployments, hashes, strict=True)]

    async def reset(self, deployment: str) -> None:
        """Close the breaker and forget its counts (an operator's override)."""
        await self._redis.delete(self._keys.breaker(deployment))

    def _status(
        self, deployment: str, *, raw: dict[bytes | str, bytes | str], now: float
    ) -> BreakerStatus:
        fields = {_text(k): _text(v) for k, v in raw.items()}
        s = self._settings
        state = BreakerState(fields.get("state", BreakerState.CLOSED.value))
        opened_at = float(fields["opened_at"]) if "opened_at" in fields else None
        probes = sorted(float(v) for k, v in fields.items() if k[:2] == "p:" and float(v) > now)
        next_probe_at: float | None = None
        if state is BreakerState.OPEN and opened_at is not None:
            next_probe_at = opened_at + s.cooldown_seconds
            if now >= next_probe_at:
                state = BreakerState.HALF_OPEN
        if state is BreakerState.HALF_OPEN:
            next_probe_at = now if len(probes) < s.half_open_probes else probes[0]
        oldest = math.floor(now / self._bucket_seconds) - WINDOW_BUCKETS + 1
        counts = {"r:": 0, "f:": 0}
        for k, v in fields.items():
            if k[:2] in counts and int(k[2:]) >= oldest:
                counts[k[:2]] += int(v)
        return BreakerStatus(
            deployment=deployment,
            state=state,
            consecutive_failures=int(fields.get("consecutive", 0)),
            window_failures=counts["f:"],
            window_requests=counts["r:"],
            opened_at=opened_at,
            next_probe_at=next_probe_at,
            probes_in_flight=len(probes),
        )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
