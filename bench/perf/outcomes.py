"""How the harness learns that the jobs it submitted ended: relayq's event firehose.

relayq appends every job event, by one script, to the job's own stream and to
one stream of all jobs, ``{key_prefix}:event-firehose`` (:mod:`relayq.events.log`),
which its API reads to feed SSE followers. The harness reads that stream too:
one blocking ``XREAD`` at a time on a connection of its own, from where the
stream ended when the block began, keeping the first terminal event
(``succeeded``, ``failed``, ``cancelled``, ``expired``) of each job. Reading
costs the harness the entries relayq wrote, nothing per job in flight and
nothing per poll; it used to count ended rows in SQL every 20 ms, a query
that grew with the block's jobs, run in the harness's own process on SQLite
and by the server (counted as relayq's CPU) on PostgreSQL.

A worker appends a job's terminal event after its outcome is committed to SQL
(``relayq.execution.executor``: the ledger's write, then the event), so once every job
is seen here one read of SQL gives the record the figures are taken from, and
:meth:`JobOutcomes.disagreements` checks the two against each other.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, cast

import redis.asyncio as aioredis

from relayq.events.log import TERMINAL_EVENTS
from relayq.redis.keys import RedisKeys

__all__ = ["JobOutcomes"]

_BLOCK_MS = 1_000
_READ_TIMEOUT = 10.0
"""Above the block time, or a quiet second would read as a lost Redis."""
_COUNT = 5_000
_SPACING = 0.01
"""Seconds between one read's reply and the next read: what arrives meanwhile comes
in one reply, so the reads stay near 100 a second however many events relayq writes.
It delays the harness's topping-up of jobs in flight by as much at most (the SQL
count it replaced polled every 20 ms)."""
_TERMINAL = frozenset(event.value.encode() for event in TERMINAL_EVENTS)


class JobOutcomes:
    """The terminal outcome of each job, live off the firehose, for the jobs a block expects.

    Use as ``async with``: reading starts where the firehose ends on entry and
    stops on exit. A job's outcome may arrive before the harness knows the
    job's id (a job can end before its ``POST`` is answered), so outcomes are
    kept for every job and counted once the job is :meth:`expect`-ed.
    """

    def __init__(self, redis_url: str, *, key_prefix: str) -> None:
        self._redis = aioredis.Redis.from_url(redis_url, socket_timeout=_READ_TIMEOUT)
        self._firehose = RedisKeys(key_prefix).firehose
        self._seen: dict[str, str] = {}
        """Job id → its first terminal event's type, for every job seen ending."""
        self._expected: set[str] = set()
        self._changed = asyncio.Event()
        self._failure: Exception | None = None
        self._reader: asyncio.Task[None] | None = None
        self._stopping = False
        self.ended = 0
        """Expected jobs with an outcome."""
        self.entries = 0
        """Firehose entries read: every event of every job, not only terminal ones."""
        self.reads = 0
        self.repeated = 0
        """Terminal events after a job's first (not counted; relayq fences them off)."""

    async def __aenter__(self) -> JobOutcomes:
        last: list[Any] = await self._redis.xrevrange(self._firehose, count=1) or []
        position = _text(last[0][0]) if last else "0-0"
        self._reader = asyncio.create_task(self._read(position))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._stopping = True
        reader = self._reader
        # A cancellation that lands in redis-py's blocking read can be swallowed, and
        # the read made again (seen with redis 8.1): cancel until the task is done.
        while reader is not None and not reader.done():
            reader.cancel()
            await asyncio.wait({reader}, timeout=0.1)
        if reader is not None and not reader.cancelled():
            reader.result()  # the reader reports its failures through wait(): None
        await self._redis.aclose()

    def expect(self, job_id: str) -> None:
        """Count ``job_id``'s outcome in :attr:`ended`, whether it came already or comes later."""
        if job_id in self._expected:
            return
        self._expected.add(job_id)
        if job_id in self._seen:
            self._count()

    def outcome(self, job_id: str) -> str | None:
        """The type of ``job_id``'s terminal event, or None if none came yet."""
        return self._seen.get(job_id)

    def wake(self) -> None:
        """Return from a pending :meth:`wait` (something else changed: a submission failed)."""
        self._changed.set()

    async def wait(self, *, stall: float) -> None:
        """Until an expected job ends (or :meth:`wake`); raises if reading failed, or if
        nothing happened for ``stall`` seconds (a lost entry would otherwise hang the run)."""
        try:
            await asyncio.wait_for(self._changed.wait(), timeout=stall)
        except TimeoutError:
            raise TimeoutError(
                f"no job ended in {stall:g} s ({self.ended} of {len(self._expected)} seen)"
            ) from None
        self._changed.clear()
        if self._failure is not None:
            raise RuntimeError(f"reading the event firehose failed: {self._failure}")

    def disagreements(self, statuses: Mapping[str, str]) -> list[str]:
        """Expected jobs whose outcome here is not their status in ``statuses`` (job id →
        status, from SQL): none, when the firehose told the harness the truth."""
        wrong = []
        for job_id in sorted(self._expected):
            said, stored = self._seen.get(job_id), statuses.get(job_id)
            if said != stored:
                wrong.append(f"job {job_id}: firehose {said}, SQL {stored}")
        return wrong

    def _count(self) -> None:
        self.ended += 1
        self._changed.set()

    async def _read(self, position: str) -> None:
        try:
            while not self._stopping:
                # RESP2 (the default): a list of [key, entries] pairs.
                replies = cast(
                    list[Any],
                    await self._redis.xread(
                        {self._firehose: position}, block=_BLOCK_MS, count=_COUNT
                    ),
                )
                self.reads += 1
                for _, entries in replies or []:
                    if entries:
                        position = _text(entries[-1][0])
                        self._take(entries)
                await asyncio.sleep(_SPACING)
        except Exception as exc:  # reported by wait(), not lost with the task
            self._failure = exc
            self._changed.set()

    def _take(self, entries: list[Any]) -> None:
        self.entries += len(entries)
        for _, fields in entries:
            kind = fields[b"type"]
            if kind not in _TERMINAL:
                continue
            job_id = _text(fields[b"job"])
            if job_id in self._seen:
                self.repeated += 1
                continue
            self._seen[job_id] = _text(kind)
            if job_id in self._expected:
                self._count()


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
