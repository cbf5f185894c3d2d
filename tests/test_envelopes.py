"""An envelope (one message, many jobs) on the shared stack's real worker."""

from __future__ import annotations

import time

import httpx

from relayq.config.settings import Settings
from relayq.queueing.broker import Enqueuer
from relayq.store import Database
from relayq.store.jobs import create_jobs
from relayq.store.keys import create_key
from tests.jobs import mock_job, wait_for_status
from tests.services import run
from tests.stack import Stack


def test_an_envelope_runs_each_of_its_jobs_once(
    stack: Stack, database_url: str, redis_url: str
) -> None:
    async def store() -> tuple[str, list[str]]:
        database = Database(database_url)
        try:
            async with database.session() as session:
                key = await create_key(session, name="envelopes")
                jobs = [mock_job(key.id) for _ in range(20)]
                rows = await create_jobs(session, jobs=jobs, now=time.time())
            return key.secret, [row.id for row in rows]
        finally:
            await database.aclose()

    secret, job_ids = run(store())
    enqueuer = Enqueuer(settings=Settings(redis_url=redis_url))
    try:
        # Twice: a redelivered envelope must not run a job again.
        for _ in range(2):
            assert enqueuer.send_many([(job_id, "mock", 5) for job_id in job_ids]) == job_ids
    finally:
        enqueuer.close()
    headers = {"Authorization": f"Bearer {secret}"}
    with httpx.Client(base_url=stack.base_url, headers=headers, timeout=10) as client:
        for job_id in job_ids:
            job = wait_for_status(client, job_id, {"succeeded", "failed"}, timeout=30)
            assert job["status"] == "succeeded"
            assert len(job["attempts"]) == 1
