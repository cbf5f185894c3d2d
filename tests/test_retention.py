"""Retention: what is past its period goes, a chunk per table per reconciler pass.

The purge runs in the reconciler's pass, on each real database, with rows
stamped long ago rather than any waiting: a clock the test sets says when
"now" is. The API's side (``expires_after`` on uploads, a batch's
``output_expires_after``, expired files not found) runs on the shared stack.
"""

from __future__ import annotations

import io
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from relayq.config.settings import RetentionSettings, Settings
from relayq.files.storage import DirectoryStorage
from relayq.queueing.broker import Enqueuer
from relayq.recovery.reconciler import Purged, Reconciler, Retention
from relayq.store import Database
from relayq.store.keys import create_key
from relayq.store.models import (
    Attempt,
    AuditEntry,
    Batch,
    BudgetSpend,
    File,
    Job,
    WebhookAttempt,
    WebhookDelivery,
)
from tests.batches import jsonl, request_line, upload, wait_for_batch
from tests.clock import FakeClock
from tests.conftest import KeyFactory
from tests.errors import error_of
from tests.services import free_port, run
from tests.stack import Stack

DAY = 24 * 3600.0
NOW = 1_800_000_000.0
"""2027-01-15 08:00 UTC: the time of every pass."""
OLD = NOW - 40 * DAY
"""Past the 30 days jobs and batches are kept."""
RECENT = NOW - 2 * DAY


@dataclass
class World:
    database: Database
    storage: DirectoryStorage
    clock: FakeClock
    key_id: str
    settings: RetentionSettings = field(default_factory=RetentionSettings)
    _numbers: list[int] = field(default_factory=lambda: [0])

    def reconciler(self, **overrides: Any) -> Reconciler:
        settings = self.settings.model_copy(update=overrides)
        # A broker nobody listens on: nothing here needs a message sent.
        enqueuer = Enqueuer(settings=Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0"))
        return Reconciler(
            database=self.database,
            enqueuer=enqueuer,
            grace_seconds=60.0,
            republish_after_seconds=600.0,
            retention=Retention(settings=settings, storage=self.storage),
            clock=self.clock,
        )

    def new_id(self, prefix: str) -> str:
        self._numbers[0] += 1
        return f"{prefix}_{self._numbers[0]:06d}"

    async def add(self, *rows: Any) -> None:
        async with self.database.session() as session:
            for row in rows:
                session.add(row)
                await session.flush()
            await session.commit()

    def job(
        self, *, status: str = "succeeded", finished_at: float | None = OLD, **fields: Any
    ) -> Job:
        created = (finished_at or OLD) - 60
        values: dict[str, Any] = {
            "id": self.new_id("job"),
            "key_id": self.key_id,
            "status": status,
            "model": "mock",
            "route": "mock",
            "provider": "mock",
            "upstream_model": "mock",
            "request": {"model": "mock", "messages": []},
            "priority": 5,
            "metadata_": {},
            "created_at": created,
            "enqueued_at": created,
            "finished_at": finished_at,
            **fields,
        }
        return Job(**values)

    def attempt(self, job: Job) -> Attempt:
        return Attempt(
            job_id=job.id,
            run=1,
            provider="mock",
            upstream_model="mock",
            status="succeeded",
            latency_ms=1.0,
            created_at=job.created_at,
        )

    def delivery(self, *, job: Job | None = None, batch: Batch | None = None) -> WebhookDelivery:
        return WebhookDelivery(
            id=self.new_id("msg"),
            job_id=None if job is None else job.id,
            batch_id=None if batch is None else batch.id,
            key_id=self.key_id,
            event="job.succeeded",
            url="https://hooks.example/x",
            payload={},
            status="succeeded",
            created_at=OLD,
            finished_at=OLD,
        )

    def delivery_attempt(self, delivery: WebhookDelivery) -> WebhookAttempt:
        return WebhookAttempt(
            delivery_id=delivery.id,
            number=1,
            url=delivery.url,
            status_code=200,
            latency_ms=1.0,
            created_at=OLD,
        )

    def batch(self, *, status: str = "completed", ended: float | None = OLD) -> Batch:
        return Batch(
            id=self.new_id("batch"),
            key_id=self.key_id,
            status=status,
            endpoint="/v1/chat/completions",
            input_file_id="file_input",
            completion_window="24h",
            priority=1,
            total=1,
            created_at=OLD - DAY,
            expires_at=OLD,
            completed_at=ended,
        )

    def file(self, *, expires_at: float | None, deleted_at: float | None = None) -> File:
        return File(
            id=self.new_id("file"),
            key_id=self.key_id,
            purpose="batch",
            filename="x.jsonl",
            bytes=3,
            lines=1,
            created_at=OLD,
            expires_at=expires_at,
            deleted_at=deleted_at,
        )

    async def store_bytes(self, file: File) -> None:
        async with self.storage.writer(file.id) as writer:
            await writer.write(b"{}\n")
            await writer.commit()

    async def ids(self, column: Any) -> set[Any]:
        async with self.database.session() as session:
            return set((await session.execute(select(column))).scalars())

    async def count(self, model: Any) -> int:
        async with self.database.session() as session:
            found = (await session.execute(select(func.count()).select_from(model))).scalar()
            return int(found or 0)

    async def purge(self, **overrides: Any) -> Purged:
        report = await self.reconciler(purge_interval_seconds=0, **overrides).run_once()
        assert report.purged is not None
        return report.purged


def scenario(database_url: str, tmp_path: Path, body: Callable[[World], Awaitable[None]]) -> None:
    async def main() -> None:
        database = Database(database_url)
        try:
            async with database.session() as session:
                key = await create_key(session, name="retention")
            storage = DirectoryStorage(tmp_path / "files")
            await body(World(database, storage, FakeClock(NOW), key.id))
        finally:
            await database.aclose()

    run(main())


def test_old_jobs_go_with_their_attempts_and_deliveries(
    private_database_url: str, tmp_path: Path
) -> None:
    async def body(world: World) -> None:
        old = world.job()
        recent = world.job(finished_at=RECENT)
        queued = world.job(status="queued", finished_at=None, created_at=OLD)
        running = world.job(
            status="running", finished_at=None, created_at=OLD, lease_expires_at=NOW + 60
        )
        failed = world.job(status="failed")
        delivery = world.delivery(job=old)
        kept_delivery = world.delivery(job=recent)
        await world.add(old, recent, queued, running, failed)
        await world.add(world.attempt(old), world.attempt(old), world.attempt(recent))
        await world.add(delivery, kept_delivery)
        await world.add(world.delivery_attempt(delivery), world.delivery_attempt(kept_delivery))

        purged = await world.purge()

        assert (purged.jobs, purged.attempts) == (2, 2)
        assert (purged.webhook_deliveries, purged.webhook_attempts) == (1, 1)
        assert await world.ids(Job.id) == {recent.id, queued.id, running.id}
        assert await world.ids(Attempt.job_id) == {recent.id}
        assert await world.ids(WebhookDelivery.id) == {kept_delivery.id}
        assert await world.ids(WebhookAttempt.delivery_id) == {kept_delivery.id}

    scenario(private_database_url, tmp_path, body)


def test_a_pass_deletes_at_most_a_chunk_of_rows_per_table(
    private_database_url: str, tmp_path: Path
) -> None:
    async def body(world: World) -> None:
        jobs = [world.job(finished_at=OLD + n) for n in range(5)]
        await world.add(*jobs)
        await world.add(*(world.attempt(job) for job in jobs for _ in range(2)))
        await world.add(*(world.delivery(job=job) for job in jobs))

        passes: list[Purged] = []
        while await world.count(Job):
            before = (await world.count(Job), await world.count(Attempt))
            passes.append(await world.purge(purge_chunk=3))
            after = (await world.count(Job), await world.count(Attempt))
            assert before[0] - after[0] <= 3
            assert before[1] - after[1] <= 3
            assert len(passes) < 10

        assert all(max(p.jobs, p.attempts, p.webhook_deliveries) <= 3 for p in passes), passes
        assert len(passes) >= 4  # 10 attempts, 3 a pass
        assert sum(p.jobs for p in passes) == 5
        assert sum(p.attempts for p in passes) == 10
        assert await world.count(WebhookDelivery) == 0

    scenario(private_database_url, tmp_path, body)


def test_a_batchs_requests_stay_while_the_batch_is_live(
    private_database_url: str, tmp_path: Path
) -> None:
    async def body(world: World) -> None:
        live = world.batch(status="in_progress", ended=None)
        finalizing = world.batch(status="finalizing", ended=None)
        ended_recently = world.batch(ended=RECENT)
        ended_long_ago = world.batch()
        await world.add(live, finalizing, ended_recently, ended_long_ago)
        requests = {
            batch.id: world.job(batch_id=batch.id)
            for batch in (live, finalizing, ended_recently, ended_long_ago)
        }
        await world.add(*requests.values())
        await world.add(world.attempt(requests[ended_long_ago.id]))
        await world.add(world.delivery(batch=ended_long_ago), world.delivery(batch=live))

        purged = await world.purge()

        # The ended batch went with its request, the request's attempt and its delivery.
        assert purged == Purged(jobs=1, attempts=1, webhook_deliveries=1, batches=1)
        kept = {live.id, finalizing.id, ended_recently.id}
        assert await world.ids(Batch.id) == kept
        assert await world.ids(Job.batch_id) == kept
        assert await world.ids(WebhookDelivery.batch_id) == {live.id}

    scenario(private_database_url, tmp_path, body)


def test_expired_and_deleted_files_go_from_sql_then_from_storage(
    private_database_url: str, tmp_path: Path
) -> None:
    async def body(world: World) -> None:
        expired = world.file(expires_at=NOW - 1)
        deleted = world.file(expires_at=None, deleted_at=RECENT)
        unexpired = world.file(expires_at=NOW + 60)
        forever = world.file(expires_at=None)
        being_read = world.file(expires_at=NOW - 1)
        validating = world.batch(status="validating", ended=None)
        validating.input_file_id = being_read.id
        files = (expired, deleted, unexpired, forever, being_read)
        await world.add(*files, validating)
        for file in files:
            await world.store_bytes(file)

        purged = await world.purge()

        assert purged.files == 2
        assert await world.ids(File.id) == {unexpired.id, forever.id, being_read.id}
        on_disk = {path.name for path in world.storage.root.iterdir()}
        assert on_disk == {unexpired.id, forever.id, being_read.id}

    scenario(private_database_url, tmp_path, body)


def test_audit_entries_and_old_budget_windows_past_their_period_go(
    private_database_url: str, tmp_path: Path
) -> None:
    async def body(world: World) -> None:
        def entry(at: float) -> AuditEntry:
            return AuditEntry(at=at, actor_key_id=world.key_id, action="key.create", target="k")

        def window(name: str, reserved_usd: float = 0.0) -> BudgetSpend:
            return BudgetSpend(
                key_id=world.key_id,
                window=name,
                reserved_usd=reserved_usd,
                reserved_tokens=0,
                spent_usd=1.0,
                spent_tokens=10,
            )

        await world.add(entry(NOW - 400 * DAY), entry(NOW - 300 * DAY))
        # NOW is 2027-01-15: two days back is the 13th, two months back November.
        await world.add(
            window("2027-01-12"),
            window("2027-01-13"),
            window("2027-01-10", reserved_usd=0.5),  # an unfinished job's reservation
            window("2026-10"),
            window("2026-11"),
        )

        purged = await world.purge()

        assert (purged.audit, purged.budget_windows) == (1, 2)
        assert await world.ids(AuditEntry.at) == {NOW - 300 * DAY}
        assert await world.ids(BudgetSpend.window) == {"2027-01-13", "2027-01-10", "2026-11"}

    scenario(private_database_url, tmp_path, body)


def test_periods_set_to_none_keep_everything_and_purges_wait_their_interval(
    private_database_url: str, tmp_path: Path
) -> None:
    async def body(world: World) -> None:
        await world.add(world.job(finished_at=NOW - 4000 * DAY), world.batch(ended=OLD))
        kept = await world.purge(jobs_days=None, batches_days=None, audit_days=None)
        assert kept == Purged()
        assert await world.count(Job) == 1

        reconciler = world.reconciler(purge_interval_seconds=300)
        assert (await reconciler.run_once()).purged == Purged(jobs=1, batches=1)
        await world.add(world.job())
        world.clock.advance(299)
        assert (await reconciler.run_once()).purged is None
        world.clock.advance(1)
        assert (await reconciler.run_once()).purged == Purged(jobs=1)

    scenario(private_database_url, tmp_path, body)


# The API's side, on the shared stack.


def _upload(client: httpx.Client, **fields: str) -> httpx.Response:
    return client.post(
        "/v1/files",
        data={"purpose": "batch", **fields},
        files={"file": ("input.jsonl", io.BytesIO(jsonl([request_line("a", "hi")])))},
    )


def test_an_upload_expires_after_the_seconds_it_asks_for(
    stack: Stack, make_key: KeyFactory
) -> None:
    sdk = openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key=make_key(), max_retries=0)

    uploaded = sdk.files.create(
        file=("input.jsonl", jsonl([request_line("a", "hi")])),
        purpose="batch",
        expires_after={"anchor": "created_at", "seconds": 7200},
    )
    plain = sdk.files.create(
        file=("input.jsonl", jsonl([request_line("a", "hi")])), purpose="batch"
    )

    assert uploaded.expires_at == uploaded.created_at + 7200
    assert sdk.files.retrieve(uploaded.id).expires_at == uploaded.expires_at
    assert plain.expires_at is None  # retention.files_days: None by default


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"expires_after[anchor]": "created_at", "expires_after[seconds]": "3599"}, "seconds"),
        ({"expires_after[anchor]": "created_at", "expires_after[seconds]": "2592001"}, "seconds"),
        ({"expires_after[anchor]": "created_at", "expires_after[seconds]": "1h"}, "seconds"),
        ({"expires_after[anchor]": "created_at"}, "seconds"),
        ({"expires_after[anchor]": "last_active_at", "expires_after[seconds]": "3600"}, "anchor"),
        ({"expires_after[seconds]": "3600"}, "anchor"),
    ],
)
def test_an_expires_after_out_of_bounds_is_refused_naming_its_field(
    client: httpx.Client, fields: dict[str, str], param: str
) -> None:
    error = error_of(_upload(client, **fields), 400)

    assert error["param"] == f"expires_after.{param}"
    assert error["code"] == "invalid_value"


def test_an_expired_file_is_not_found(
    client: httpx.Client, stack: Stack, database_url: str
) -> None:
    file_id = upload(client, jsonl([request_line("a", "hi")]))["id"]
    assert client.get(f"/v1/files/{file_id}").status_code == 200

    async def expire() -> None:
        database = Database(database_url)
        try:
            async with database.session() as session:
                await _set_expiry(session, file_id, time.time() - 1)
        finally:
            await database.aclose()

    run(expire())

    assert error_of(client.get(f"/v1/files/{file_id}"), 404)["code"] == "file_not_found"
    assert error_of(client.get(f"/v1/files/{file_id}/content"), 404)["code"] == "file_not_found"
    assert file_id not in {f["id"] for f in client.get("/v1/files").json()["data"]}
    refused = client.post("/v1/batches", json={"input_file_id": file_id})
    assert error_of(refused, 404)["param"] == "input_file_id"


async def _set_expiry(session: AsyncSession, file_id: str, expires_at: float) -> None:
    await session.execute(update(File).where(File.id == file_id).values(expires_at=expires_at))
    await session.commit()


def test_a_batch_gives_its_output_files_the_expiry_it_asks_for(client: httpx.Client) -> None:
    file_id = upload(client, jsonl([request_line("ok", "hi")]))["id"]
    asked = client.post(
        "/v1/batches",
        json={
            "input_file_id": file_id,
            "output_expires_after": {"anchor": "created_at", "seconds": 3600},
        },
    )
    assert asked.status_code == 200, asked.text
    default = client.post("/v1/batches", json={"input_file_id": file_id})
    assert default.status_code == 200, default.text

    for batch_id, seconds in ((asked.json()["id"], 3600), (default.json()["id"], 30 * DAY)):
        batch = wait_for_batch(client, batch_id)
        assert batch["status"] == "completed", batch
        output = client.get(f"/v1/files/{batch['output_file_id']}").json()
        assert output["expires_at"] - output["created_at"] == seconds


@pytest.mark.parametrize(
    ("expires_after", "param"),
    [
        ({"anchor": "created_at", "seconds": 60}, "output_expires_after.seconds"),
        ({"anchor": "created_at", "seconds": 2592001}, "output_expires_after.seconds"),
        ({"anchor": "completed_at", "seconds": 3600}, "output_expires_after.anchor"),
        ({"seconds": 3600}, "output_expires_after.anchor"),
    ],
)
def test_a_batchs_output_expires_after_out_of_bounds_is_refused(
    client: httpx.Client, expires_after: dict[str, Any], param: str
) -> None:
    file_id = upload(client, jsonl([request_line("a", "hi")]))["id"]

    answer = client.post(
        "/v1/batches", json={"input_file_id": file_id, "output_expires_after": expires_after}
    )

    assert error_of(answer, 400)["param"] == param
