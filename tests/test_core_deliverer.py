"""The webhook deliverer in-process: signed deliveries to a loopback receiver, retries
with backoff on the injected clock, 410 Gone, and a refused destination.

On real SQLite and Redis and a real Celery broker (its messages read back
from Redis). A job's outcome plans its delivery, as the executor's does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from relayq.config.settings import Settings
from relayq.schemas.jobs import JobStatus
from relayq.store.claims import claim_job
from relayq.store.deliveries import list_deliveries
from relayq.store.endpoints import ensure_secrets, get_endpoint, put_endpoint
from relayq.store.jobs import create_job
from relayq.store.models import WebhookAttempt, WebhookDelivery
from relayq.store.outcomes import Outcome, finish_job
from relayq.webhooks.delivery import Deliverer, DeliveryResult
from relayq.webhooks.publishing import WebhookEnqueuer
from relayq.webhooks.transport import build_webhook_client
from tests.in_process import PREFIX, Env, ScenarioRunner, queued_messages
from tests.jobs import mock_job
from tests.webhook_receiver import Endpoint, Reply, WebhookReceiver

SCHEDULE = [10.0, 20.0]
"""Seconds before each retry (half of it drawn at random, see JITTER)."""
JITTER = 0.5
HALF = 0.5
"""What the deliverer's random draw always gives here."""


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as server:
        yield server


@asynccontextmanager
async def deliverer(env: Env, *, allow_private: bool = True) -> AsyncIterator[Deliverer]:
    """A worker's deliverer on ``env``'s clock, with a fixed random draw."""
    settings = Settings(
        database_url=env.database_url,
        redis_url=env.redis_url,
        key_prefix=PREFIX,
        webhooks={
            "retry_schedule": SCHEDULE,
            "jitter": JITTER,
            "timeout_seconds": 5,
            "allow_private_destinations": allow_private,
        },
    )
    enqueuer = WebhookEnqueuer(settings=settings)
    client = build_webhook_client(allow_private=allow_private, max_connections=4)
    try:
        yield Deliverer(
            database=env.database,
            client=client,
            settings=settings.webhooks,
            enqueuer=enqueuer,
            clock=env.clock,
            rng=lambda: HALF,
        )
    finally:
        await client.aclose()
        enqueuer.close()


async def ended_job_with_delivery(env: Env, endpoint: Endpoint) -> tuple[str, str]:
    """The key's endpoint set to ``endpoint`` (which holds its secrets) and a job ended:
    (the job's id, its planned delivery's id)."""
    now = env.clock()
    async with env.database.session() as session:
        await put_endpoint(
            session, key_id=env.key_id, url=endpoint.url, events=["job.succeeded"], now=now
        )
        endpoint.hold(*await ensure_secrets(session, key_id=env.key_id, now=now))
        job, _ = await create_job(session, job=mock_job(env.key_id), now=now)
        claim = await claim_job(session, job_id=job.id, now=now, lease_seconds=60)
        assert claim is not None
        outcome = Outcome(status=JobStatus.SUCCEEDED, response={"id": "chatcmpl-1"})
        finished = await finish_job(session, claim=claim, outcome=outcome, attempt=None, now=now)
    [delivery_id] = finished.deliveries
    return job.id, delivery_id


async def delivery_of(env: Env, job_id: str) -> tuple[WebhookDelivery, list[WebhookAttempt]]:
    async with env.database.session() as session:
        [row], attempts, _ = await list_deliveries(session, job_id=job_id, limit=10)
    return row, attempts[row.id]


def messages_for(env: Env, delivery_id: str) -> list[Any]:
    return [m for m in queued_messages(env.redis_url, "webhooks") if m[1] == [delivery_id]]


def test_a_delivery_is_signed_sent_and_recorded(
    scenario: ScenarioRunner, receiver: WebhookReceiver
) -> None:
    endpoint = receiver.endpoint()

    async def body(env: Env) -> None:
        job_id, delivery_id = await ended_job_with_delivery(env, endpoint)
        async with deliverer(env) as under_test:
            assert await under_test.deliver(delivery_id, 0) is DeliveryResult.SUCCEEDED
            # The same message again (a redelivery) makes no second attempt.
            assert await under_test.deliver(delivery_id, 0) is DeliveryResult.SKIPPED
        [received] = endpoint.received
        assert received.verified
        assert received.webhook_id == delivery_id
        assert received.headers["webhook-timestamp"] == str(int(env.clock()))
        assert received.payload["type"] == "job.succeeded"
        assert received.payload["data"]["id"] == job_id
        row, attempts = await delivery_of(env, job_id)
        assert (row.status, row.finished_at) == ("succeeded", env.clock())
        assert [(a.number, a.status_code, a.error) for a in attempts] == [(1, 200, None)]

    scenario(body)


def test_a_500_is_retried_after_its_backoff_with_the_same_webhook_id(
    scenario: ScenarioRunner, receiver: WebhookReceiver
) -> None:
    endpoint = receiver.endpoint()
    endpoint.script(Reply(500))
    wait = SCHEDULE[0] * (1 - JITTER * HALF)

    async def body(env: Env) -> None:
        job_id, delivery_id = await ended_job_with_delivery(env, endpoint)
        async with deliverer(env) as under_test:
            assert await under_test.deliver(delivery_id, 0) is DeliveryResult.RETRYING
            row, _ = await delivery_of(env, job_id)
            assert (row.status, row.run) == ("pending", 1)
            assert row.next_attempt_at == env.clock() + wait
            assert len(messages_for(env, delivery_id)) == 1  # the retry's, with its countdown
            # Its message came early (a hop of a longer wait): put back, no attempt.
            env.clock.advance(wait / 2)
            assert await under_test.deliver(delivery_id, 1) is DeliveryResult.DEFERRED
            assert len(endpoint.received) == 1
            env.clock.advance(wait / 2)
            assert await under_test.deliver(delivery_id, 1) is DeliveryResult.SUCCEEDED
        first, second = endpoint.received
        assert first.webhook_id == second.webhook_id == delivery_id
        assert second.verified
        row, attempts = await delivery_of(env, job_id)
        assert row.status == "succeeded"
        assert [(a.number, a.status_code) for a in attempts] == [(1, 500), (2, 200)]

    scenario(body)


def test_the_last_failure_gives_up_and_a_410_disables_the_endpoint(
    scenario: ScenarioRunner, receiver: WebhookReceiver
) -> None:
    failing = receiver.endpoint()
    failing.script(Reply(503), Reply(503), Reply(503))
    gone = receiver.endpoint()
    gone.script(Reply(410))

    async def body(env: Env) -> None:
        job_id, delivery_id = await ended_job_with_delivery(env, failing)
        async with deliverer(env) as under_test:
            for run in range(len(SCHEDULE)):
                assert await under_test.deliver(delivery_id, run) is DeliveryResult.RETRYING
                env.clock.advance(max(SCHEDULE))
            assert await under_test.deliver(delivery_id, 2) is DeliveryResult.FAILED
            row, attempts = await delivery_of(env, job_id)
            assert (row.status, row.reason) == ("failed", "gave up after 3 attempts")
            assert len(attempts) == 3

            job_id, delivery_id = await ended_job_with_delivery(env, gone)
            assert await under_test.deliver(delivery_id, 0) is DeliveryResult.FAILED
        async with env.database.session() as session:
            endpoint = await get_endpoint(session, key_id=env.key_id)
        assert endpoint is not None
        assert not endpoint.enabled
        assert endpoint.disabled_reason is not None
        assert "410 Gone" in endpoint.disabled_reason

    scenario(body)


def test_a_refused_destination_is_never_called_and_is_recorded_as_such(
    scenario: ScenarioRunner, receiver: WebhookReceiver
) -> None:
    """Loopback is private: without ``allow_private_destinations`` nothing is sent there."""
    endpoint = receiver.endpoint()

    async def body(env: Env) -> None:
        job_id, delivery_id = await ended_job_with_delivery(env, endpoint)
        async with deliverer(env, allow_private=False) as under_test:
            result = await under_test.deliver(delivery_id, 0)
        assert endpoint.received == []
        row, attempts = await delivery_of(env, job_id)
        [attempt] = attempts
        assert attempt.status_code is None
        assert attempt.error is not None
        assert attempt.error.startswith("destination refused:")
        assert result is DeliveryResult.RETRYING
        assert row.status == "pending"

    scenario(body)


def test_a_receivers_retry_after_is_a_floor_under_the_backoff(
    scenario: ScenarioRunner, receiver: WebhookReceiver
) -> None:
    endpoint = receiver.endpoint()
    endpoint.script(Reply(503, {"Retry-After": "30"}))

    async def body(env: Env) -> None:
        job_id, delivery_id = await ended_job_with_delivery(env, endpoint)
        async with deliverer(env) as under_test:
            assert await under_test.deliver(delivery_id, 0) is DeliveryResult.RETRYING
            row, _ = await delivery_of(env, job_id)
            # The schedule alone would retry in 7.5 s; the receiver asked for 30.
            assert row.next_attempt_at == env.clock() + 30
            env.clock.advance(29)
            assert await under_test.deliver(delivery_id, 1) is DeliveryResult.DEFERRED
            env.clock.advance(1)
            assert await under_test.deliver(delivery_id, 1) is DeliveryResult.SUCCEEDED
        assert [r.verified for r in endpoint.received] == [True, True]

    scenario(body)
