"""Per-API-key limits: requests and tokens per minute, and jobs running at once, in Redis.

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

Tokens per minute (TPM) are counted in fixed windows (a minute by default,
numbered from the epoch), as OpenAI and LiteLLM count them: a request is
refused when the window's tokens plus its estimate (:func:`request_tokens`)
exceed the limit. An admitted request *reserves* its estimate in the window,
in the same script, and the job's end corrects the window to the tokens the
provider reported (:meth:`KeyLimits.job_finished` with ``tokens``), in the
window the request was admitted in. The reservation is kept beside the job's
count (:attr:`~relayq.redis.keys.RedisKeys.key_tpm_reserved`), so whichever
process ends the job corrects it, in the script that already releases the
count: a key without a TPM limit costs nothing more at intake or at the end.
A job whose usage is unknown (failed, cancelled, expired, or released by the
reconciler) keeps its estimate charged; one that never ran (its intake failed,
an idempotent repeat, a cached answer) gives it back.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, cast

import redis.asyncio as aioredis

from relayq.redis.keys import RedisKeys
from relayq.redis.pipeline import CommandBatch
from relayq.resilience.ratelimit import GCRA_LUA
from relayq.schemas.chat import ChatMessage
from relayq.schemas.completions import TextCompletionRequest
from relayq.schemas.embeddings import EmbeddingRequest
from relayq.schemas.images import ImageGenerationRequest
from relayq.schemas.jobs import CallRequest
from relayq.schemas.responses import ResponsesRequest

__all__ = ["BYTES_PER_TOKEN", "Decision", "KeyLimit", "KeyLimits", "RunningJob", "request_tokens"]

BYTES_PER_TOKEN = 3
"""A request's prompt is estimated at one token per this many bytes of UTF-8 text."""

_ADMIT_HEAD = """
local now, rpm, max_jobs = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if max_jobs > 0 then
  local running = tonumber(redis.call('HGET', KEYS[2], ARGV[4]) or '0')
  if running >= max_jobs then return {0, 'max_concurrent_jobs', '', ''} end
end
local tat
if rpm > 0 then
  local wait
  tat, wait = gcra(KEYS[1], rpm, 1, now)
  if wait > 0 then return {0, 'requests_per_minute', string.format('%.17g', wait), ''} end
end
"""
_ADMIT_TPM_CHECK = """
local tpm, tokens = tonumber(ARGV[6]), tonumber(ARGV[7])
local used = tonumber(redis.call('GET', KEYS[4]) or '0')
if tokens > tpm then return {0, 'tokens_per_minute', '', tostring(used)} end
if used + tokens > tpm then return {0, 'tokens_per_minute', ARGV[9], tostring(used)} end
"""
_ADMIT_RATE_CHARGE = """
if rpm > 0 then store(KEYS[1], tat, now) end
"""
_ADMIT_TPM_CHARGE = """
redis.call('INCRBY', KEYS[4], tokens)
redis.call('PEXPIRE', KEYS[4], ARGV[8])
redis.call('HSET', KEYS[5], ARGV[5], ARGV[7] .. ' ' .. KEYS[4])
"""
_ADMIT_COUNT = """
if redis.call('ZADD', KEYS[3], 'NX', ARGV[1], ARGV[5]) == 1 then
  redis.call('HINCRBY', KEYS[2], ARGV[4], 1)
end
"""
_ADMITTED = "return {1, '', '', ''}\n"
# On admission, in the same step, the sync lane's message added to its stream (the
# last of KEYS and ARGV): a refused call sends nothing, an admitted one costs the API
# one round trip, not two.
_ADD = "redis.call('XADD', KEYS[#KEYS], '*', 'm', ARGV[#ARGV])\n"


def _admit_script(*, tpm: bool, then_add: bool) -> str:
    """The admission script of a key with (``tpm``) or without a TPM limit, and with
    (``then_add``) or without the sync lane's message to add once admitted.

    Returns {allowed, refusing limit, retry_after, tokens used in the window}; when
    allowed the job is counted, and with ``tpm`` its tokens reserved in the window. A
    TPM refusal with no retry_after: the request alone exceeds the limit. KEYS: the
    key's GCRA, the counts, the members (then with ``tpm`` its window and the
    reservations; then the lane's stream); ARGV: now, rpm, max jobs, key id, member
    (then with ``tpm`` the limit, the tokens, the window's PEXPIRE ms and the seconds
    left in it; then the lane's message). A key without a TPM limit (most) sends
    neither the window's keys nor its arguments, and its script reads none.
    """
    parts = [GCRA_LUA, _ADMIT_HEAD]
    if tpm:
        parts.append(_ADMIT_TPM_CHECK)
    parts.append(_ADMIT_RATE_CHARGE)
    if tpm:
        parts.append(_ADMIT_TPM_CHARGE)
    parts.append(_ADMIT_COUNT)
    if then_add:
        parts.append(_ADD)
    parts.append(_ADMITTED)
    return "".join(parts)


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
local reserved = redis.call('HGET', KEYS[3], ARGV[2])
if reserved then
  redis.call('HDEL', KEYS[3], ARGV[2])
  if ARGV[3] ~= '' then
    local space = string.find(reserved, ' ', 1, true)
    local window = string.sub(reserved, space + 1)
    local delta = tonumber(ARGV[3]) - tonumber(string.sub(reserved, 1, space - 1))
    if delta ~= 0 and redis.call('EXISTS', window) == 1 then
      redis.call('INCRBY', window, delta)
    end
  end
end
"""
"""Counts one job as ended, if it was counted; and corrects the tokens it reserved, if
any, to those it used (ARGV[3]; empty: unknown, the reservation stands). A window that
has expired is left so."""


class KeyLimit(str, Enum):
    """Which of a key's limits refused a request."""

    REQUESTS_PER_MINUTE = "requests_per_minute"
    TOKENS_PER_MINUTE = "tokens_per_minute"
    MAX_CONCURRENT_JOBS = "max_concurrent_jobs"


@dataclass(frozen=True, kw_only=True)
class Decision:
    allowed: bool
    retry_after: float | None = None
    """Seconds until the request rate admits again, or the tokens' window ends; ``None``
    when allowed, when the key has too many jobs running (a slot frees when one of them
    ends), or when the request alone asks more tokens than a whole window holds."""
    limit: KeyLimit | None = None
    """The limit that refused (concurrency first, then requests, then tokens)."""
    tokens_used: int | None = None
    """A TPM refusal: the tokens already counted in the window."""


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
        tpm_window_seconds: float = 60.0,
    ) -> None:
        """``batch``: the pipelines to share (a tick's); else the limits' own.
        ``tpm_window_seconds``: the length of a tokens-per-minute window (a minute, but
        for tests)."""
        if tpm_window_seconds <= 0:
            raise ValueError("tpm_window_seconds must be positive")
        self._tpm_window = tpm_window_seconds
        self._redis = redis
        self._batch = batch or CommandBatch(redis)
        self._keys = RedisKeys(key_prefix)
        self._counts_key = self._keys.key_running
        self._members_key = self._keys.key_members
        self._reserved_key = self._keys.key_tpm_reserved
        self._finished_keys = [self._counts_key, self._members_key, self._reserved_key]
        self._clock = clock
        # By (the key has a TPM limit, the sync lane's message is added once admitted).
        self._admit_scripts = {
            (tpm, then_add): redis.register_script(_admit_script(tpm=tpm, then_add=then_add))
            for tpm in (False, True)
            for then_add in (False, True)
        }
        self._started = redis.register_script(_STARTED)
        self._finished = redis.register_script(_FINISHED)

    async def admit(
        self,
        key_id: str,
        job_id: str,
        *,
        rpm: int | None,
        max_concurrent: int | None,
        tpm: int | None = None,
        tokens: int = 0,
        then_add: tuple[str, bytes] | None = None,
    ) -> Decision:
        """Admit job ``job_id`` of ``key_id`` if its limits allow (``None`` = unlimited).

        An admitted job is counted as unfinished: call :meth:`job_finished`
        when it ends, or at once if the intake fails after all. With ``tpm``,
        the request's estimated ``tokens`` must fit in the current window, and
        are reserved there. A refusal charges nothing. ``then_add`` (a stream
        and a message): added to the stream in the same step if the job is
        admitted, not otherwise.
        """
        for limit in (rpm, max_concurrent, tpm):
            if limit is not None and limit <= 0:
                raise ValueError("a limit must be positive, or None for unlimited")
        now = self._clock()
        keys: list[Any] = [self._keys.key_rpm(key_id), self._counts_key, self._members_key]
        args: list[Any] = [
            repr(now),
            rpm or 0,
            max_concurrent or 0,
            key_id,
            _member(key_id, job_id),
        ]
        if tpm:
            window = int(now // self._tpm_window)
            window_key = self._keys.key_tpm(key_id, str(window))
            left = (window + 1) * self._tpm_window - now
            keys += [window_key, self._reserved_key]
            args += [tpm, max(0, tokens), int(self._tpm_window * 2000), repr(left)]
        if then_add is not None:
            stream, entry = then_add
            keys.append(stream)
            args.append(entry)
        script = self._admit_scripts[bool(tpm), then_add is not None]
        allowed, limit_name, retry_after, used = await self._batch.run_script(script, keys, args)
        if allowed:
            return Decision(allowed=True)
        wait, used_text = _text(retry_after), _text(used)
        return Decision(
            allowed=False,
            retry_after=float(wait) if wait else None,
            limit=KeyLimit(_text(limit_name)),
            tokens_used=int(used_text) if used_text else None,
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

    async def job_finished(self, key_id: str, job_id: str, *, tokens: int | None = None) -> None:
        """Job ``job_id`` of ``key_id`` ended (or its intake failed); nothing if not counted.

        ``tokens``: the tokens it used (0 if it never ran), which replace its reserved
        estimate in its TPM window; ``None`` (unknown) leaves the estimate charged.
        """
        await self._batch.run_script(
            self._finished, self._finished_keys, [key_id, _member(key_id, job_id), _tokens(tokens)]
        )

    async def jobs_finished(self, jobs: Sequence[RunningJob]) -> None:
        """:meth:`job_finished` for each of ``jobs`` (their tokens unknown), in one round
        trip."""
        if not jobs:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for job in jobs:
                await self._finished(
                    keys=self._finished_keys,
                    args=[job.key_id, _member(job.key_id, job.job_id), ""],
                    client=pipe,
                )
            await pipe.execute()

    async def tokens_used(self, key_id: str) -> int:
        """The tokens counted for ``key_id`` in the current TPM window."""
        window = int(self._clock() // self._tpm_window)
        value = await self._redis.get(self._keys.key_tpm(key_id, str(window)))
        return int(value) if value is not None else 0

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


def _tokens(tokens: int | None) -> str:
    return "" if tokens is None else str(max(0, tokens))


def request_tokens(
    request: CallRequest,
) -> int:
    """A request's tokens as a key's TPM limit counts them before the call: cheap, and
    on the high side.

    The prompt: the UTF-8 bytes of the messages' text, names and tool calls, and of the
    tools' JSON, divided by :data:`BYTES_PER_TOKEN`. OpenAI's tokenizers give English
    about four characters a token, so three bytes over-count it by a third rather than
    under-count a terse prompt; a CJK character is three bytes and about one token, so it
    is counted about right where characters / 4 would count a quarter. No tokenizer runs
    (it costs more than the rest of the intake). The answer: ``max_completion_tokens``
    or ``max_tokens`` (the larger if both) times ``n``; nothing when neither is given
    (the reported usage counts it at the job's end). An embeddings request: its inputs'
    bytes divided the same way, token ids counted one each, and no answer.
    """
    if isinstance(
        request,
        EmbeddingRequest | TextCompletionRequest | ImageGenerationRequest | ResponsesRequest,
    ):
        return request.token_estimate(bytes_per_token=BYTES_PER_TOKEN)
    size = sum(_message_bytes(message) for message in request.messages)
    if request.tools:
        size += len(json.dumps(request.tools).encode())
    prompt = -(-size // BYTES_PER_TOKEN)
    maxima = [m for m in (request.max_tokens, request.max_completion_tokens) if m is not None]
    answer = max(maxima) * (request.n or 1) if maxima else 0
    return prompt + answer


def _message_bytes(message: ChatMessage) -> int:
    size = _utf8_len(message.text()) + _utf8_len(message.name or "")
    for call in message.tool_calls or []:
        size += _utf8_len(call.function.name) + _utf8_len(call.function.arguments)
    return size


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode())
