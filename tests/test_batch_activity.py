"""The batch scheduler goes quiet with no batch to move on, and wakes when one starts.

In-process, on a database of its own and a real Redis, with an injected clock.
"""

from __future__ import annotations

import time
from pathlib import Path

import redis.asyncio as aioredis

from relayq.batches.activity import BatchActivity
from relayq.batches.notify import BatchNotifier
from relayq.batches.scheduler import BatchScheduler, SchedulerReport
from relayq.config.settings import Settings
from relayq.files.storage import DirectoryStorage
from relayq.ids import new_id
from relayq.queueing.broker import Enqueuer
from relayq.schemas.batches import BatchStatus
from relayq.store import Database
from relayq.store.keys import create_key
from relayq.store.models import Batch
from tests.services import run

IDLE_PASS = 10.0


def test_a_quiet_scheduler_skips_its_sql_until_a_batch_starts_or_its_idle_pass_is_due(
    private_database_url: str, redis_server: str, tmp_path: Path
) -> None:
    settings = Settings(
        database_url=private_database_url,
        redis_url=f"{redis_server}/12",
        key_prefix=f"activity-{new_id('t')}",
        batches={"idle_pass_seconds": IDLE_PASS},
    )
    offset = [0.0]

    def clock() -> float:
        return time.time() + offset[0]

    async def scenario() -> list[SchedulerReport | None]:
        database = Database(settings.database_url)
        redis = aioredis.Redis.from_url(settings.redis_url)
        enqueuer = Enqueuer(settings=settings)
        scheduler = BatchScheduler(
            database=database,
            enqueuer=enqueuer,
            storage=DirectoryStorage(tmp_path),
            notifier=BatchNotifier(database=database, enqueuer=None),
            settings=settings,
            clock=clock,
        )
        activity = BatchActivity(redis, key_prefix=settings.key_prefix)
        seen: list[SchedulerReport | None] = []
        try:
            seen.append(await scheduler.tick(activity))  # 0: nothing yet, a full pass
            seen.append(await scheduler.tick(activity))  # 1: quiet, skipped
            async with database.session() as session:
                key = await create_key(session, name="activity")
                now = clock()
                session.add(
                    Batch(
                        id=new_id("batch"),
                        key_id=key.id,
                        status=BatchStatus.IN_PROGRESS.value,
                        endpoint="/v1/chat/completions",
                        input_file_id="file-none",
                        completion_window="24h",
                        priority=1,
                        total=0,
                        created_at=now,
                        expires_at=now + 86_400,
                        in_progress_at=now,
                    )
                )
                await session.commit()
            seen.append(await scheduler.tick(activity))  # 2: not told yet: still skipped
            await activity.note()
            seen.append(await scheduler.tick(activity))  # 3: woken: moves the batch on
            seen.append(await scheduler.tick(activity))  # 4: found one last time: a pass
            seen.append(await scheduler.tick(activity))  # 5: quiet again
            offset[0] = IDLE_PASS + 1
            seen.append(await scheduler.tick(activity))  # 6: the idle pass is due
        finally:
            enqueuer.close()
            await redis.aclose()
            await database.aclose()
        return seen

    reports = run(scenario())

    ran = [report is not None for report in reports]
    assert ran == [True, False, False, True, True, False, True]
    assert reports[0] is not None
    assert reports[0].quiet
    assert reports[3] is not None
    assert (reports[3].active, reports[3].finished) == (1, 1)
    assert reports[6] is not None
    assert reports[6].quiet
