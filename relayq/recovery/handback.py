"""Recovery in seconds: a supervisor hands back the jobs of the worker process it lost.

A supervised worker process (``python -m worker``) runs under a parent that
learns at once when it dies. Each process has an instance id of its own
(``RELAYQ_WORKER__INSTANCE``, set by the supervisor per start). The process
records it as the ``owner`` of every job it claims, and keeps, in a Redis hash
per instance, the jobs whose messages it took and has not finished
(:class:`Taken`: written in the tick's pipelines, beside the work). When the
process dies, the supervisor (:func:`hand_back`):

- puts every job the instance held back in the queue, with its cut run
  recorded as an ``interrupted`` attempt, and publishes it again;
- publishes again the jobs whose messages the instance took but never
  claimed (waiting for a slot, or delivered a moment before the kill), and a
  sync job's whole message when its row was never stored, and the sync-lane
  entries it read (:func:`relayq.direct.lane.release_consumer`);
- publishes again the queued jobs whose message the broker no longer holds
  anywhere: kombu takes a message off its list before it records the
  delivery, and a process killed between the two takes it along;
- voids the message and lease of every webhook delivery it took (taken work
  too), so the reconciler sends each again at its next pass rather than after
  the broker's redelivery; and, as for jobs, voids the message of the
  deliveries whose messages it took but never recorded (delivered since it
  started and unacknowledged) and of those whose message the broker no longer
  holds anywhere, unless an attempt holds them.

A process with no supervisor, or a machine lost whole with its supervisor,
has nobody to learn of its death at once. Every worker process beats
(:class:`Heartbeat`): it notes itself in a hash of workers and keeps a key
alive for three beats. The others sweep that hash; a process silent for three
beats is taken for dead and handed back the same way, by whichever live
worker gets there first. A process sweeps only after its own beats went
through for three beats in a row, so a Redis that was away (every worker
silent at once) is not read as every worker dead.

Each beat also says what the process consumes (:class:`Consumer`: its host,
its queues, the beat's time, in one hash of consumers, written in the beat's
pipeline): the API's ``/readyz`` reads it to tell whether every routed
provider's queue has a live consumer, and ``relayq health worker`` whether a
worker on its own host still beats. A process leaves that hash when it stops
cleanly or is handed back, as it leaves the hash of workers.

Leases and the broker's redelivery stay the last net. A duplicate message is
harmless: claims are fenced; a process wrongly taken for dead (its loop
stalled for three beats) only loses the outcome writes of the jobs it held,
which run again.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, cast

import orjson
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError
from sqlalchemy import select

from relayq.config.settings import Settings
from relayq.direct.lane import release_consumer
from relayq.observability.consumers import Consumer
from relayq.queueing.broker import RUN_JOB_TASK, RUN_MANY_TASK, Enqueuer
from relayq.redis.keys import CELERY_UNACKED, CELERY_UNACKED_INDEX, RedisKeys, priority_lists
from relayq.redis.pipeline import CommandBatch
from relayq.schemas.jobs import JobStatus
from relayq.schemas.webhooks import DeliveryStatus
from relayq.store import Database
from relayq.store.models import Job, WebhookDelivery
from relayq.store.stranded import release_owned
from relayq.store.unsent import release_deliveries, release_unclaimed_deliveries
from relayq.webhooks.publishing import DELIVER_WEBHOOK_TASK

__all__ = [
    "Heartbeat",
    "Taken",
    "delivery_entry",
    "hand_back",
    "release_instance",
]

log = logging.getLogger(__name__)

_TAKEN_TTL_SECONDS = 24 * 3600
_DELIVERY = "webhook:"


def delivery_entry(delivery_id: str) -> str:
    """A webhook delivery's entry in a process's record of taken work (beside job ids)."""
    return f"{_DELIVERY}{delivery_id}"


class Taken:
    """A worker process's record of the jobs it took and has not finished, in Redis."""

    def __init__(self, batch: CommandBatch, *, key_prefix: str, instance: str) -> None:
        self._batch = batch
        self._key = RedisKeys(key_prefix).taken(instance)

    async def took(self, job_id: str, message: dict[str, Any] | None = None) -> None:
        """``job_id``'s message arrived (``message``: a sync job's, kept to send again)."""
        value = orjson.dumps(message) if message is not None else b""

        def add(pipe: Pipeline) -> None:
            pipe.hset(self._key, job_id, value)
            pipe.expire(self._key, _TAKEN_TTL_SECONDS)

        await self._batch.execute(add)

    async def done(self, job_id: str) -> None:
        await self._batch.execute(lambda pipe: pipe.hdel(self._key, job_id))

    @contextlib.asynccontextmanager
    async def holding(
        self, entry: str, message: dict[str, Any] | None = None
    ) -> AsyncIterator[None]:
        """Keep ``entry`` (a job id, or a :func:`delivery_entry`) in the record while the
        block runs. Written beside the work, not before it: the record only speeds up
        recovery, so a Redis error is logged, not raised."""
        recorded = asyncio.ensure_future(self.took(entry, message))
        try:
            yield
        finally:
            try:
                await recorded
                await self.done(entry)
            except RedisError as exc:
                log.warning("taken record of %s not kept: %s", entry, exc)


_SILENT_BEATS = 3
"""Beats a process may miss before it is taken for dead."""


class Heartbeat:
    """A worker process's sign of life, and its sweep for processes that went silent."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        database: Database,
        enqueuer: Enqueuer,
        key_prefix: str,
        instance: str,
        interval: float,
        host: str,
        queues: Callable[[], Sequence[str]],
    ) -> None:
        """``queues()``: what the process consumes now (it may grow as providers are added),
        published with each beat as its :class:`Consumer` record on ``host``."""
        self._redis = redis
        self._host = host
        self._queues = queues
        self._database = database
        self._enqueuer = enqueuer
        self._prefix = key_prefix
        self._keys = RedisKeys(key_prefix)
        self._instance = instance
        self._interval = interval
        self._silent_after = interval * _SILENT_BEATS

    async def beat(self) -> None:
        now = time.time()
        consumer = Consumer(
            instance=self._instance, host=self._host, queues=tuple(self._queues()), beat_at=now
        )
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hset(self._keys.workers, self._instance, repr(now))
            pipe.hset(self._keys.consumers, self._instance, consumer.encode())
            pipe.set(
                self._keys.alive(self._instance),
                b"1",
                px=int(self._silent_after * 1000),
            )
            await pipe.execute()

    async def sweep(self) -> list[str]:
        """Hand back every process that beat once and went silent; their instance ids."""
        registered = cast(dict[bytes, bytes], await self._redis.hgetall(self._keys.workers))
        others = [(k.decode(), float(v)) for k, v in registered.items()]
        others = [(instance, last) for instance, last in others if instance != self._instance]
        if not others:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for instance, _ in others:
                pipe.exists(self._keys.alive(instance))
            alive = await pipe.execute()
        swept: list[str] = []
        for (instance, last), living in zip(others, alive, strict=True):
            if living:
                continue
            claimed = await self._redis.set(
                self._keys.handing_back(instance),
                self._instance,
                nx=True,
                px=int(self._silent_after * 4 * 1000),
            )
            if not claimed:
                continue  # another worker is at it
            log.warning("worker %s silent since %.0f: handing its jobs back", instance, last)
            await release_instance(
                database=self._database,
                redis=self._redis,
                enqueuer=self._enqueuer,
                key_prefix=self._prefix,
                instance=instance,
                # Messages it took after its last beat, before it could record them.
                since=last - self._interval,
            )
            swept.append(instance)
        return swept

    async def run_forever(self) -> None:
        """Beat every interval; sweep once this process's own beats have held a while."""
        steady_since: float | None = None
        while True:
            try:
                await self.beat()
                now = time.monotonic()
                if steady_since is None:
                    steady_since = now
                elif now - steady_since >= self._silent_after:
                    await self.sweep()
            except RedisError as exc:
                steady_since = None
                log.warning("worker heartbeat skipped, Redis unavailable: %s", exc)
            except Exception:
                log.exception("sweep for silent workers failed")
            await asyncio.sleep(self._interval)

    async def stop(self) -> None:
        """Leave the hashes of workers and consumers: a process that stopped cleanly holds
        nothing and consumes nothing."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hdel(self._keys.workers, self._instance)
            pipe.hdel(self._keys.consumers, self._instance)
            pipe.delete(self._keys.alive(self._instance))
            await pipe.execute()


def hand_back(settings: Settings, instance: str, *, since: float | None = None) -> int:
    """Hand back what the dead process ``instance`` held; how many jobs were sent again.

    ``since``: when the process started (``time.time()``). Messages the
    broker delivered since then and nobody acknowledged may be ones the
    process took a moment before it died, too soon to record them as taken:
    their jobs still queued are sent again too (those another worker holds
    get a harmless second message).
    """
    return asyncio.run(_hand_back(settings, instance, since))


async def _unacked_since(redis: aioredis.Redis, since: float) -> list[bytes]:
    """The messages delivered since ``since`` and not acknowledged.

    Kombu's Redis transport keeps each delivered message, until its ack, in
    the ``unacked`` hash, and its delivery time in ``unacked_index``.
    """
    tags = cast(list[bytes], await redis.zrangebyscore(CELERY_UNACKED_INDEX, since, "+inf"))
    if not tags:
        return []
    return [raw for raw in cast(list[bytes | None], await redis.hmget(CELERY_UNACKED, tags)) if raw]


async def _unacked_jobs(redis: aioredis.Redis, since: float) -> list[str]:
    """The ids of the jobs in run-job messages delivered since ``since``, unacknowledged."""
    job_ids: list[str] = []
    for raw in await _unacked_since(redis, since):
        job_ids.extend(_durable_jobs(raw, delivered=True))
    return job_ids


def _delivery_of(raw: bytes, *, delivered: bool) -> str | None:
    """The delivery id a webhook delivery message names; None for any other message."""
    try:
        message = orjson.loads(raw)
        if delivered:
            message = message[0]
        if message["headers"]["task"] != DELIVER_WEBHOOK_TASK:
            return None
        return str(orjson.loads(base64.b64decode(message["body"]))[0][0])
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        log.warning("a webhook delivery message could not be read: %s", exc)
    return None


async def _unacked_deliveries(redis: aioredis.Redis, since: float) -> list[str]:
    """The deliveries of webhook delivery messages delivered since ``since``, unacknowledged.

    A process records a delivery as taken beside the attempt, not before it: one
    killed a moment after its broker delivered the message (in its prefetch, or
    on its way to the loop) left no record, and the delivery, whose message is
    confirmed, would wait for the broker's redelivery (the visibility timeout)."""
    found = (_delivery_of(raw, delivered=True) for raw in await _unacked_since(redis, since))
    return [delivery for delivery in found if delivery is not None]


def _durable_jobs(raw: bytes, *, delivered: bool) -> list[str]:
    """The job ids a run-job message or envelope names (a sync job's whole message is
    left to its taken record). ``delivered``: as kept in the ``unacked`` hash."""
    try:
        message = orjson.loads(raw)
        if delivered:
            message = message[0]
        task = message["headers"]["task"]
        if task == RUN_JOB_TASK:
            return [str(message["headers"]["id"])]
        if task == RUN_MANY_TASK:
            args = orjson.loads(base64.b64decode(message["body"]))[0][0]
            return [item for item in args if isinstance(item, str)]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        log.warning("a run-job message could not be read: %s", exc)
    return []


_PAGE = 1_000


async def _jobs_in_broker(redis: aioredis.Redis, queues: set[str]) -> set[str]:
    """Every job a run-job message in the broker names: waiting in one of ``queues``'
    lists, or delivered and not acknowledged.

    The lists are read before the ``unacked`` hash, each from its newest end: a
    message taken from a list's old end meanwhile is in the hash by then.
    """
    found: set[str] = set()
    for queue in sorted(queues):
        for key in priority_lists(queue):
            start = 0
            while raws := cast(list[bytes], await redis.lrange(key, start, start + _PAGE - 1)):
                for raw in raws:
                    found.update(_durable_jobs(raw, delivered=False))
                start += _PAGE
    for raw in cast(list[bytes], await redis.hvals(CELERY_UNACKED)):
        found.update(_durable_jobs(raw, delivered=True))
    return found


async def _lost_jobs(
    database: Database, redis: aioredis.Redis, enqueuer: Enqueuer
) -> list[tuple[str, str, int]]:
    """Queued jobs whose message the broker no longer holds anywhere.

    Kombu's Redis transport takes a message off its list (``BRPOP``) and only
    then, in a second round trip, records it as delivered: a process killed
    between the two takes the message with it, and nothing in Redis says so.
    Such a job stays queued with a confirmed message that is gone; the
    reconciler would send it again only after its stranded window (minutes).
    Found here at a hand-back, it is sent again at once. A job published while
    this looked, or one a live worker took meanwhile, gets a harmless second
    message (claims are fenced).
    """
    looked_at = time.time()
    async with database.session() as session:
        queued = (
            await session.execute(
                select(Job.id, Job.provider, Job.priority).where(
                    Job.status == JobStatus.QUEUED.value,
                    Job.held.is_(False),
                    Job.created_at < looked_at,
                    # Published, or its publish unconfirmed yet; not one waiting out a
                    # retry or a rate limit (sent when its wait ends).
                    (Job.enqueued_at < looked_at)
                    | (
                        Job.enqueued_at.is_(None)
                        & (Job.not_before.is_(None) | (Job.not_before < looked_at))
                    ),
                )
            )
        ).all()
    if not queued:
        return []
    present = await _jobs_in_broker(redis, {enqueuer.queue_for(row.provider) for row in queued})
    return [(row.id, row.provider, row.priority) for row in queued if row.id not in present]


async def _lost_deliveries(database: Database, redis: aioredis.Redis, queue: str) -> list[str]:
    """Pending deliveries with a confirmed message the broker no longer holds anywhere
    (taken off its list by a process killed before it recorded the delivery: see
    :func:`_lost_jobs`), and that no attempt holds."""
    looked_at = time.time()
    async with database.session() as session:
        confirmed = list(
            (
                await session.execute(
                    select(WebhookDelivery.id).where(
                        WebhookDelivery.status == DeliveryStatus.PENDING.value,
                        WebhookDelivery.enqueued_at < looked_at,
                        WebhookDelivery.leased_until.is_(None)
                        | (WebhookDelivery.leased_until < looked_at),
                    )
                )
            ).scalars()
        )
    if not confirmed:
        return []
    present: set[str] = set()
    for key in priority_lists(queue):
        start = 0
        while raws := cast(list[bytes], await redis.lrange(key, start, start + _PAGE - 1)):
            present.update(d for raw in raws if (d := _delivery_of(raw, delivered=False)))
            start += _PAGE
    for raw in cast(list[bytes], await redis.hvals(CELERY_UNACKED)):
        if delivery := _delivery_of(raw, delivered=True):
            present.add(delivery)
    return [delivery for delivery in confirmed if delivery not in present]


async def _hand_back(settings: Settings, instance: str, since: float | None) -> int:
    database = Database(settings.database_url)
    redis = aioredis.Redis.from_url(settings.redis_url)
    enqueuer = Enqueuer(settings=settings)
    try:
        return await release_instance(
            database=database,
            redis=redis,
            enqueuer=enqueuer,
            key_prefix=settings.key_prefix,
            instance=instance,
            since=since,
        )
    finally:
        enqueuer.close()
        await redis.aclose()
        await database.aclose()


async def release_instance(
    *,
    database: Database,
    redis: aioredis.Redis,
    enqueuer: Enqueuer,
    key_prefix: str,
    instance: str,
    since: float | None,
) -> int:
    """Hand back what the dead process ``instance`` held (see :func:`hand_back`), on
    open connections; how many jobs were sent again."""
    keys = RedisKeys(key_prefix)
    key = keys.taken(instance)
    async with database.session() as session:
        released = await release_owned(session, owner=instance, now=time.time())
    entries = cast(dict[bytes, bytes], await redis.hgetall(key))
    deliveries = [k.decode()[len(_DELIVERY) :] for k in entries if k.startswith(_DELIVERY.encode())]
    taken = {k: v for k, v in entries.items() if not k.startswith(_DELIVERY.encode())}
    if deliveries:
        async with database.session() as session:
            await release_deliveries(session, delivery_ids=deliveries)
    # Deliveries whose messages it took and never recorded, or took off the list and lost.
    unrecorded = await _lost_deliveries(database, redis, enqueuer.webhook_queue)
    if since is not None:
        unrecorded += await _unacked_deliveries(redis, since)
    unrecorded = [d for d in dict.fromkeys(unrecorded) if d not in deliveries]
    if unrecorded:
        async with database.session() as session:
            deliveries += await release_unclaimed_deliveries(
                session, delivery_ids=unrecorded, now=time.time()
            )
    messages: dict[str, tuple[str, str, int, dict[str, Any] | None]] = {
        job.job_id: (job.job_id, job.provider, job.priority, None) for job in released
    }
    for job_id, provider, priority in await _lost_jobs(database, redis, enqueuer):
        messages.setdefault(job_id, (job_id, provider, priority, None))
    durable = [k.decode() for k, v in taken.items() if not v and k.decode() not in messages]
    if since is not None:
        durable += [j for j in await _unacked_jobs(redis, since) if j not in messages]
    if durable:
        async with database.session() as session:
            query = select(Job.id, Job.provider, Job.priority).where(
                Job.id.in_(durable),
                Job.status == JobStatus.QUEUED.value,
                Job.held.is_(False),
            )
            for job_id, provider, priority in (await session.execute(query)).all():
                messages[job_id] = (job_id, provider, priority, None)
    for raw_id, raw in taken.items():
        job_id = raw_id.decode()
        if raw and job_id not in messages:
            direct: dict[str, Any] = {**orjson.loads(raw), "redelivered": True}
            job = direct["job"]
            messages[job_id] = (job_id, job["provider"], job["priority"], direct)
    # Sync jobs it read from the lane: those it took are in ``taken`` too.
    lane = await release_consumer(redis, key_prefix=key_prefix, consumer=instance)
    for job_id, direct in lane.items():
        if job_id not in messages:
            job = direct["job"]
            messages[job_id] = (
                job_id,
                job["provider"],
                job["priority"],
                {**direct, "redelivered": True},
            )
    sent = await asyncio.to_thread(enqueuer.send_many, list(messages.values()))
    async with redis.pipeline(transaction=False) as pipe:
        pipe.delete(key)
        pipe.hdel(keys.workers, instance)
        pipe.hdel(keys.consumers, instance)
        await pipe.execute()
    log.warning(
        "worker %s died: %d running jobs handed back, %d jobs sent again, %d webhook "
        "deliveries left to the reconciler",
        instance,
        len(released),
        len(sent),
        len(deliveries),
    )
    return len(sent)
