"""The event hub in-process, on a real Redis: many followers, one firehose."""

from __future__ import annotations

import asyncio
from typing import Any

import redis as sync_redis
import redis.asyncio as aioredis

from relayq.event_hub import EventHub
from relayq.events import EventLog, EventType, JobEvent, stream_key
from tests.services import run

_DB = 14
PREFIX = "relayq-hub-test"


def test_each_follower_gets_its_jobs_events_live_with_its_streams_ids(
    redis_server: str,
) -> None:
    """Twenty jobs followed at once: each follower gets its own job's events, in order,
    each with the id its job's stream gave it (what Last-Event-ID resumes from), and
    replayed events are not given twice."""
    url = f"{redis_server}/{_DB}"
    flush = sync_redis.Redis.from_url(url)
    flush.flushdb()
    flush.close()

    async def scenario() -> None:
        redis = aioredis.Redis.from_url(url)
        log = EventLog(redis, key_prefix=PREFIX, max_events=100, retention_seconds=60)
        hub = EventHub(url, key_prefix=PREFIX)
        jobs = [f"job_{n}" for n in range(20)]
        try:
            for job in jobs:  # one stored before anyone follows: replayed, then live
                await log.emit(JobEvent(job_id=job, key_id="k", type=EventType.QUEUED))

            async def follow(job: str) -> list[JobEvent]:
                seen = []
                async for event in hub.follow(job_id=job, key_id="k"):
                    seen.append(event)
                    if event.terminal:
                        return seen
                raise AssertionError("the stream ended early")

            followers = [asyncio.create_task(follow(job)) for job in jobs]
            await asyncio.sleep(0.2)
            for step in range(3):
                await asyncio.gather(
                    *(
                        log.emit_deltas(
                            [
                                JobEvent(
                                    job_id=job, key_id="k", type=EventType.DELTA, data={"n": step}
                                )
                            ]
                        )
                        for job in jobs
                    )
                )
            for job in jobs:
                await log.emit(JobEvent(job_id=job, key_id="k", type=EventType.SUCCEEDED))
            results = await asyncio.wait_for(asyncio.gather(*followers), timeout=10)
            for job, events in zip(jobs, results, strict=True):
                stored: list[Any] = await redis.xrange(stream_key(PREFIX, job)) or []
                assert [e.id for e in events] == [entry_id.decode() for entry_id, _ in stored]
                assert [e.type for e in events] == [
                    EventType.QUEUED,
                    EventType.DELTA,
                    EventType.DELTA,
                    EventType.DELTA,
                    EventType.SUCCEEDED,
                ]
                assert [e.data.get("n") for e in events[1:4]] == [0, 1, 2]
                assert {e.job_id for e in events} == {job}
        finally:
            await hub.aclose()
            await redis.aclose()

    run(scenario())
