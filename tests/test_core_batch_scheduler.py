"""The batch scheduler in-process: fair release, cancel, expiry at the deadline, results.

On real SQLite and Redis and a real Celery broker (its messages read back from
Redis), with a clock the test moves. The requests are stored held, as the
batch preparer stores them; a "worker" here claims and finishes released ones
with the store's own claim and finish, as the executor does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy import select

from relayq.batches.notify import BatchNotifier
from relayq.batches.scheduler import BatchScheduler
from relayq.config.settings import Settings
from relayq.files.storage import DirectoryStorage, read_lines
from relayq.ids import new_id
from relayq.queueing.broker import Enqueuer
from relayq.schemas.batches import BatchStatus
from relayq.schemas.jobs import JobStatus
from relayq.store.batches import cancel_batch, get_batch_by_id, insert_requests
from relayq.store.claims import Claim, claim_job
from relayq.store.keys import create_key
from relayq.store.models import Batch, Job
from relayq.store.outcomes import Outcome, finish_job
from tests.in_process import PREFIX, Env, ScenarioRunner, queued_messages

WINDOW = 4
DAY = 86_400.0


@asynccontextmanager
async def scheduler(env: Env, files: Path) -> AsyncIterator[BatchScheduler]:
    """A worker's batch scheduler on ``env``'s clock, with a window of :data:`WINDOW`."""
    settings = Settings(
        database_url=env.database_url,
        redis_url=env.redis_url,
        key_prefix=PREFIX,
        batches={"window": WINDOW},
    )
    enqueuer = Enqueuer(settings=settings)
    try:
        yield BatchScheduler(
            database=env.database,
            enqueuer=enqueuer,
            storage=DirectoryStorage(files),
            notifier=BatchNotifier(database=env.database, enqueuer=None),
            settings=settings,
            clock=env.clock,
        )
    finally:
        enqueuer.close()


async def batch(env: Env, key_id: str, requests: int, *, window: float = DAY) -> str:
    """An in-progress batch of ``requests`` held mock requests, due in ``window`` seconds."""
    now = env.clock()
    batch_id = new_id("batch")
    rows = [
        {
            "id": f"job_{batch_id}_{n:03}",
            "key_id": key_id,
            "status": JobStatus.QUEUED.value,
            "model": "mock",
            "route": "mock",
            "provider": "mock",
            "upstream_model": "mock",
            "request": {"model": "mock", "messages": [{"role": "user", "content": f"{n}"}]},
            "priority": 1,
            "metadata": {},
            "deployment_index": 0,
            "first_deployment": 0,
            "expires_at": now + window,
            "run": 0,
            "created_at": now,
            "batch_id": batch_id,
            "custom_id": f"request-{n}",
            "held": True,
        }
        for n in range(requests)
    ]
    async with env.database.session() as session:
        session.add(
            Batch(
                id=batch_id,
                key_id=key_id,
                status=BatchStatus.IN_PROGRESS.value,
                endpoint="/v1/chat/completions",
                input_file_id="file-none",
                completion_window="24h",
                priority=1,
                total=requests,
                created_at=now,
                expires_at=now + window,
                in_progress_at=now,
            )
        )
        await session.flush()
        await insert_requests(session, rows)
        await session.commit()
    return batch_id


async def new_key(env: Env) -> str:
    async with env.database.session() as session:
        return (await create_key(session, name="batches")).id


async def statuses(env: Env, batch_id: str) -> dict[str, int]:
    """How many of the batch's requests are in each state (held ones as ``held``)."""
    async with env.database.session() as session:
        rows = (
            await session.execute(select(Job.status, Job.held).where(Job.batch_id == batch_id))
        ).all()
    counts: dict[str, int] = {}
    for status, held in rows:
        name = "held" if held else status
        counts[name] = counts.get(name, 0) + 1
    return counts


async def released_ids(env: Env, batch_id: str) -> list[str]:
    async with env.database.session() as session:
        query = select(Job.id).where(
            Job.batch_id == batch_id, Job.held.is_(False), Job.status == JobStatus.QUEUED.value
        )
        return list((await session.execute(query.order_by(Job.id))).scalars())


async def claim_released(env: Env, batch_id: str) -> list[Claim]:
    """Claim the batch's released requests, as a worker does."""
    claims = []
    async with env.database.session() as session:
        for job_id in await released_ids(env, batch_id):
            claim = await claim_job(session, job_id=job_id, now=env.clock(), lease_seconds=60)
            assert claim is not None
            claims.append(claim)
    return claims


async def answer(env: Env, claims: list[Claim]) -> None:
    """Finish the claimed requests with an answer, as a worker does."""
    async with env.database.session() as session:
        for claim in claims:
            response = {"id": f"chatcmpl-{claim.job_id}", "object": "chat.completion"}
            outcome = Outcome(status=JobStatus.SUCCEEDED, response=response)
            done = await finish_job(
                session, claim=claim, outcome=outcome, attempt=None, now=env.clock()
            )
            assert done.written


async def status_of(env: Env, batch_id: str) -> Batch:
    async with env.database.session() as session:
        found = await get_batch_by_id(session, batch_id=batch_id)
    assert found is not None
    return found


def test_two_keys_share_the_window_and_a_finished_batch_gets_its_output_file(
    scenario: ScenarioRunner, tmp_path: Path
) -> None:
    async def body(env: Env) -> None:
        big = await batch(env, env.key_id, 10)
        small = await batch(env, await new_key(env), 2)
        async with scheduler(env, tmp_path) as under_test:
            first = await under_test.run_once()
            assert (first.released, first.active) == (WINDOW, 2)
            # Equal shares between the keys, not first come, first served.
            assert await statuses(env, big) == {"held": 8, "queued": 2}
            assert await statuses(env, small) == {"queued": 2}
            sent = sorted(j for _, jobs in queued_messages(env.redis_url, "llm.mock") for j in jobs)
            assert sent == sorted(await released_ids(env, big) + await released_ids(env, small))

            # The window is full until some finish: nothing more is released.
            assert (await under_test.run_once()).released == 0
            await answer(env, await claim_released(env, small))
            await claim_released(env, big)  # running, still in the window
            second = await under_test.run_once()
            assert second.released == 2
            assert second.finished == 1  # the small batch: all its requests ended
            assert await statuses(env, big) == {"held": 6, "running": 2, "queued": 2}

            finished = await status_of(env, small)
            assert finished.status == BatchStatus.COMPLETED.value
            assert finished.output_file_id is not None
            assert finished.error_file_id is None
            storage = DirectoryStorage(tmp_path)
            lines = [line async for line in read_lines(storage, finished.output_file_id)]
            assert len(lines) == 2
            assert (await status_of(env, big)).status == BatchStatus.IN_PROGRESS.value

    scenario(body)


def test_a_cancelled_batch_ends_its_queued_requests_and_waits_for_its_running_ones(
    scenario: ScenarioRunner, tmp_path: Path
) -> None:
    async def body(env: Env) -> None:
        batch_id = await batch(env, env.key_id, 6)
        async with scheduler(env, tmp_path) as under_test:
            await under_test.run_once()
            running = await claim_released(env, batch_id)
            async with env.database.session() as session:  # what the API's cancel does
                assert await cancel_batch(
                    session, batch_id=batch_id, key_id=env.key_id, now=env.clock()
                )
            assert await statuses(env, batch_id) == {"cancelled": 2, "running": WINDOW}
            pass_ = await under_test.run_once()
            assert (pass_.released, pass_.finished) == (0, 0)  # nothing more is released
            assert (await status_of(env, batch_id)).status == BatchStatus.CANCELLING.value
            env.clock.advance(1)
            await answer(env, running)
            assert (await under_test.run_once()).finished == 1
        ended = await status_of(env, batch_id)
        assert ended.status == BatchStatus.CANCELLED.value
        assert ended.output_file_id is not None  # what ran is kept
        assert ended.error_file_id is not None  # the cancelled requests

    scenario(body)


def test_a_batch_past_its_window_expires_its_queued_requests_at_the_deadline(
    scenario: ScenarioRunner, tmp_path: Path
) -> None:
    """The deadline is the clock's: one pass before it releases, one after it expires."""

    async def body(env: Env) -> None:
        batch_id = await batch(env, env.key_id, 7, window=3600)
        async with scheduler(env, tmp_path) as under_test:
            assert (await under_test.run_once()).released == WINDOW
            await answer(env, await claim_released(env, batch_id))
            env.clock.advance(3599)
            before = await under_test.run_once()
            assert (before.released, before.expired) == (3, 0)
            env.clock.advance(1)
            after = await under_test.run_once()
            assert (after.released, after.expired, after.finished) == (0, 3, 1)
        assert await statuses(env, batch_id) == {"succeeded": WINDOW, "expired": 3}
        ended = await status_of(env, batch_id)
        assert ended.status == BatchStatus.EXPIRED.value
        assert ended.error_file_id is not None
        async with env.database.session() as session:
            query = select(Job.error).where(Job.batch_id == batch_id, Job.status == "expired")
            errors = list((await session.execute(query)).scalars())
        assert {e["code"] for e in errors if e is not None} == {"batch_expired"}

    scenario(body)
