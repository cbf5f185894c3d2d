"""The sync lane: sync chat calls go from the API to a worker's loop on a Redis stream.

A ``POST /v1/chat/completions`` caller holds its connection while its job
runs, so every millisecond between intake and the provider call is added to
its latency. Through Celery, a message crosses the publisher's thread, the
broker, the consumer's thread, the pool and a tracer thread: about 10 ms of
hand-offs and GIL contention before relayq does anything (docs/benchmarks.md).

So sync jobs skip Celery's consumer. Their message (the job itself: it has no
row yet) is added to a stream per provider queue (:meth:`relayq.redis.keys.RedisKeys.lane`)
straight from the API's loop. Each worker process reads the streams of the
queues it consumes in one consumer group, with ``XREADGROUP`` on its own loop,
only as many entries as it has free slots for, and runs each as
:meth:`relayq.execution.executor.Executor.run_direct` does for a Celery message. An
entry is acknowledged and deleted once its job's run ended: at-least-once, as
Celery's ``acks_late``.

Nothing is lost when a worker dies:

- its supervisor hands back what it took (:func:`relayq.recovery.handback.hand_back`),
  including the entries it read and never ran (:func:`release_consumer`);
- a worker lost with its supervisor leaves entries pending in the group, which
  another worker claims once they have been idle for the visibility timeout,
  as the broker redelivers a Celery message.

A redelivered entry is harmless: the job's fence and claims decide (see
``Executor.run_direct``). Celery still carries every other job; a sync job's
message handed back by the supervisor may come through Celery too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

import orjson
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError, ResponseError

from relayq.redis.cancelling import raise_if_cancelled
from relayq.redis.keys import RedisKeys
from relayq.redis.pipeline import CommandBatch

__all__ = [
    "LANE_GROUP",
    "LaneConsumer",
    "LaneSender",
    "release_consumer",
]

log = logging.getLogger(__name__)

LANE_GROUP = "relayq"
"""The one consumer group of every lane stream: each entry goes to one worker."""

_BLOCK_MS = 1_000
"""How long one read waits for entries (under the client's socket timeout)."""
_READ_COUNT = 64
"""Most entries one read takes (fewer when the worker has fewer free slots)."""
_MAX_BACKOFF_SECONDS = 60.0


class LaneSender:
    """The API's side: adds sync jobs' messages to their queue's stream, a tick at a time."""

    def __init__(self, batch: CommandBatch, *, key_prefix: str) -> None:
        self._batch = batch
        self._keys = RedisKeys(key_prefix)

    def entry(self, queue: str, message: dict[str, Any]) -> tuple[str, bytes]:
        """``message``'s stream and its encoding (the entry's one field, ``m``)."""
        return self._keys.lane(queue), orjson.dumps(message)

    async def send(self, queue: str, message: dict[str, Any]) -> None:
        """Add ``message`` to ``queue``'s stream; raises if Redis did not take it."""
        stream, body = self.entry(queue, message)
        replies = await self._batch.execute(lambda pipe: pipe.xadd(stream, {"m": body}))
        if isinstance(replies[0], Exception):
            raise replies[0]


RunMessage = Callable[[dict[str, Any]], Awaitable[Any]]
"""Runs one sync job's message to its end (``Executor.run_direct``)."""


class LaneConsumer:
    """A worker process's reader of the lane streams of the queues it consumes.

    ``capacity`` bounds the lane's jobs in flight here: it reads no more than
    it can start, so the rest stay in the stream for other workers.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        batch: CommandBatch,
        *,
        key_prefix: str,
        consumer: str,
        queues: Callable[[], list[str]],
        run: RunMessage,
        capacity: int,
        reclaim_after_seconds: float,
        reclaim_every_seconds: float = 30.0,
    ) -> None:
        self._redis = redis
        self._batch = batch
        self._keys = RedisKeys(key_prefix)
        self._consumer = consumer
        self._queues = queues
        self._run = run
        self._capacity = capacity
        self._reclaim_after_ms = int(reclaim_after_seconds * 1000)
        self._reclaim_every = reclaim_every_seconds
        self._groups: set[str] = set()
        self._cursors: dict[str, Any] = {}
        self._running: set[asyncio.Task[None]] = set()
        self._slot_freed = asyncio.Event()
        self._stopping = False
        self._reader: asyncio.Task[None] | None = None

    @property
    def in_flight(self) -> int:
        return len(self._running)

    def start(self) -> None:
        """Start reading (call on the running loop)."""
        self._reader = asyncio.create_task(self.run_forever(), name="sync-lane")

    async def run_forever(self) -> None:
        """Read and run entries until :meth:`stop`; Redis errors are waited out."""
        next_reclaim = time.monotonic()
        while not self._stopping:
            try:
                streams = await self._ensure_groups()
                if time.monotonic() >= next_reclaim:
                    next_reclaim = time.monotonic() + self._reclaim_every
                    await self._reclaim(streams)
                await self._read(streams)
            except asyncio.CancelledError:
                raise
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    log.warning("sync lane read failed: %s", exc)
                    await asyncio.sleep(1)
                self._groups.clear()  # a stream was deleted: make its group again
            except (RedisError, OSError) as exc:
                log.warning("sync lane lost Redis: %s", exc)
                await asyncio.sleep(1)

    async def stop(self, wait_seconds: float) -> None:
        """Read no more, and wait (up to ``wait_seconds``) for the lane's jobs in flight.

        The read under way ends within its block time, and what it brought is
        run too: a worker that stops leaves nothing read and not begun.
        """
        self._stopping = True
        self._slot_freed.set()
        if self._reader is not None:
            _, late = await asyncio.wait({self._reader}, timeout=_BLOCK_MS / 1000 + 1)
            for task in late:
                task.cancel()
        if self._running:
            await asyncio.wait(set(self._running), timeout=wait_seconds)

    async def _ensure_groups(self) -> list[str]:
        streams = [self._keys.lane(queue) for queue in self._queues()]
        for stream in streams:
            if stream in self._groups:
                continue
            with contextlib.suppress(ResponseError):  # BUSYGROUP: it exists
                # From 0: entries added before any worker read this stream count too.
                await self._redis.xgroup_create(stream, LANE_GROUP, id="0", mkstream=True)
            self._groups.add(stream)
        return streams

    async def _read(self, streams: list[str]) -> None:
        free = self._capacity - len(self._running)
        if free <= 0:
            if self._stopping:
                return
            self._slot_freed.clear()
            await self._slot_freed.wait()
            return
        if not streams:
            await asyncio.sleep(_BLOCK_MS / 1000)
            return
        answer = cast(
            list[Any],
            await self._redis.xreadgroup(
                LANE_GROUP,
                self._consumer,
                dict.fromkeys(streams, ">"),
                count=min(free, _READ_COUNT),
                block=_BLOCK_MS,
            ),
        )
        raise_if_cancelled()
        for stream, entries in answer or []:
            self._start(stream.decode(), entries)
        if answer:
            # The jobs just read send their calls first; the next read waits its turn
            # (sent first, it stood between a sync call and its provider call).
            await asyncio.sleep(0)

    async def _reclaim(self, streams: list[str]) -> None:
        """Take entries another consumer read and left for the visibility timeout."""
        for stream in streams:
            free = self._capacity - len(self._running)
            if free <= 0:
                return
            # A scan goes on from where the last one stopped, so idle entries behind
            # many live ones are reached too (XAUTOCLAIM's cursor; 0-0: from the start).
            reply = await self._redis.xautoclaim(
                stream,
                LANE_GROUP,
                self._consumer,
                min_idle_time=self._reclaim_after_ms,
                start_id=self._cursors.get(stream, "0-0"),
                count=free,
            )
            self._cursors[stream] = reply[0] if reply else "0-0"
            entries = reply[1] if reply else []
            if entries:
                log.warning("%s: %d sync jobs taken over from a lost worker", stream, len(entries))
                self._start(stream, entries, redelivered=True)

    def _start(
        self,
        stream: str,
        entries: list[tuple[bytes, dict[bytes, bytes] | None]],
        *,
        redelivered: bool = False,
    ) -> None:
        """Run each entry's job; ``redelivered``: another consumer read them first."""
        for entry_id, fields in entries:
            if not fields:  # deleted meanwhile (Redis 7's XAUTOCLAIM says so)
                continue
            task = asyncio.create_task(self._entry(stream, entry_id, fields[b"m"], redelivered))
            self._running.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._slot_freed.set()

    async def _entry(self, stream: str, entry_id: bytes, body: bytes, redelivered: bool) -> None:
        """Run one entry's job to its end, then acknowledge and delete the entry.

        A run that fails to start or record (the database is unreachable) is
        tried again after a backoff, as a Celery message would be published
        again; the next try is marked ``redelivered``, so the job's row decides.
        """
        message: dict[str, Any] = orjson.loads(body)
        if redelivered:
            message["redelivered"] = True
        tries = 0
        while True:
            try:
                await self._run(message)
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The next try goes by the job's row, as any redelivery does.
                message["redelivered"] = True
                tries += 1
                delay = min(_MAX_BACKOFF_SECONDS, 2.0 ** min(tries, 6))
                log.warning(
                    "sync job %s not run (%s); again in %ss", message["job"]["id"], exc, delay
                )
                if self._stopping:
                    return  # left pending: the supervisor or another worker takes it
                await asyncio.sleep(delay)

        def ack(pipe: Pipeline) -> None:
            pipe.xack(stream, LANE_GROUP, entry_id)
            pipe.xdel(stream, entry_id)

        try:
            await self._batch.execute(ack)
        except RedisError as exc:  # redelivered later: its fence and row decide
            log.warning("sync lane entry %s of %s not acknowledged: %s", entry_id, stream, exc)


async def release_consumer(
    redis: aioredis.Redis, *, key_prefix: str, consumer: str
) -> dict[str, dict[str, Any]]:
    """The messages a dead worker (``consumer``) read from the lane and never finished,
    by job id; their entries are acknowledged and deleted, and the consumer removed.

    The caller sends them again (the supervisor, with the rest of what that
    worker held).
    """
    messages: dict[str, dict[str, Any]] = {}
    async for key in redis.scan_iter(match=RedisKeys(key_prefix).lane_pattern, _type="stream"):
        stream = key.decode() if isinstance(key, bytes) else str(key)
        try:
            pending = await redis.xpending_range(
                stream, LANE_GROUP, min="-", max="+", count=100_000, consumername=consumer
            )
        except ResponseError:  # no group on it yet
            continue
        ids = [entry["message_id"] for entry in pending]
        for entry_id in ids:
            found = cast(list[Any], await redis.xrange(stream, min=entry_id, max=entry_id))
            for _, fields in found:
                message: dict[str, Any] = orjson.loads(fields[b"m"])
                messages[str(message["job"]["id"])] = message
        async with redis.pipeline(transaction=False) as pipe:
            if ids:
                pipe.xack(stream, LANE_GROUP, *ids)
                pipe.xdel(stream, *ids)
            pipe.xgroup_delconsumer(stream, LANE_GROUP, consumer)
            await pipe.execute()
    return messages
