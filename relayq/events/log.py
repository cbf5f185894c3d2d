"""Job events: an ordered log per job in a Redis Stream, and the listeners told of each.

Every job emits ``queued``, ``started``, ``delta`` (text as the provider
streams it), ``attempt_failed``, ``fallback`` and one terminal event
(``succeeded`` / ``failed`` / ``cancelled`` / ``expired``). The stream entry
id is the event id (and the SSE id), so a reader resumes exactly where it
stopped. A stream is capped in length and expires a while after its job
ends; SQL stays the record of the job itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

import orjson
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from relayq.redis.keys import RedisKeys
from relayq.redis.pipeline import CommandBatch

__all__ = [
    "TERMINAL_EVENTS",
    "EventListener",
    "EventLog",
    "EventType",
    "Frame",
    "JobEvent",
    "entry_order",
    "event_frame",
    "stored_frame",
    "terminal_data",
]

log = logging.getLogger(__name__)


class EventType(str, Enum):
    QUEUED = "queued"
    STARTED = "started"
    DELTA = "delta"
    ATTEMPT_FAILED = "attempt_failed"
    FALLBACK = "fallback"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


TERMINAL_EVENTS = frozenset(
    {EventType.SUCCEEDED, EventType.FAILED, EventType.CANCELLED, EventType.EXPIRED}
)


@dataclass(frozen=True, kw_only=True)
class JobEvent:
    """One event of one job. ``id`` is the stream entry id once stored."""

    job_id: str
    key_id: str
    type: EventType
    data: dict[str, Any] = field(default_factory=dict)
    id: str | None = None
    timestamp: float = field(default_factory=time.time)
    deliveries: tuple[str, ...] | None = field(default=None, compare=False)
    """Webhook deliveries planned with this outcome, when its writer knows them.

    Not logged: it spares listeners a lookup (None: they look them up)."""

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_EVENTS


class EventListener(Protocol):
    """Told of each lifecycle event (not ``delta``) after it is logged."""

    async def on_job_event(self, event: JobEvent) -> None: ...


FIREHOSE_MAX = 100_000
"""Entries the firehose keeps (approximately): minutes of events, for live readers only."""

# One event, appended to its job's stream (for replay, its id the SSE id) and to
# the firehose with that id (for live readers), atomically.
_APPEND = """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*',
    'type', ARGV[4], 'data', ARGV[5], 'ts', ARGV[6])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*',
    'job', ARGV[3], 'id', id, 'type', ARGV[4], 'data', ARGV[5], 'ts', ARGV[6])
if ARGV[7] ~= '0' then
    redis.call('PEXPIRE', KEYS[1], ARGV[7])
end
return id
"""

# The ``delta`` events of a tick, in one call: per event, the same two appends as
# _APPEND (a delta is never terminal: no expiry). KEYS[1] is the firehose,
# KEYS[1 + i] event i's job stream; ARGV: the two lengths, then per event its
# job, type, data and timestamp. One command instead of one per event: redis-py
# encodes and packs each command's arguments in Python, a few µs an argument.
_APPEND_MANY = """
local ids = {}
for i = 1, #KEYS - 1 do
    local at = 2 + (i - 1) * 4
    local id = redis.call('XADD', KEYS[i + 1], 'MAXLEN', '~', ARGV[1], '*',
        'type', ARGV[at + 2], 'data', ARGV[at + 3], 'ts', ARGV[at + 4])
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*',
        'job', ARGV[at + 1], 'id', id, 'type', ARGV[at + 2], 'data', ARGV[at + 3],
        'ts', ARGV[at + 4])
    ids[i] = id
end
return ids
"""
_DELTA = EventType.DELTA.value.encode()


class EventLog:
    """Appends job events to their streams and tells the listeners."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        key_prefix: str,
        max_events: int,
        retention_seconds: float,
        listeners: Sequence[EventListener] = (),
        batch: CommandBatch | None = None,
    ) -> None:
        self._redis = redis
        # Every job's events share pipelines: one round trip for many jobs under load
        # (and with whatever else shares ``batch``).
        self._batch = batch or CommandBatch(redis)
        self._keys = RedisKeys(key_prefix)
        self._firehose = self._keys.firehose
        self._append = redis.register_script(_APPEND)
        self._append_many = redis.register_script(_APPEND_MANY)
        self._round: list[JobEvent] | None = None
        """Delta events gathered for one script call not yet in a pipeline (see
        :meth:`queue_deltas`); None when no round is open."""
        self._round_done: asyncio.Future[None] | None = None
        self._max_events = max_events
        self._retention_ms = int(retention_seconds * 1000)
        self.listeners = list(listeners)

    def key(self, job_id: str) -> str:
        return self._keys.events(job_id)

    async def emit(self, event: JobEvent) -> JobEvent:
        """Log ``event`` (best effort: a Redis failure is logged, not raised)."""
        # Deltas queued from now on follow this event: they go in a round of their
        # own, after it (a job's started event before its first delta).
        self._round = None

        def add(pipe: Pipeline) -> None:
            self._add(pipe, event)

        try:
            replies = await self._batch.execute(add)
            if isinstance(replies[0], Exception):
                raise replies[0]
            stored = dataclasses.replace(event, id=_text(replies[0]))
        except RedisError as exc:
            log.warning("event %s of %s not logged: %s", event.type.value, event.job_id, exc)
            stored = event
        if event.type is not EventType.DELTA:
            await self._tell(stored)
        return stored

    def queue_deltas(self, events: Sequence[JobEvent]) -> asyncio.Future[None]:
        """Log ``delta`` events, with no task or await: those of every job that sends
        some in this tick join one round, one command of the tick's pipeline. The
        future of that round's end (it never fails: deltas are best effort, like
        :meth:`emit`, and a lost round is logged).

        The future is shared by every caller of the round: await it shielded.
        """
        if self._round is None or self._round_done is None:
            round_: list[JobEvent] = []
            self._round = round_
            # Queued at once, so the round keeps its place among the other events.
            sent = self._batch.execute_soon(lambda pipe: self._add_deltas(pipe, round_))
            done: asyncio.Future[None] = sent.get_loop().create_future()
            sent.add_done_callback(functools.partial(_round_sent, round_, done))
            self._round_done = done
        self._round.extend(events)
        return self._round_done

    def _add_deltas(self, pipe: Pipeline, events: list[JobEvent]) -> None:
        """Queue a round's delta events as one script call. The round closes as the
        pipeline is built: deltas that come after it go in the next one."""
        if self._round is events:
            self._round = None
        keys: list[Any] = [self._firehose]
        args: list[Any] = [self._max_events, FIREHOSE_MAX]
        for event in events:
            keys.append(self.key(event.job_id))
            # orjson: a delta's chunks may be an upstream's JSON, kept undecoded
            # (:class:`orjson.Fragment`, see :mod:`relayq.execution.deltas`).
            args += (
                event.job_id.encode(),
                _DELTA,
                orjson.dumps(event.data),
                repr(event.timestamp).encode(),
            )
        self._batch.script(pipe, self._append_many, keys, args)

    def _add(self, pipe: Pipeline, event: JobEvent, *, data: bytes | None = None) -> None:
        """Queue ``event`` for its job's stream and the firehose (its reply: the entry id).

        ``data``: the event's data as compact JSON, when the caller encoded it.
        """
        self._batch.script(
            pipe,
            self._append,
            [self.key(event.job_id), self._firehose],
            [
                self._max_events,
                FIREHOSE_MAX,
                event.job_id,
                event.type.value,
                json.dumps(event.data, separators=(",", ":")) if data is None else data,
                repr(event.timestamp),
                self._retention_ms if event.terminal else 0,
            ],
        )

    async def _tell(self, event: JobEvent) -> None:
        for listener in self.listeners:
            try:
                await listener.on_job_event(event)
            except Exception:
                log.exception("event listener failed on %s of %s", event.type.value, event.job_id)


def terminal_data(job: Any) -> dict[str, Any]:
    """What a terminal event carries: the job's outcome (a :class:`Job` row)."""
    return {
        "status": job.status,
        "response": job.response,
        "usage": job.usage,
        "error": job.error,
        "cached": bool(job.cached),
    }


def _round_sent(
    events: list[JobEvent], done: asyncio.Future[None], sent: asyncio.Future[list[Any]]
) -> None:
    """A round of deltas went (or was lost: logged, not raised; deltas are best effort)."""
    if sent.cancelled():
        done.cancel()
        return
    exc = sent.exception()
    reply = None if exc is not None else sent.result()[0]
    failure = exc if exc is not None else reply if isinstance(reply, Exception) else None
    if failure is not None:
        log.warning("%d delta events not logged: %s", len(events), failure)
    if not done.done():
        done.set_result(None)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# What a follower reads of one event (docs/api.md): one SSE message whose data is
# {"id", "type", "job_id", "timestamp", "data"} as compact JSON, on one line.


@dataclass(frozen=True, slots=True)
class Frame:
    """One stored event as the SSE message its followers read, made once for all of them."""

    order: tuple[int, int]
    """The event id as numbers: what a follower compares to skip what it already sent."""
    message: bytes
    terminal: bool


_TERMINAL_TYPES = frozenset(event.value.encode() for event in TERMINAL_EVENTS)


def entry_order(entry_id: bytes) -> tuple[int, int]:
    """A stream id (``b"1700000000000-3"``) as a pair that sorts as the stream does."""
    millis, _, seq = entry_id.partition(b"-")
    return int(millis), int(seq or 0)


def stored_frame(entry_id: bytes, fields: Mapping[bytes, bytes], *, job_json: bytes) -> Frame:
    """The SSE message of a stored event, spliced from its stream entry without decoding it.

    ``entry_id`` is the id of the event in its job's stream; ``job_json`` the job
    id as a JSON string. The stored ``data`` is already compact JSON (written by
    :class:`EventLog`), so it goes out as stored: the same bytes that decoding
    and encoding it again would give, at none of the cost.
    """
    kind = fields[b"type"]
    # float() then repr(): the text json.dumps gives the decoded float.
    stamp = repr(float(fields.get(b"ts", b"0"))).encode()
    message = b"".join(
        (
            b"id: ",
            entry_id,
            b"\nevent: ",
            kind,
            b'\ndata: {"id":"',
            entry_id,
            b'","type":"',
            kind,
            b'","job_id":',
            job_json,
            b',"timestamp":',
            stamp,
            b',"data":',
            fields.get(b"data", b"{}"),
            b"}\n\n",
        )
    )
    return Frame(order=entry_order(entry_id), message=message, terminal=kind in _TERMINAL_TYPES)


def event_frame(event: JobEvent) -> bytes:
    """The SSE message of an event not read from a stream (rebuilt from SQL)."""
    payload = {
        "id": event.id,
        "type": event.type.value,
        "job_id": event.job_id,
        "timestamp": event.timestamp,
        "data": event.data,
    }
    lines = [] if event.id is None else [f"id: {event.id}"]
    lines.append(f"event: {event.type.value}")
    # Compact JSON escapes every line break, so the data is one line.
    lines.append("data: " + json.dumps(payload, separators=(",", ":")))
    return ("\n".join(lines) + "\n\n").encode()
