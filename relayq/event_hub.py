"""Following job events: replay from a position, then live, for many followers at once.

Every event is appended to its job's stream (kept for replay; its entry id is
the SSE id) and, by the same script, to one firehose stream with that id
(:mod:`relayq.events`). One reader per process blocks on ``XREAD`` of the
firehose alone and hands each entry, decoded once, to the followers of its
job. Reading one stream costs the same whether ten or a thousand jobs are
followed; naming every followed stream in each ``XREAD`` (as the hub did)
cost a thousand arguments per call at 500 followers.

A follower registers, notes where the firehose ends, then replays its job's
stored events; the reader reads from no later than that point, so nothing
falls between the replay and the live feed, and entries already replayed are
skipped by id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any, cast

from redis.exceptions import RedisError

from relayq.events import JobEvent, decode_entry, firehose_key, stream_key
from relayq.redis_pool import shared_redis

__all__ = ["EventHub", "after"]

log = logging.getLogger(__name__)

_BLOCK_MS = 2_000
"""How long one XREAD waits; well under the client's read timeout (below)."""
_READ_TIMEOUT = 10.0
_COUNT = 1_000
"""Most firehose entries one XREAD returns."""


def _order(entry_id: str) -> tuple[int, int]:
    millis, _, seq = entry_id.partition("-")
    return int(millis), int(seq or 0)


def after(entry_id: str, position: str) -> bool:
    """Whether stream id ``entry_id`` comes after ``position``."""
    return _order(entry_id) > _order(position)


class _Follower:
    def __init__(self, job_id: str, key_id: str) -> None:
        self.job_id = job_id
        self.key_id = key_id
        self.queue: asyncio.Queue[JobEvent | Exception] = asyncio.Queue()


class EventHub:
    """The process's one live reader of job events."""

    def __init__(self, redis_url: str, *, key_prefix: str) -> None:
        # A connection of its own: XREAD BLOCK holds it while waiting. Its read
        # timeout exceeds the block time, or a quiet spell would read as a lost Redis.
        self._redis = shared_redis(redis_url, socket_timeout=_READ_TIMEOUT)
        self._prefix = key_prefix
        self._firehose = firehose_key(key_prefix)
        self._followers: dict[str, set[_Follower]] = {}
        self._position: str | None = None
        """Where the reader reads the firehose from next (None: not reading)."""
        self._reader: asyncio.Task[None] | None = None

    async def aclose(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self._redis.aclose()

    async def follow(
        self, *, job_id: str, key_id: str, position: str = "0-0"
    ) -> AsyncIterator[JobEvent]:
        """Events of ``job_id`` after ``position``: stored ones, then live ones.

        Runs until the caller stops iterating; the caller decides when a job's
        events are over (after its terminal event).
        """
        follower = _Follower(job_id, key_id)
        self._followers.setdefault(job_id, set()).add(follower)
        try:
            await self._read_from(await self._firehose_end())
            seen = position
            for event in await self._replay(job_id, key_id, position):
                seen = event.id or seen
                yield event
            while True:
                item = await follower.queue.get()
                if isinstance(item, Exception):
                    raise item
                if item.id is not None and not after(item.id, seen):
                    continue
                seen = item.id or seen
                yield item
        finally:
            self._leave(follower)

    async def _firehose_end(self) -> str:
        """The id of the firehose's last entry ("0-0" when empty)."""
        last: list[Any] = await self._redis.xrevrange(self._firehose, count=1) or []
        return _id(last[0][0]) if last else "0-0"

    async def _read_from(self, position: str) -> None:
        """Make the reader read from ``position`` or earlier, starting it if it stopped."""
        if self._position is None or after(self._position, position):
            self._position = position
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read_forever())

    async def _replay(self, job_id: str, key_id: str, position: str) -> list[JobEvent]:
        key = stream_key(self._prefix, job_id)
        entries: list[Any] = await self._redis.xrange(key, min=f"({position}", max="+") or []
        return [decode_entry(job_id, key_id, entry_id, fields) for entry_id, fields in entries]

    def _leave(self, follower: _Follower) -> None:
        followers = self._followers.get(follower.job_id)
        if followers is None:
            return
        followers.discard(follower)
        if not followers:
            del self._followers[follower.job_id]

    async def _read_forever(self) -> None:
        while self._followers and self._position is not None:
            try:
                # RESP2 (the default): a list of [key, entries] pairs.
                replies = cast(
                    list[Any],
                    await self._redis.xread(
                        {self._firehose: self._position}, block=_BLOCK_MS, count=_COUNT
                    ),
                )
            except RedisError as exc:
                log.warning("event hub lost Redis: %s", exc)
                self._fail_all(exc)
                self._position = None
                return
            for _, entries in replies or []:
                if entries:
                    self._position = _id(entries[-1][0])
                for _, fields in entries:
                    self._dispatch(fields)
        self._position = None

    def _dispatch(self, fields: dict[Any, Any]) -> None:
        """One firehose entry to its job's followers, decoded once for all of them."""
        followers = self._followers.get(_id(fields[b"job"]))
        if not followers:
            return
        first = next(iter(followers))
        event = decode_entry(first.job_id, first.key_id, fields[b"id"], fields)
        for follower in followers:
            follower.queue.put_nowait(event)

    def _fail_all(self, exc: Exception) -> None:
        for followers in self._followers.values():
            for follower in followers:
                follower.queue.put_nowait(exc)


def _id(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
