"""Following job events: replay from a position, then live, for many followers at once.

One reader per process blocks on ``XREAD`` over every followed stream at
once and hands each entry to the followers of its job, so hundreds of SSE
clients cost one Redis connection, not hundreds. A follower registers before
it replays the stored events, so nothing falls between the replay and the
live feed; entries it has already seen are skipped by id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any, cast

from redis.exceptions import RedisError

from relayq.events import JobEvent, decode_entry, stream_key
from relayq.redis_pool import shared_redis

__all__ = ["EventHub", "after"]

log = logging.getLogger(__name__)

_BLOCK_MS = 2_000
"""How long one XREAD waits; well under the client's read timeout (below)."""
_READ_TIMEOUT = 10.0


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
    """The process's one live reader of job event streams."""

    def __init__(self, redis_url: str, *, key_prefix: str) -> None:
        # A connection of its own: XREAD BLOCK holds it while waiting. Its read
        # timeout exceeds the block time, or a quiet spell would read as a lost Redis.
        self._redis = shared_redis(redis_url, socket_timeout=_READ_TIMEOUT)
        self._prefix = key_prefix
        self._wake = f"{key_prefix}:hub-wake:{uuid.uuid4().hex}"
        self._followers: dict[str, set[_Follower]] = {}
        self._positions: dict[str, str] = {}
        self._reader: asyncio.Task[None] | None = None
        self._wakers: set[asyncio.Task[None]] = set()

    async def aclose(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        with contextlib.suppress(RedisError):
            await self._redis.delete(self._wake)
        await self._redis.aclose()

    async def follow(
        self, *, job_id: str, key_id: str, position: str = "0-0"
    ) -> AsyncIterator[JobEvent]:
        """Events of ``job_id`` after ``position``: stored ones, then live ones.

        Runs until the caller stops iterating; the caller decides when a job's
        events are over (after its terminal event).
        """
        follower = _Follower(job_id, key_id)
        key = stream_key(self._prefix, job_id)
        self._join(key, follower, position)
        try:
            seen = position
            for event in await self._replay(key, job_id, key_id, position):
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
            self._leave(key, follower)

    async def _replay(self, key: str, job_id: str, key_id: str, position: str) -> list[JobEvent]:
        entries: list[Any] = await self._redis.xrange(key, min=f"({position}", max="+") or []
        return [decode_entry(job_id, key_id, entry_id, fields) for entry_id, fields in entries]

    def _join(self, key: str, follower: _Follower, position: str) -> None:
        followers = self._followers.setdefault(key, set())
        if not followers:
            self._positions[key] = position
        elif after(self._positions[key], position):
            # Read this stream from the earliest position any follower needs.
            self._positions[key] = position
        followers.add(follower)
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read_forever())
        else:
            wake = asyncio.create_task(self._wake_reader())
            self._wakers.add(wake)
            wake.add_done_callback(self._wakers.discard)

    def _leave(self, key: str, follower: _Follower) -> None:
        followers = self._followers.get(key)
        if followers is None:
            return
        followers.discard(follower)
        if not followers:
            del self._followers[key]
            self._positions.pop(key, None)

    async def _wake_reader(self) -> None:
        """Make the blocked XREAD return, so it includes a newly followed stream."""
        with contextlib.suppress(RedisError):
            await self._redis.xadd(self._wake, {"w": "1"}, maxlen=10, approximate=True)

    async def _read_forever(self) -> None:
        wake_position = "$"
        while self._followers:
            streams: dict[Any, Any] = dict(self._positions)
            streams[self._wake] = wake_position
            try:
                # RESP2 (the default): a list of [key, entries] pairs.
                replies = cast(list[Any], await self._redis.xread(streams, block=_BLOCK_MS))
            except RedisError as exc:
                log.warning("event hub lost Redis: %s", exc)
                self._fail_all(exc)
                return
            for raw_key, entries in replies or []:
                key = raw_key.decode() if isinstance(raw_key, bytes) else str(raw_key)
                if key == self._wake:
                    wake_position = _id(entries[-1][0])
                    continue
                self._dispatch(key, entries)

    def _dispatch(self, key: str, entries: list[Any]) -> None:
        followers = self._followers.get(key)
        if not followers:
            return
        self._positions[key] = _id(entries[-1][0])
        for entry_id, fields in entries:
            for follower in followers:
                event = decode_entry(follower.job_id, follower.key_id, entry_id, fields)
                follower.queue.put_nowait(event)

    def _fail_all(self, exc: Exception) -> None:
        for followers in self._followers.values():
            for follower in followers:
                follower.queue.put_nowait(exc)


def _id(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
