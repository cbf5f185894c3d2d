"""The reconciler: no job is lost between SQL and the broker.

The API writes a job row first and publishes its message second (an outbox).
When the publish fails (broker down) or the process dies in between, the job
stays ``queued`` with no confirmed message; when a worker dies mid-call, its
job stays ``running`` with a lease that lapses. The reconciler puts lapsed
jobs back in the queue and (re)publishes messages for stranded ones. Webhook
deliveries are an outbox too, and it publishes those that are due without a
confirmed message. Every step is idempotent; a lock in Redis keeps
concurrent workers from publishing the same message twice.

It is also the budget ledger's net: a job that ended still holding a budget
reservation (ended by a path that does not settle, or by a process that died
before settling) is settled at its cost, a bounded chunk per pass
(:mod:`relayq.store.spend`).

Under the same lock, every ``retention.purge_interval_seconds``, it purges
what is past its retention period (:mod:`relayq.store.retention`): a chunk
per table per pass, so a pass stays short, then the bytes of the purged files.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from relayq.budgets.estimate import deployment_price
from relayq.config.prices import job_cost
from relayq.config.routes import RoutingConfig
from relayq.config.settings import RetentionSettings
from relayq.events.log import EventLog, EventType, JobEvent
from relayq.files.storage import FileStorage
from relayq.observability.metrics import WorkerMetrics
from relayq.queueing.broker import Enqueuer
from relayq.queueing.outbox import JobMessage, Outbox
from relayq.redis.locking import run_exclusively
from relayq.resilience.key_limits import KeyLimits, RunningJob
from relayq.routing.state import RoutingState
from relayq.store import Database
from relayq.store.counts import count_active, count_active_by_key, unfinished_of, unfinished_of_key
from relayq.store.retention import (
    purge_audit,
    purge_budget_windows,
    purge_files,
    purge_jobs,
)
from relayq.store.retries import Expired, expire_due
from relayq.store.spend import HeldRow, settle_ended
from relayq.store.stranded import find_stranded, release_lapsed
from relayq.store.unsent import find_unsent
from relayq.webhooks.publishing import WebhookEnqueuer, publish_unsent

__all__ = ["Purged", "ReconcileReport", "Reconciler", "Retention"]

log = logging.getLogger(__name__)

_BATCH = 500
_DAY = 24 * 3600.0


@dataclass(frozen=True, kw_only=True)
class Retention:
    """What the reconciler purges (its periods), and where purged files' bytes are."""

    settings: RetentionSettings
    storage: FileStorage


@dataclass(frozen=True, kw_only=True)
class Purged:
    """Rows (and files) one purge deleted, by kind."""

    jobs: int = 0
    attempts: int = 0
    webhook_deliveries: int = 0
    webhook_attempts: int = 0
    batches: int = 0
    files: int = 0
    audit: int = 0
    budget_windows: int = 0

    def counts(self) -> dict[str, int]:
        return {name: value for name, value in vars(self).items() if value}


@dataclass(frozen=True, kw_only=True)
class ReconcileReport:
    released: int = 0
    """Running jobs whose lease lapsed, put back in the queue."""
    enqueued: int = 0
    """Queued jobs whose message was (re)published."""
    failed: int = 0
    """Publishes that failed this time (the broker is still down)."""
    webhooks: int = 0
    """Webhook deliveries whose message was (re)published."""
    settled: int = 0
    """Ended jobs whose budget reservation was settled by the sweep."""
    purged: Purged | None = None
    """What this pass purged; None when no purge was due."""


class Reconciler:
    def __init__(
        self,
        *,
        database: Database,
        enqueuer: Enqueuer,
        grace_seconds: float,
        republish_after_seconds: float,
        routing_state: RoutingState | None = None,
        key_limits: KeyLimits | None = None,
        events: EventLog | None = None,
        routing: Callable[[], RoutingConfig] | None = None,
        settle_chunk: int = _BATCH,
        retention: Retention | None = None,
        metrics: WorkerMetrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``routing``: the routes in force, to price a job the sweep settles without a
        stored cost; ``settle_chunk``: the most jobs it settles per pass."""
        self._database = database
        self._enqueuer = enqueuer
        self._outbox = Outbox(database=database, enqueuer=enqueuer, clock=clock)
        self._grace_seconds = grace_seconds
        self._republish_after = republish_after_seconds
        self._routing_state = routing_state
        self._key_limits = key_limits
        self._events = events
        self._routing = routing
        self._settle_chunk = settle_chunk
        self._retention = retention
        self._metrics = metrics
        self._purge_due = 0.0
        self._clock = clock
        self._recount_after: dict[str, str] = {}
        """Per key still being recounted, the last job id the previous pass added."""

    async def run_once(self) -> ReconcileReport:
        """One pass: release lapsed leases, publish stranded jobs, then unsent webhooks."""
        now = self._clock()
        async with self._database.session() as session:
            expired = await expire_due(session, now=now, limit=_BATCH)
            released = await release_lapsed(session, now=now, limit=_BATCH)
            stranded = await find_stranded(
                session,
                created_before=now - self._grace_seconds,
                enqueued_before=now - self._republish_after,
                limit=_BATCH,
            )
            counts = await count_active(session) if self._routing_state is not None else None
        settled = await self.settle_budgets()
        sent = await self._outbox.send_jobs(
            [JobMessage(job.job_id, job.provider, job.priority) for job in stranded]
        )
        failed = len(stranded) - len(sent)
        if counts is not None and self._routing_state is not None:
            await self._routing_state.reset_in_flight(counts)
        await self._announce_expired(expired)
        if self._key_limits is not None:
            try:
                await self._recount_keys(self._key_limits, expired, now)
            except RedisError as exc:  # the counts wait for Redis; the other steps need not
                log.warning("reconciler could not repair key counts: %s", exc)
        webhooks, unsent = await self._publish_deliveries(now)
        if released or sent or webhooks:
            log.info(
                "reconciler released %d lapsed jobs, enqueued %d, published %d webhooks",
                released,
                len(sent),
                webhooks,
            )
        purged = None
        if self._retention is not None and now >= self._purge_due:
            self._purge_due = now + self._retention.settings.purge_interval_seconds
            purged = await self.purge(self._retention, now)
        return ReconcileReport(
            released=released,
            enqueued=len(sent),
            failed=failed + unsent,
            webhooks=webhooks,
            settled=settled,
            purged=purged,
        )

    async def settle_budgets(self) -> int:
        """Settle a chunk of ended jobs still holding a budget reservation; how many.

        A job's stored cost is booked; without one, its usage at its deployment's
        price in the routes in force (nothing, unpriced or without usage: a refund).
        """
        async with self._database.session() as session:
            settled = await settle_ended(session, limit=self._settle_chunk, cost_of=self._cost_of)
            await session.commit()
        if settled:
            log.info("reconciler settled the budget reservations of %d ended jobs", len(settled))
        return len(settled)

    def _cost_of(self, row: HeldRow) -> float | None:
        if row.cost_usd is not None:
            return float(row.cost_usd)
        if self._routing is None or not row.usage:
            return None
        route = self._routing().routes.get(row.route)
        price = deployment_price(
            route, index=row.deployment_index, provider=row.provider, model=row.upstream_model
        )
        if price is None:
            return None
        return job_cost(price, row.usage, batch=row.batch_id is not None)

    async def purge(self, retention: Retention, now: float) -> Purged:
        """Delete a chunk per table of what is past its period, then the purged files' bytes."""
        periods, limit = retention.settings, retention.settings.purge_chunk

        def before(days: float | None) -> float | None:
            return None if days is None else now - days * _DAY

        async with self._database.session() as session:
            rows = await purge_jobs(
                session,
                jobs_before=before(periods.jobs_days),
                batches_before=before(periods.batches_days),
                limit=limit,
            )
        async with self._database.session() as session:
            files = await purge_files(session, now=now, limit=limit)
        for file_id in files:  # after the rows: no row is left without its bytes
            await retention.storage.delete(file_id)
        audit = 0
        audit_before = before(periods.audit_days)
        if audit_before is not None:
            async with self._database.session() as session:
                audit = await purge_audit(session, before=audit_before, limit=limit)
        async with self._database.session() as session:
            windows = await purge_budget_windows(session, now=now, limit=limit)
        purged = Purged(
            jobs=rows.jobs,
            attempts=rows.attempts,
            webhook_deliveries=rows.deliveries,
            webhook_attempts=rows.delivery_attempts,
            batches=rows.batches,
            files=len(files),
            audit=audit,
            budget_windows=windows,
        )
        counts = purged.counts()
        if counts:
            log.info(
                "reconciler purged %s",
                ", ".join(f"{count} {kind}" for kind, count in counts.items()),
                extra={"purged": counts},
            )
            if self._metrics is not None:
                for kind, count in counts.items():
                    self._metrics.purged.add(count, kind)
        return purged

    async def _announce_expired(self, expired: list[Expired]) -> None:
        if self._events is None:
            return
        error = {"code": "expired", "message": "the job's deadline passed before it ran"}
        for job in expired:
            data = {
                "status": "expired",
                "response": None,
                "usage": None,
                "error": error,
                "cached": False,
            }
            await self._events.emit(
                JobEvent(job_id=job.job_id, key_id=job.key_id, type=EventType.EXPIRED, data=data)
            )

    async def _recount_keys(self, limits: KeyLimits, expired: list[Expired], now: float) -> None:
        """Bring each key's count of unfinished jobs back to the truth in SQL.

        Only idempotent, per-job steps, so live admissions and releases are
        never overwritten: jobs that expired now are released; counted jobs
        unchecked for the grace period are released when SQL holds them
        ended (or never stored them) and marked checked otherwise; keys SQL
        holds more unfinished jobs for than Redis counts get theirs added, a
        page per pass (a finish between the two reads can make a key look
        short: adding counted jobs again changes nothing, and a job that ends
        meanwhile is released by a later pass).
        """
        await limits.jobs_finished([RunningJob(job.key_id, job.job_id) for job in expired])
        due = await limits.unchecked(since=now - self._grace_seconds, limit=_BATCH)
        async with self._database.session() as session:
            unfinished = await unfinished_of(session, job_ids=[job.job_id for job in due])
            per_key = await count_active_by_key(session)
        await limits.jobs_finished([job for job in due if job.job_id not in unfinished])
        await limits.checked([job for job in due if job.job_id in unfinished], now=now)
        keys = list(per_key)
        short = [
            key
            for key, counted in zip(keys, await limits.running(keys), strict=True)
            if counted < per_key[key]
        ]
        cursors, self._recount_after = self._recount_after, {}
        for key_id in short:
            after = cursors.get(key_id)
            async with self._database.session() as session:
                jobs = await unfinished_of_key(session, key_id=key_id, after=after, limit=_BATCH)
            await limits.jobs_started(key_id, jobs)
            if len(jobs) == _BATCH:  # more to look at: the next pass goes on from here
                self._recount_after[key_id] = jobs[-1][0]

    async def _publish_deliveries(self, now: float) -> tuple[int, int]:
        """Publish webhook deliveries that are due without a confirmed message, or overdue.

        Only an enqueuer that publishes deliveries (a worker's) runs this step.
        """
        if not isinstance(self._enqueuer, WebhookEnqueuer):
            return 0, 0
        async with self._database.session() as session:
            unsent = await find_unsent(
                session,
                now=now,
                grace=self._grace_seconds,
                republish_after=self._republish_after,
                limit=_BATCH,
            )
        return await publish_unsent(self._outbox, enqueuer=self._enqueuer, unsent=unsent)

    async def run_forever(self, *, redis: aioredis.Redis, lock_key: str, interval: float) -> None:
        """Run a pass every ``interval`` seconds on whichever worker holds the lock."""
        await run_exclusively(
            self.run_once, redis=redis, lock_key=lock_key, interval=interval, name="reconciler"
        )
