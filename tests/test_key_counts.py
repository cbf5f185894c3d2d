"""The reconciler's repair of per-key job counts, on real Redis and each real database.

A pass changes counts one job at a time, so it never overwrites what the API
and the workers do beside it, and it frees the slots that crashed processes
left taken.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from relayq.config.settings import Settings
from relayq.queueing.broker import Enqueuer
from relayq.recovery.reconciler import Reconciler
from relayq.resilience.key_limits import KeyLimits
from relayq.store import Database
from relayq.store.jobs import cancel_job, create_job, create_jobs, get_job, mark_enqueued
from relayq.store.keys import create_key
from tests.clock import FakeClock
from tests.jobs import mock_job
from tests.services import free_port, run

GRACE = 60.0


@dataclass
class World:
    database: Database
    limits: KeyLimits
    reconciler: Reconciler
    clock: FakeClock
    key_id: str

    async def admit(self, job_id: str, *, limit: int | None = None) -> bool:
        decision = await self.limits.admit(self.key_id, job_id, rpm=None, max_concurrent=limit)
        return decision.allowed

    async def store(self, job_id: str, **fields: Any) -> None:
        """The job's row, as the intake writes it (its message taken by the broker)."""
        async with self.database.session() as session:
            await create_job(
                session, job=mock_job(self.key_id, id=job_id, **fields), now=self.clock.now
            )
            await mark_enqueued(session, job_ids=[job_id], now=self.clock.now)

    async def end(self, job_id: str) -> None:
        """The job ends in SQL, and whoever ended it dies before releasing its slot."""
        async with self.database.session() as session:
            assert await cancel_job(session, job_id=job_id, key_id=self.key_id, now=self.clock.now)

    async def running(self) -> int:
        return (await self.limits.running([self.key_id]))[0]


def scenario(database_url: str, redis_url: str, body: Callable[[World], Awaitable[None]]) -> None:
    async def main() -> None:
        database = Database(database_url)
        redis = aioredis.Redis.from_url(redis_url)
        clock = FakeClock(1_700_000_000.0)
        limits = KeyLimits(redis, key_prefix=f"test-{uuid.uuid4().hex[:8]}", clock=clock)
        # A broker nobody listens on: a pass that published a job would fail, not run it.
        enqueuer = Enqueuer(settings=Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0"))
        reconciler = Reconciler(
            database=database,
            enqueuer=enqueuer,
            grace_seconds=GRACE,
            republish_after_seconds=10 * GRACE,
            key_limits=limits,
            clock=clock,
        )
        try:
            async with database.session() as session:
                key = await create_key(session, name="counts")
            await body(World(database, limits, reconciler, clock, key.id))
        finally:
            await redis.aclose()
            await database.aclose()

    run(main())


def test_a_pass_keeps_a_job_admitted_but_not_yet_stored(
    private_database_url: str, redis_url: str
) -> None:
    """The race a pass that replaced counts with SQL's lost: the intake has
    admitted a job and not committed its row when the pass reads SQL."""

    async def body(world: World) -> None:
        assert await world.admit("job_a", limit=1)

        await world.reconciler.run_once()
        world.clock.now += GRACE / 2
        await world.reconciler.run_once()

        assert await world.running() == 1
        assert not await world.admit("job_b", limit=1)

    scenario(private_database_url, redis_url, body)


def test_a_pass_frees_slots_of_jobs_never_stored_or_ended_unreleased(
    private_database_url: str, redis_url: str
) -> None:
    async def body(world: World) -> None:
        assert await world.admit("job_lost")  # the intake died before writing the row
        assert await world.admit("job_ended")
        await world.store("job_ended")
        await world.end("job_ended")
        assert await world.admit("job_live")
        await world.store("job_live")

        await world.reconciler.run_once()
        assert await world.running() == 3  # within the grace period: could be in flight

        world.clock.now += GRACE + 1
        await world.reconciler.run_once()

        assert await world.running() == 1
        # The job still running was checked: the next pass leaves it alone.
        assert await world.limits.unchecked(since=world.clock.now, limit=10) == []
        assert not await world.admit("job_next", limit=1)

    scenario(private_database_url, redis_url, body)


def test_a_pass_counts_unfinished_jobs_redis_lost(
    private_database_url: str, redis_url: str
) -> None:
    """Jobs SQL holds unfinished that Redis does not count (it was flushed,
    or down at intake) are counted again, once."""

    async def body(world: World) -> None:
        for job_id in ("job_1", "job_2", "job_3"):
            await world.store(job_id)
        await world.end("job_3")
        assert await world.running() == 0

        await world.reconciler.run_once()
        await world.reconciler.run_once()

        assert await world.running() == 2
        await world.limits.job_finished(world.key_id, "job_1")
        assert await world.running() == 1

    scenario(private_database_url, redis_url, body)


def test_many_lost_jobs_are_counted_again_a_page_per_pass(
    private_database_url: str, redis_url: str
) -> None:
    async def body(world: World) -> None:
        async with world.database.session() as session:
            await create_jobs(
                session, jobs=[mock_job(world.key_id) for _ in range(1100)], now=world.clock.now
            )

        counted = []
        for _ in range(4):
            await world.reconciler.run_once()
            counted.append(await world.running())

        assert counted == [500, 1000, 1100, 1100]

    scenario(private_database_url, redis_url, body)


def test_a_pass_frees_the_slots_of_jobs_it_expires(
    private_database_url: str, redis_url: str
) -> None:
    async def body(world: World) -> None:
        assert await world.admit("job_late", limit=1)
        await world.store("job_late", expires_at=world.clock.now + 5)
        world.clock.now += 10

        await world.reconciler.run_once()

        async with world.database.session() as session:
            job = await get_job(session, job_id="job_late", key_id=world.key_id)
        assert job is not None
        assert job.status == "expired"
        assert await world.running() == 0
        assert await world.admit("job_next", limit=1)

    scenario(private_database_url, redis_url, body)
