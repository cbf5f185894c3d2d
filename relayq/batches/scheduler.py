"""The batch scheduler: releases batch requests fairly and moves batches to their end.

Batch requests are stored held, without a message. Each pass, per
provider, the scheduler tops the provider's window up (requests released
and not finished) with held requests, sharing the free slots between keys
equally and then between each key's batches (:func:`fair_shares`), and
publishes their messages at batch priority, below interactive jobs. A
50,000-request batch so never fills a queue ahead of anyone else's work,
and a second key's batch starts within one pass, not after the first.

It also expires the queued requests of batches past their window, turns a
batch whose requests have all ended into its output and error files, and
re-sends validation messages the broker never confirmed. One worker at a
time runs it (a lock in Redis); every step is a guarded statement, so a
pass cut short by a crash is simply done again.
"""

from __future__ import annotations

import functools
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis

from relayq.batches.activity import BatchActivity
from relayq.batches.fairness import fair_shares
from relayq.batches.notify import BatchNotifier
from relayq.batches.results import ResultFiles, output_file_ids, write_results
from relayq.config.settings import Settings
from relayq.files.storage import FileStorage
from relayq.queueing.broker import Enqueuer
from relayq.queueing.outbox import JobMessage, Outbox
from relayq.redis.keys import RedisKeys
from relayq.redis.locking import run_exclusively
from relayq.routing.state import RoutingState
from relayq.schemas.batches import BatchStatus
from relayq.schemas.files import FilePurpose
from relayq.schemas.jobs import JobStatus
from relayq.store import Database
from relayq.store.batches import (
    Tally,
    active_batches,
    begin_finalizing,
    expire_requests,
    finish_batch,
    get_batch_by_id,
    release_requests,
    tallies,
    unconfirmed_validations,
)
from relayq.store.files import add_file
from relayq.store.models import Batch

__all__ = ["BatchScheduler", "SchedulerReport"]

log = logging.getLogger(__name__)

_UNFINISHED = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)


@dataclass(frozen=True, kw_only=True)
class SchedulerReport:
    released: int = 0
    """Requests taken off hold and published."""
    expired: int = 0
    """Queued requests of batches past their window."""
    finished: int = 0
    """Batches that reached their final status."""
    validations: int = 0
    """Validation messages sent again."""
    active: int = 0
    """Batches in progress, cancelling or finalizing when the pass began."""

    @property
    def quiet(self) -> bool:
        """Nothing to move on: the next passes wait for activity (relayq/batches/activity.py)."""
        return self.active == 0 and self.validations == 0


class BatchScheduler:
    def __init__(
        self,
        *,
        database: Database,
        enqueuer: Enqueuer,
        storage: FileStorage,
        notifier: BatchNotifier,
        settings: Settings,
        routing_state: RoutingState | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._database = database
        self._outbox = Outbox(database=database, enqueuer=enqueuer, clock=clock)
        self._storage = storage
        self._notifier = notifier
        self._settings = settings
        self._routing_state = routing_state
        self._clock = clock
        self._quiet_since: tuple[bytes | str | None, float] | None = None
        """When the last pass found nothing: the activity counter then, and the time."""

    async def run_forever(self, *, redis: aioredis.Redis) -> None:
        interval = self._settings.batches.tick_seconds
        activity = BatchActivity(redis, key_prefix=self._settings.key_prefix)
        await run_exclusively(
            functools.partial(self.tick, activity),
            redis=redis,
            lock_key=RedisKeys(self._settings.key_prefix).batch_scheduler_lock,
            interval=interval,
            name="batch scheduler",
            # Writing a large batch's files takes a while: keep the lock meanwhile.
            lease=max(interval * 2, 60.0),
        )

    async def tick(self, activity: BatchActivity) -> SchedulerReport | None:
        """A pass, unless the last one found nothing and no batch has started or been
        cancelled since (and the idle pass is not due); None when skipped."""
        seen = await activity.read()
        now = self._clock()
        if self._quiet_since is not None:
            counter, since = self._quiet_since
            if seen == counter and now - since < self._settings.batches.idle_pass_seconds:
                return None
        report = await self.run_once()
        self._quiet_since = (seen, now) if report.quiet else None
        return report

    async def run_once(self) -> SchedulerReport:
        async with self._database.session() as session:
            batches = await active_batches(session)
            found = await tallies(session, batch_ids=[b.id for b in batches])
        released = await self._release(batches, found)
        expired = finished = 0
        for batch in batches:
            mine = [t for t in found if t.batch_id == batch.id]
            ended, done = await self._advance(batch, mine)
            expired += ended
            finished += done
        validations = await self._resend_validations()
        return SchedulerReport(
            released=released,
            expired=expired,
            finished=finished,
            validations=validations,
            active=len(batches),
        )

    # Releasing requests.

    async def _release(self, batches: Sequence[Batch], found: Sequence[Tally]) -> int:
        keys = {b.id: b.key_id for b in batches}
        running = {b.id for b in batches if b.status == BatchStatus.IN_PROGRESS.value}
        outstanding: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        held: dict[str, dict[str, int]] = defaultdict(dict)
        for tally in found:
            if tally.held and tally.status == JobStatus.QUEUED.value:
                if tally.batch_id in running:
                    held[tally.provider][tally.batch_id] = tally.count
            elif tally.status in _UNFINISHED:
                outstanding[tally.provider][tally.batch_id] += tally.count
        window = self._settings.batches.window
        released = 0
        for provider, wanting in held.items():
            holding = outstanding[provider]
            free = window - sum(holding.values())
            if free <= 0:
                continue
            for batch_id, share in _shares(free, keys, holding, wanting).items():
                released += await self._release_batch(batch_id, provider, share)
        return released

    async def _release_batch(self, batch_id: str, provider: str, count: int) -> int:
        async with self._database.session() as session:
            rows = await release_requests(
                session, batch_id=batch_id, provider=provider, limit=count, now=self._clock()
            )
        if not rows:
            return 0
        # What the broker did not take, the reconciler sends later.
        await self._outbox.send_jobs(
            [JobMessage(job_id, provider, priority) for job_id, provider, _, priority in rows]
        )
        if self._routing_state is not None:
            assigned: dict[tuple[str, str], int] = defaultdict(int)
            for _, provider_name, model, _ in rows:
                assigned[(provider_name, model)] += 1
            await self._routing_state.assigned_many(assigned)
        return len(rows)

    # Moving batches on.

    async def _advance(self, batch: Batch, found: Sequence[Tally]) -> tuple[int, int]:
        """(requests expired, 1 if the batch ended) for one active batch."""
        now = self._clock()
        queued = sum(t.count for t in found if t.status == JobStatus.QUEUED.value)
        running = sum(t.count for t in found if t.status == JobStatus.RUNNING.value)
        expired = 0
        status = BatchStatus(batch.status)
        if status is BatchStatus.IN_PROGRESS and now >= batch.expires_at and queued:
            async with self._database.session() as session:
                expired = await expire_requests(session, batch_id=batch.id, now=now)
            log.info("batch %s passed its window: %d requests expired", batch.id, expired)
            queued = 0
        if status in (BatchStatus.IN_PROGRESS, BatchStatus.CANCELLING) and not queued + running:
            async with self._database.session() as session:
                if await begin_finalizing(session, batch_id=batch.id, now=now):
                    status = BatchStatus.FINALIZING
        if status is BatchStatus.FINALIZING:
            return expired, int(await self._finalize(batch.id))
        return expired, 0

    async def _finalize(self, batch_id: str) -> bool:
        """Write the result files, then end the batch with them; False if another pass did."""
        files = await write_results(
            database=self._database, storage=self._storage, batch_id=batch_id
        )
        now = self._clock()
        async with self._database.session() as session:
            batch = await get_batch_by_id(session, batch_id=batch_id)
            if batch is None or batch.status != BatchStatus.FINALIZING.value:
                return False
            status = _final_status(batch, files)
            output_id, error_id = output_file_ids(batch_id)
            lifetime = (
                batch.output_expires_after
                if batch.output_expires_after is not None
                else self._settings.retention.batch_output_seconds()
            )
            for file_id, lines, size, kind in (
                (output_id, files.output_lines, files.output_bytes, "output"),
                (error_id, files.error_lines, files.error_bytes, "error"),
            ):
                if lines:
                    add_file(
                        session,
                        file_id=file_id,
                        key_id=batch.key_id,
                        purpose=FilePurpose.BATCH_OUTPUT.value,
                        filename=f"{batch_id}_{kind}.jsonl",
                        size=size,
                        lines=lines,
                        now=now,
                        expires_at=None if lifetime is None else now + lifetime,
                    )
            ended = await finish_batch(
                session,
                batch_id=batch_id,
                status=status,
                output_file_id=output_id if files.output_lines else None,
                error_file_id=error_id if files.error_lines else None,
                now=now,
            )
            if not ended:
                await session.rollback()
                return False
            await self._notifier.plan(session, batch_id=batch_id, now=now)
            await session.commit()
        await self._notifier.publish(batch_id)
        log.info(
            "batch %s %s: %d output lines, %d error lines",
            batch_id,
            status.value,
            files.output_lines,
            files.error_lines,
        )
        return True

    async def _resend_validations(self) -> int:
        now = self._clock()
        async with self._database.session() as session:
            lost = await unconfirmed_validations(
                session,
                created_before=now - self._settings.worker.enqueue_grace_seconds,
                enqueued_before=now - self._settings.worker.visibility_timeout,
            )
        for batch_id in lost:
            if not await self._outbox.send_batch(batch_id):
                return 0
        return len(lost)


def _final_status(batch: Batch, files: ResultFiles) -> BatchStatus:
    if batch.cancelling_at is not None:
        return BatchStatus.CANCELLED
    if files.expired:
        return BatchStatus.EXPIRED
    return BatchStatus.COMPLETED


def _shares(
    free: int, keys: dict[str, str], holding: dict[str, int], wanting: dict[str, int]
) -> dict[str, int]:
    """``free`` slots split between keys equally, then between each key's batches."""
    key_holding: dict[str, int] = defaultdict(int)
    key_wanting: dict[str, int] = defaultdict(int)
    for batch_id, count in holding.items():
        key_holding[keys.get(batch_id, "")] += count
    for batch_id, count in wanting.items():
        key_wanting[keys[batch_id]] += count
    shares: dict[str, int] = {}
    for key_id, share in fair_shares(free, holding=key_holding, wanting=key_wanting).items():
        mine = {b: n for b, n in wanting.items() if keys[b] == key_id}
        shares.update(fair_shares(share, holding=holding, wanting=mine))
    return shares
