"""Global rate limits per deployment, and provider-wide cooldowns, in Redis.

Requests per minute and tokens per minute are each a GCRA limit (the generic
cell rate algorithm: a leaky bucket kept as one number). A limit of L per
minute spaces units ``60 / L`` seconds apart; its Redis key holds the
theoretical arrival time (TAT) of the next unit, which expires once the
bucket is full again. Requests get no burst (they are paced, so no 60 s
window ever holds more than L, as a vendor counting per minute sees it);
tokens tolerate a whole minute's worth at once. One Lua script checks
both limits and charges both only when both admit, so any number of
processes share one budget. Time comes from the injected clock, never from
Redis, so process clocks should be in sync (a skew of d seconds shifts the
limits by d).

Tokens are estimated before a call (:func:`estimate_tokens`) and corrected
with the reported usage afterwards (:meth:`RateLimiter.correct`). A request
asking for more tokens than a whole minute's budget would never fit; it is
admitted as soon as the bucket is full (nothing charged is outstanding), and
the debt it leaves makes later requests wait until it is paid back.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable

import redis.asyncio as aioredis

from relayq.redis.keys import RedisKeys
from relayq.redis.pipeline import CommandBatch
from relayq.schemas.chat import ChatMessage
from relayq.schemas.completions import TextCompletionRequest
from relayq.schemas.embeddings import EmbeddingRequest
from relayq.schemas.images import ImageGenerationRequest
from relayq.schemas.jobs import CallRequest
from relayq.schemas.responses import ResponsesRequest

__all__ = [
    "CHARS_PER_TOKEN",
    "DEFAULT_COMPLETION_TOKENS",
    "GCRA_LUA",
    "PERIOD_SECONDS",
    "TOLERANCE_SECONDS",
    "RateLimiter",
    "estimate_tokens",
]

PERIOD_SECONDS = 60.0
"""The period every limit is expressed in (per minute)."""

PACING_MARGIN_SECONDS = 0.5
"""Requests per minute are spread over 60.5 s: room for network jitter."""

TOLERANCE_SECONDS = 1e-4
"""Waits this short count as zero: they are floating-point rounding, not a limit."""

CHARS_PER_TOKEN = 4
DEFAULT_COMPLETION_TOKENS = 256
"""The answer's estimated length when the request sets no maximum."""

GCRA_LUA = (
    f"local PERIOD = {PERIOD_SECONDS!r}\nlocal TOLERANCE = {TOLERANCE_SECONDS!r}\n"
    f"local PACING_MARGIN = {PACING_MARGIN_SECONDS!r}\n"
    + """
local function gcra(key, limit, cost, now, burst, period)
  local interval = (period or PERIOD) / limit
  local tat = tonumber(redis.call('GET', key))
  if not tat or tat < now then tat = now end
  local new_tat = tat + cost * interval
  local wait = new_tat - (burst or PERIOD) - now
  if cost > limit then wait = tat - now end
  if wait <= TOLERANCE then wait = 0 end
  return new_tat, wait
end
local function store(key, tat, now)
  if tat <= now then redis.call('DEL', key) return end
  redis.call('SET', key, string.format('%.17g', tat), 'PX', math.ceil((tat - now) * 1000) + 1000)
end
"""
)
"""Lua helpers: ``gcra`` returns (new TAT, seconds to wait, 0 = admit) for ``cost``
units against ``limit`` per minute without charging; ``store`` charges."""

_ACQUIRE = (
    GCRA_LUA
    + """
local now, rpm, tpm, tokens = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]),
  tonumber(ARGV[4])
local wait, rpm_tat, tpm_tat, w = 0, nil, nil, 0
if KEYS[3] then
  local cooled = tonumber(redis.call('GET', KEYS[3]))
  if cooled and cooled - now > wait then wait = cooled - now end
end
if rpm > 0 then
  -- Requests are paced, not burst, over a minute stretched by PACING_MARGIN:
  -- however late or early each call reaches the vendor (by less than the
  -- margin), no 60 s window there holds more than rpm.
  local paced = PERIOD + PACING_MARGIN
  rpm_tat, w = gcra(KEYS[1], rpm, 1, now, paced / rpm, paced)
  if w > wait then wait = w end
end
if tpm > 0 then
  tpm_tat, w = gcra(KEYS[2], tpm, tokens, now)
  if w > wait then wait = w end
end
if wait > 0 then return string.format('%.17g', wait) end
if rpm_tat then store(KEYS[1], rpm_tat, now) end
if tpm_tat and tokens > 0 then store(KEYS[2], tpm_tat, now) end
return '0'
"""
)

_CORRECT = (
    GCRA_LUA
    + """
local now, tpm, delta = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat or tat < now then tat = now end
store(KEYS[1], tat + delta * PERIOD / tpm, now)
"""
)
"""Charges (or refunds, when negative) ``delta`` tokens; a refund stops at a full bucket."""

_COOL_DOWN = """
local until_ = tonumber(ARGV[1]) + tonumber(ARGV[2])
local current = tonumber(redis.call('GET', KEYS[1]))
if current and current >= until_ then return end
redis.call('SET', KEYS[1], string.format('%.17g', until_), 'PX', math.ceil(ARGV[2] * 1000))
redis.call('PUBLISH', ARGV[3], KEYS[1])
"""


class RateLimiter:
    """Per-deployment RPM and TPM limits and per-provider cooldowns, across processes."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        key_prefix: str,
        clock: Callable[[], float] = time.time,
        batch: CommandBatch | None = None,
    ) -> None:
        """``batch``: the pipelines to share (a worker's tick); else the limiter's own."""
        self._redis = redis
        self._batch = batch or CommandBatch(redis)
        self._keys = RedisKeys(key_prefix)
        self._channel = self._keys.admission_channel
        self._clock = clock
        self._acquire = redis.register_script(_ACQUIRE)
        self._correct = redis.register_script(_CORRECT)
        self._cool_down = redis.register_script(_COOL_DOWN)

    async def acquire(
        self,
        deployment: str,
        *,
        rpm: int | None,
        tpm: int | None,
        tokens: int,
        provider: str | None = None,
    ) -> float:
        """Take 1 request and ``tokens`` tokens from ``deployment``'s limits.

        Returns 0.0 when the call may go (both limits charged), else the
        seconds to wait before asking again (nothing charged). ``None``
        limits are unlimited. With ``provider``, that provider's cooldown is
        waited out too, in the same round trip.
        """
        if tokens < 0:
            raise ValueError("tokens must not be negative")
        _check_limit(rpm)
        _check_limit(tpm)
        keys = [self._keys.rate_rpm(deployment), self._keys.rate_tpm(deployment)]
        if provider is not None:
            keys.append(self._keys.cooldown(provider))
        wait = await self._batch.run_script(
            self._acquire, keys, [repr(self._clock()), rpm or 0, tpm or 0, tokens]
        )
        return float(wait)

    async def correct(
        self, deployment: str, *, tpm: int | None, estimated: int, actual: int
    ) -> None:
        """Charge (or refund) the difference between the reported and the estimated tokens.

        A refund never leaves more than a full bucket (one minute's tokens).
        """
        _check_limit(tpm)
        if tpm is None or actual == estimated:
            return
        await self._correct(
            keys=[self._keys.rate_tpm(deployment)],
            args=[repr(self._clock()), tpm, actual - estimated],
        )

    async def cool_down(self, provider: str, seconds: float) -> None:
        """Hold every call to ``provider`` for ``seconds`` (a 429's Retry-After).

        A longer cooldown already running is kept. A new one is announced on the
        admission channel (:mod:`relayq.resilience.clearance`).
        """
        if seconds <= 0:
            return
        await self._cool_down(
            keys=[self._keys.cooldown(provider)],
            args=[repr(self._clock()), repr(float(seconds)), self._channel],
        )

    async def cooldown_remaining(self, provider: str) -> float:
        """Seconds left of ``provider``'s cooldown (0.0 when none)."""
        until = await self._redis.get(self._keys.cooldown(provider))
        return 0.0 if until is None else max(0.0, float(until) - self._clock())


def estimate_tokens(
    request: CallRequest,
) -> int:
    """A deliberately simple upper-ish estimate of the tokens a call will use.

    The prompt: characters of the messages' text, names and tool calls, plus
    the tools' JSON, divided by :data:`CHARS_PER_TOKEN` (about right for
    English with OpenAI's tokenizers; images and per-message overhead are
    not counted). The answer: the request's ``max_completion_tokens`` or
    ``max_tokens`` (the larger if both) or :data:`DEFAULT_COMPLETION_TOKENS`,
    times ``n``. :meth:`RateLimiter.correct` settles the difference. An embeddings
    request: its inputs (their bytes by :data:`CHARS_PER_TOKEN`, token ids one each), no
    answer.
    """
    if isinstance(
        request,
        EmbeddingRequest | TextCompletionRequest | ImageGenerationRequest | ResponsesRequest,
    ):
        return request.token_estimate(bytes_per_token=CHARS_PER_TOKEN)
    chars = sum(_message_chars(message) for message in request.messages)
    if request.tools:
        chars += len(json.dumps(request.tools))
    maxima = [m for m in (request.max_tokens, request.max_completion_tokens) if m is not None]
    answer = max(maxima) if maxima else DEFAULT_COMPLETION_TOKENS
    return math.ceil(chars / CHARS_PER_TOKEN) + answer * (request.n or 1)


def _message_chars(message: ChatMessage) -> int:
    chars = len(message.text()) + len(message.name or "")
    for call in message.tool_calls or []:
        chars += len(call.function.name) + len(call.function.arguments)
    return chars


def _check_limit(limit: int | None) -> None:
    if limit is not None and limit <= 0:
        raise ValueError("a limit must be positive, or None for unlimited")
