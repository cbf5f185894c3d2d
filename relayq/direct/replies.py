"""Answers sent straight to the API process whose caller waits on them.

A ``POST /v1/chat/completions`` caller holds a connection open. Its job used
to be followed like any other, through the job's event stream and the API's
event hub (an ``XREAD`` over every followed stream, each entry decoded per
follower). Instead, each API process reads one reply stream of its own
(:class:`ReplyHub`), and every run of a job that names it as ``reply_to``
sends that job's deltas and ending there (:class:`Replies`), a tick at a
time, in pipelines of their own (a caller's first delta does not wait behind
the tick's events, limits and counts). One stream read serves every
waiting caller of the process; nothing about a job's reply touches SQL.

A reply is ``delta`` (chunks of the attempt in progress), ``attempt_failed``
(that attempt's deltas are void: another attempt follows), or the job's
terminal event type with its outcome. A reply stream nobody reads (its API
process died) expires by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any, cast

import orjson
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from relayq.redis.cancelling import raise_if_cancelled
from relayq.redis.keys import RedisKeys
from relayq.redis.pipeline import CommandBatch

__all__ = ["Replies", "Reply", "ReplyHub"]

log = logging.getLogger(__name__)

_BLOCK_MS = 2_000
_MAX_LENGTH = 100_000
"""Entries kept per reply stream (approximately): far more than a tick's worth."""
_TTL_MS = 3_600_000
"""A reply stream expires an hour after its last reply (its API process is gone)."""


@dataclass(frozen=True)
class Reply:
    """One reply about one job: ``type`` is ``delta``, ``attempt_failed`` or terminal.

    A ``delta`` carries ``sse``, the caller's SSE lines rendered by the worker
    (:meth:`relayq.execution.deltas.Delta.sse`), which the API writes without decoding.
    """

    job_id: str
    type: str
    data: dict[str, Any] = field(default_factory=dict)
    sse: bytes | None = None

    @property
    def terminal(self) -> bool:
        return self.type in ("succeeded", "failed", "cancelled", "expired")


_FENCE_SECONDS = 24 * 3600
"""How long a direct job's fence outlives its first delivery: past any redelivery."""


class Replies:
    """The worker's side: sends replies to the streams jobs name, a tick at a time."""

    def __init__(self, batch: CommandBatch, *, key_prefix: str) -> None:
        self._batch = batch
        self._keys = RedisKeys(key_prefix)

    async def first_delivery(self, job_id: str) -> tuple[bool, bool]:
        """For a direct job's message: (is this its first delivery, did its caller leave).

        A redelivered message (its first worker died) finds the fence set and
        goes the way of any stored job: its row decides.
        """
        fence = self._keys.direct_fence(job_id)
        cancelled = self._keys.direct_cancelled(job_id)

        def add(pipe: Pipeline) -> None:
            pipe.set(fence, "1", nx=True, ex=_FENCE_SECONDS)
            pipe.exists(cancelled)

        first, left = await self._batch.execute(add)
        for reply in (first, left):
            if isinstance(reply, Exception):
                raise reply
        return bool(first), bool(left)

    async def caller_left(self, job_id: str) -> bool:
        """Whether a direct job's caller left before its call (see ``first_delivery``)."""
        key = self._keys.direct_cancelled(job_id)
        (left,) = await self._batch.execute(lambda pipe: pipe.exists(key))
        if isinstance(left, Exception):
            raise left
        return bool(left)

    async def send(self, stream: str, reply: Reply) -> None:
        """Send ``reply`` (best effort: the caller's connection fails if Redis does)."""
        await asyncio.shield(self.send_soon(stream, [reply]))

    def send_soon(self, stream: str, replies: list[Reply]) -> asyncio.Future[None]:
        """Queue ``replies`` in the next pipeline now (no task, no await); the future
        of their send. Best effort: a lost send is logged (the caller's connection
        fails if Redis does), and the future resolves."""

        def add(pipe: Pipeline) -> None:
            for reply in replies:
                fields: dict[Any, Any] = {
                    "job": reply.job_id,
                    "type": reply.type,
                    "data": orjson.dumps(reply.data),
                }
                if reply.sse is not None:
                    fields["sse"] = reply.sse
                pipe.xadd(stream, fields, maxlen=_MAX_LENGTH, approximate=True)
            pipe.pexpire(stream, _TTL_MS)

        sent = self._batch.execute_soon(add)
        done: asyncio.Future[None] = sent.get_loop().create_future()
        sent.add_done_callback(functools.partial(_settle, stream, len(replies), done))
        return done


def _settle(stream: str, count: int, done: asyncio.Future[None], sent: asyncio.Future[Any]) -> None:
    if done.done():
        return
    if sent.cancelled():
        done.cancel()
    elif isinstance(exc := sent.exception(), RedisError):
        log.warning("%d replies to %s not sent: %s", count, stream, exc)
        done.set_result(None)
    elif exc is not None:
        done.set_exception(exc)
    else:
        done.set_result(None)


class ReplyHub:
    """The API process's side: one reader of its reply stream, for every waiting caller."""

    def __init__(self, redis: aioredis.Redis, *, key_prefix: str) -> None:
        # A client of its own: XREAD BLOCK holds its connection while it waits.
        self._redis = redis
        self.stream = RedisKeys(key_prefix).replies(uuid.uuid4().hex)
        self._waiters: dict[str, asyncio.Queue[Reply | Exception]] = {}
        self._reader: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start reading (call on the running loop)."""
        self._reader = asyncio.create_task(self._read_forever())

    async def aclose(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        with contextlib.suppress(RedisError):
            await self._redis.delete(self.stream)
        await self._redis.aclose()

    def expect(self, job_id: str) -> asyncio.Queue[Reply | Exception]:
        """The queue ``job_id``'s replies will arrive on: call it before the job is sent,
        and :meth:`forget` once they no longer matter."""
        queue: asyncio.Queue[Reply | Exception] = asyncio.Queue()
        self._waiters[job_id] = queue
        return queue

    def forget(self, job_id: str) -> None:
        self._waiters.pop(job_id, None)

    async def _read_forever(self) -> None:
        position = "0-0"  # the stream is this process's own: nothing in it predates us
        while True:
            try:
                replies = cast(
                    list[Any], await self._redis.xread({self.stream: position}, block=_BLOCK_MS)
                )
                raise_if_cancelled()
            except RedisError as exc:
                log.warning("reply hub lost Redis: %s", exc)
                for queue in self._waiters.values():
                    queue.put_nowait(exc)
                await asyncio.sleep(0.5)
                continue
            for _, entries in replies or []:
                for entry_id, fields in entries:
                    position = entry_id
                    self._dispatch(fields)
            if replies:
                await asyncio.sleep(0)  # the woken callers answer before the next read

    def _dispatch(self, fields: dict[bytes, bytes]) -> None:
        queue = self._waiters.get(fields[b"job"].decode())
        if queue is None:  # its caller left
            return
        queue.put_nowait(
            Reply(
                job_id=fields[b"job"].decode(),
                type=fields[b"type"].decode(),
                data=orjson.loads(fields[b"data"]),
                sse=fields.get(b"sse"),
            )
        )
