"""Following job events: replay from a position, then live, for many followers at once.

Every event is appended to its job's stream (kept for replay; its entry id is
the SSE id) and, by the same script, to one firehose stream with that id
(:mod:`relayq.events.log`). One reader per process blocks on ``XREAD`` of the
firehose alone. Reading one stream costs the same whether ten or a thousand
jobs are followed; naming every followed stream in each ``XREAD`` (as the hub
did) cost a thousand arguments per call at 500 followers.

Followers are handed SSE messages, not events: each entry of a followed job
is spliced into its message once (:func:`relayq.events.log.stored_frame`, no JSON
decoded or encoded), and every follower of that job gets the same bytes. A
follower's messages wait in a list until it takes them, all at once, as one
write: under load a follower costs a list append per event and one wake-up
and one write per batch, where it cost a queue item, a task, a JSON decoding
and encoding and a write per event. With 500 jobs followed (one follower
each, ten deltas a job, the API alone) that took the API about 200 µs of CPU
per event delivered; this takes about 100 µs, most of it the socket write.

A follower registers, notes where the firehose ends, then replays its job's
stored events; the reader reads from no later than that point, so nothing
falls between the replay and the live feed, and entries already replayed are
skipped by id.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any, cast

from redis.exceptions import RedisError

from relayq.events.log import Frame, entry_order, stored_frame
from relayq.redis.cancelling import raise_if_cancelled
from relayq.redis.keys import RedisKeys
from relayq.redis.pool import shared_redis

__all__ = ["EventHub", "Feed"]

log = logging.getLogger(__name__)

_BLOCK_MS = 2_000
"""How long one XREAD waits; well under the client's read timeout (below)."""
_READ_TIMEOUT = 10.0
_COUNT = 1_000
"""Most firehose entries one XREAD returns."""


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Feed:
    """One follower's share of its job's events: SSE messages, taken a batch at a time."""

    def __init__(self, job_id: str, position: str) -> None:
        self.job = job_id.encode()
        self.job_json = json.dumps(job_id).encode()
        self.ended = False
        """Whether the job's terminal event was taken: nothing follows it."""
        self._frames: list[Frame] = []
        self._seen = entry_order(position.encode())
        self._waiter: asyncio.Future[None] | None = None
        self._error: Exception | None = None
        self._quiet_until = 0.0
        """When the pending :meth:`next` gives up waiting (loop time)."""
        self._quiet_timer: asyncio.TimerHandle | None = None

    async def next(self, *, quiet: float) -> bytes | None:
        """The messages that came since the last call, joined for one write.

        Returns at once when some are waiting, else with the first to come, or
        None when none came for ``quiet`` seconds (time for a heartbeat). Raises
        what stopped the hub's reader, once the messages read before it are taken.
        """
        loop = asyncio.get_running_loop()
        self._quiet_until = loop.time() + quiet
        while True:
            messages = self._take()
            if messages:
                return messages
            if self._error is not None:
                raise self._error
            if loop.time() >= self._quiet_until:
                return None
            if self._quiet_timer is None:
                self._quiet_timer = loop.call_at(self._quiet_until, self._on_quiet)
            waiter = self._waiter = loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None

    def _on_quiet(self) -> None:
        # One timer per feed, moved on only when it fires: a busy feed would
        # otherwise start and cancel a timer for every batch it takes.
        self._quiet_timer = None
        loop = asyncio.get_running_loop()
        if loop.time() < self._quiet_until:
            self._quiet_timer = loop.call_at(self._quiet_until, self._on_quiet)
        elif self._waiter is not None:
            _wake(self._waiter)

    def _close(self) -> None:
        if self._quiet_timer is not None:
            self._quiet_timer.cancel()
            self._quiet_timer = None

    def _take(self) -> bytes:
        """The waiting messages not sent yet, up to the terminal one."""
        if not self._frames:
            return b""
        frames, self._frames = self._frames, []
        messages = []
        for frame in frames:
            if frame.order <= self._seen:
                continue  # replayed already, or read twice after a reader restart
            self._seen = frame.order
            messages.append(frame.message)
            if frame.terminal:
                self.ended = True
                self._frames = []
                break
        return b"".join(messages)

    def _add(self, frame: Frame) -> None:
        self._frames.append(frame)
        if self._waiter is not None:
            _wake(self._waiter)

    def _replayed(self, frames: list[Frame]) -> None:
        """Stored events go first: live ones that came meanwhile are newer, or repeats."""
        self._frames[:0] = frames

    def _fail(self, exc: Exception) -> None:
        self._error = exc
        if self._waiter is not None:
            _wake(self._waiter)


class EventHub:
    """The process's one live reader of job events."""

    def __init__(self, redis_url: str, *, key_prefix: str) -> None:
        # A connection of its own: XREAD BLOCK holds it while waiting. Its read
        # timeout exceeds the block time, or a quiet spell would read as a lost Redis.
        self._redis = shared_redis(redis_url, socket_timeout=_READ_TIMEOUT)
        self._keys = RedisKeys(key_prefix)
        self._firehose = self._keys.firehose
        self._followers: dict[bytes, set[Feed]] = {}
        """Job id (as stored) → the feeds following it."""
        self._position: str | None = None
        """Where the reader reads the firehose from next (None: not reading)."""
        self._reader: asyncio.Task[None] | None = None

    async def aclose(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self._redis.aclose()

    @contextlib.asynccontextmanager
    async def follow(self, *, job_id: str, position: str = "0-0") -> AsyncIterator[Feed]:
        """A feed of ``job_id``'s events after ``position``: stored ones, then live ones.

        The feed is live while the block runs; the caller decides when a job's
        events are over (:attr:`Feed.ended`, after its terminal event).
        """
        feed = Feed(job_id, position)
        self._followers.setdefault(feed.job, set()).add(feed)
        try:
            await self._read_from(await self._firehose_end())
            feed._replayed(await self._replay(feed, position))
            yield feed
        finally:
            self._leave(feed)

    async def _firehose_end(self) -> str:
        """The id of the firehose's last entry ("0-0" when empty)."""
        last: list[Any] = await self._redis.xrevrange(self._firehose, count=1) or []
        return _id(last[0][0]) if last else "0-0"

    async def _read_from(self, position: str) -> None:
        """Make the reader read from ``position`` or earlier, starting it if it stopped."""
        if self._position is None or _after(self._position, position):
            self._position = position
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read_forever())

    async def _replay(self, feed: Feed, position: str) -> list[Frame]:
        key = self._keys.events(feed.job.decode())
        entries: list[Any] = await self._redis.xrange(key, min=f"({position}", max="+") or []
        return [
            stored_frame(entry_id, fields, job_json=feed.job_json) for entry_id, fields in entries
        ]

    def _leave(self, feed: Feed) -> None:
        feed._close()
        feeds = self._followers.get(feed.job)
        if feeds is None:
            return
        feeds.discard(feed)
        if not feeds:
            del self._followers[feed.job]

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
                raise_if_cancelled()
            except RedisError as exc:
                log.warning("event hub lost Redis: %s", exc)
                self._fail_all(exc)
                self._position = None
                return
            for _, entries in replies or []:
                if entries:
                    self._position = _id(entries[-1][0])
                    self._dispatch(entries)
        self._position = None

    def _dispatch(self, entries: list[Any]) -> None:
        """Each firehose entry to its job's followers: one message, the same bytes for all."""
        followers = self._followers
        for _, fields in entries:
            feeds = followers.get(fields[b"job"])
            if not feeds:
                continue
            first = next(iter(feeds))
            frame = stored_frame(fields[b"id"], fields, job_json=first.job_json)
            for feed in feeds:
                feed._add(frame)

    def _fail_all(self, exc: Exception) -> None:
        for feeds in self._followers.values():
            for feed in feeds:
                feed._fail(exc)


def _after(entry_id: str, position: str) -> bool:
    """Whether stream id ``entry_id`` comes after ``position``."""
    return entry_order(entry_id.encode()) > entry_order(position.encode())


def _id(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
