"""A chaos run against a misbehaving upstream: errors, 429s, stalls, cut streams, bad bodies.

Jobs go to a route whose first deployment is the flaky upstream (with an RPM
limit) and whose second is the mock provider. The run checks that every job
ends (succeeded by retry or fallback, or failed with a clear error), that the
breaker opened and closed again, and that the upstream never saw more than
the RPM limit in any minute, nor more than its pace allows in any ten seconds
(the limiter spaces requests evenly, so a short window shows a burst that a
minute would hide).
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.chaos import records
from bench.flaky_upstream import FaultMix, FlakyUpstream
from relayq.store import Database
from relayq.store.keys import create_key
from tests.services import reset_database
from tests.stack import Stack

__all__ = ["FaultConfig", "FaultReport", "run_fault_mix"]


@dataclass(frozen=True)
class FaultConfig:
    database_url: str
    redis_url: str
    logs: Path
    jobs: int = 300
    rpm: int = 600
    submit_seconds: float = 20.0
    timeout_seconds: float = 600.0
    mix: FaultMix = field(default_factory=FaultMix)


@dataclass
class FaultReport:
    jobs: int
    statuses: dict[str, int]
    failed_without_a_clear_error: int
    upstream_calls: int
    upstream_outcomes: dict[str, int]
    rpm_limit: int
    most_upstream_calls_in_a_minute: int
    most_upstream_calls_in_ten_seconds: int
    breaker_states_seen: list[str]
    fallbacks: int
    seconds: float

    @property
    def ok(self) -> bool:
        ended = set(self.statuses) <= {"succeeded", "failed"}
        return (
            ended
            and self.failed_without_a_clear_error == 0
            and self.most_upstream_calls_in_a_minute <= self.rpm_limit
            and self.most_upstream_calls_in_ten_seconds <= self.paced_limit(10.0)
            and "open" in self.breaker_states_seen
            and self.breaker_states_seen[-1] == "closed"
        )

    def paced_limit(self, seconds: float) -> int:
        """The most calls the RPM limit lets into any window of ``seconds``: the limiter
        paces requests (no burst), so a window holds its share of the minute and one
        call more (the one at its edge)."""
        return math.floor(seconds * self.rpm_limit / 60.0) + 1


def _keys(database_url: str) -> tuple[str, str]:
    async def create() -> tuple[str, str]:
        database = Database(database_url)
        try:
            async with database.session() as session:
                user = await create_key(session, name="faults")
                admin = await create_key(session, name="faults-admin", admin=True)
                return user.secret, admin.secret
        finally:
            await database.aclose()

    return asyncio.run(create())


def _watch_breaker(stack: Stack, admin: str, seen: list[str], stop: threading.Event) -> None:
    headers = {"Authorization": f"Bearer {admin}"}
    with httpx.Client(base_url=stack.base_url, headers=headers, timeout=5) as client:
        while not stop.is_set():
            try:
                data = client.get("/v1/admin/breakers").json()["data"]
            except httpx.HTTPError:
                data = []
            for breaker in data:
                changed = not seen or seen[-1] != breaker["state"]
                if breaker["deployment"] == "flaky|flaky-model" and changed:
                    seen.append(breaker["state"])
            stop.wait(0.2)


def run_fault_mix(config: FaultConfig) -> FaultReport:
    reset_database(config.database_url)
    started = time.monotonic()
    with FlakyUpstream(config.mix) as upstream:
        providers = {
            "flaky": {
                "type": "openai_compatible",
                "base_url": upstream.base_url,
                "read_timeout": 1.0,
                "options": {"preset": "vllm"},
            },
            "backup": {"type": "mock"},
        }
        routes = {
            "chaotic": {
                "strategy": "ordered",
                "deployments": [
                    {"provider": "flaky", "model": "flaky-model", "rpm": config.rpm},
                    {"provider": "backup", "model": "mock"},
                ],
            }
        }
        env = {
            "RELAYQ_PROVIDERS": json.dumps(providers),
            "RELAYQ_ROUTES": json.dumps(routes),
            "RELAYQ_WORKER__PROVIDERS": json.dumps(["flaky", "backup"]),
            "RELAYQ_WORKER__CONCURRENCY": "200",
            "RELAYQ_BREAKER__FAILURE_THRESHOLD": "5",
            "RELAYQ_BREAKER__COOLDOWN_SECONDS": "2",
            "RELAYQ_KEY_PREFIX": "relayq-faults",
        }
        seen: list[str] = []
        stop = threading.Event()
        with Stack(
            database_url=config.database_url, redis_url=config.redis_url, logs=config.logs, env=env
        ) as stack:
            stack.start_api()
            stack.start_worker()
            user, admin = _keys(config.database_url)
            watcher = threading.Thread(target=_watch_breaker, args=(stack, admin, seen, stop))
            watcher.start()
            try:
                ids = _submit(stack, user, config)
                statuses = _wait(config, ids)
                # Let the breaker's cooldown pass and one probe close it.
                _probe_until_closed(stack, user, seen)
            finally:
                stop.set()
                watcher.join()
            failed_unclear, fallbacks = _inspect(stack, user, ids)
    counts: dict[str, int] = {}
    for status in statuses.values():
        counts[status] = counts.get(status, 0) + 1
    return FaultReport(
        jobs=len(ids),
        statuses=counts,
        failed_without_a_clear_error=failed_unclear,
        upstream_calls=len(upstream.arrivals),
        upstream_outcomes=dict(upstream.outcomes),
        rpm_limit=config.rpm,
        most_upstream_calls_in_a_minute=upstream.most_in_any_minute(),
        most_upstream_calls_in_ten_seconds=upstream.most_in_any(10.0),
        breaker_states_seen=seen,
        fallbacks=fallbacks,
        seconds=time.monotonic() - started,
    )


def _submit(stack: Stack, key: str, config: FaultConfig) -> list[str]:
    interval = config.submit_seconds / max(1, config.jobs)
    ids: list[str] = []
    with httpx.Client(
        base_url=stack.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as client:
        start = time.monotonic()
        for index in range(config.jobs):
            time.sleep(max(0.0, start + index * interval - time.monotonic()))
            payload = {
                "model": "chaotic",
                "messages": [{"role": "user", "content": f"fault job {index}"}],
            }
            response = client.post("/v1/jobs", json=payload)
            response.raise_for_status()
            ids.append(response.json()["id"])
    return ids


def _wait(config: FaultConfig, ids: list[str]) -> dict[str, str]:
    deadline = time.monotonic() + config.timeout_seconds
    statuses: dict[str, str] = {}
    while time.monotonic() < deadline:
        statuses = records.statuses(config.database_url, ids)
        if all(s in {"succeeded", "failed", "cancelled", "expired"} for s in statuses.values()):
            break
        time.sleep(1.0)
    return statuses


def _probe_until_closed(stack: Stack, key: str, seen: list[str]) -> None:
    """Send a job now and then until the breaker is seen closed again (at most a minute)."""
    deadline = time.monotonic() + 60
    with httpx.Client(
        base_url=stack.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as client:
        while time.monotonic() < deadline and (not seen or seen[-1] != "closed"):
            client.post(
                "/v1/jobs",
                json={"model": "chaotic", "messages": [{"role": "user", "content": "probe"}]},
            )
            time.sleep(1.0)


def _inspect(stack: Stack, key: str, ids: list[str]) -> tuple[int, int]:
    unclear = fallbacks = 0
    with httpx.Client(
        base_url=stack.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as client:
        for job_id in ids:
            job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
            providers = {a["provider"] for a in job["attempts"]}
            fallbacks += int("backup" in providers and "flaky" in providers)
            error = job.get("error") or {}
            if job["status"] == "failed" and not (error.get("code") and error.get("message")):
                unclear += 1
    return unclear, fallbacks
