"""Signed webhooks through the real stack, received and verified on loopback.

The shared stack retries deliveries after 0.3 s (jittered), at most three
times, and allows loopback destinations; the API that does not (as shipped)
runs in the test's process.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, event, update
from sqlalchemy.ext.asyncio import AsyncSession

from relayq.config.settings import WebhookSettings
from relayq.schemas.destinations import address_refusal
from relayq.schemas.jobs import JobStatus
from relayq.schemas.webhooks import DeliveryStatus
from relayq.store import Database, sync_url
from relayq.store.claims import claim_job
from relayq.store.deliveries import (
    DeliveryAttempt,
    DeliveryClaim,
    DeliveryOutcome,
    NotDue,
    claim_delivery,
    list_deliveries,
    record_attempt,
)
from relayq.store.endpoints import get_endpoint, put_endpoint
from relayq.store.jobs import create_job
from relayq.store.keys import create_key
from relayq.store.models import Job
from relayq.store.outcomes import Outcome, finish_job
from relayq.store.unsent import Unsent, find_unsent
from relayq.webhooks.transport import build_webhook_client, post_webhook
from tests.api_in_process import ApiEnv, ApiRunner, api_runner
from tests.conftest import KeyFactory
from tests.jobs import body, mock_job, submit, wait_for_status
from tests.stack import Stack, wait_until
from tests.webhook_receiver import Endpoint, Reply, WebhookReceiver

TERMINAL_EVENTS = ["job.succeeded", "job.failed", "job.cancelled", "job.expired"]
BATCH_EVENTS = ["batch.completed", "batch.failed", "batch.expired", "batch.cancelled"]


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as server:
        yield server


def set_endpoint(
    client: httpx.Client, endpoint: Endpoint, events: list[str] | None = None
) -> dict[str, Any]:
    """Make ``endpoint`` the key's default; it then holds the key's new secret."""
    spec: dict[str, Any] = {"url": endpoint.url}
    if events is not None:
        spec["events"] = events
    response = client.put("/v1/webhook", json=spec)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    assert answer["secret"].startswith("whsec_")
    endpoint.hold(answer["secret"])
    return answer


def deliveries(client: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/v1/jobs/{job_id}/webhook-deliveries")
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    assert page["object"] == "list"
    data: list[dict[str, Any]] = page["data"]
    return data


def settled(client: httpx.Client, job_id: str, *, count: int = 1) -> list[dict[str, Any]]:
    """The job's deliveries once ``count`` of them have ended."""
    seen: list[dict[str, Any]] = []

    def ended() -> bool:
        seen[:] = deliveries(client, job_id)
        return sum(1 for d in seen if d["status"] != "pending") >= count

    wait_until(ended, timeout=30, interval=0.1)
    return seen


def set_job_webhook(database_url: str, job_id: str, spec: dict[str, Any]) -> None:
    """Give a stored job its own webhook, as ``POST /v1/jobs`` will once intake stores it."""
    engine = create_engine(sync_url(database_url))
    with engine.begin() as connection:
        connection.execute(update(Job).where(Job.id == job_id).values(webhook=spec))
    engine.dispose()


def test_a_succeeded_job_is_delivered_signed_with_the_job_in_data(
    client: httpx.Client, receiver: WebhookReceiver
) -> None:
    endpoint = receiver.endpoint()
    answer = set_endpoint(client, endpoint)
    assert (answer["object"], answer["enabled"], answer["events"]) == (
        "webhook.endpoint",
        True,
        TERMINAL_EVENTS + BATCH_EVENTS,
    )

    job = submit(client, body("hook me"))
    [delivery] = settled(client, job["id"])

    [request] = endpoint.received
    assert request.verified
    payload = request.payload
    assert payload["type"] == "job.succeeded"
    assert payload["timestamp"].endswith("Z")
    assert payload["data"] == client.get(f"/v1/jobs/{job['id']}").json()
    assert payload["data"]["status"] == "succeeded"
    assert request.headers["content-type"] == "application/json"
    assert request.webhook_id == delivery["id"]
    assert (delivery["event"], delivery["endpoint"], delivery["status"]) == (
        "job.succeeded",
        "key",
        "succeeded",
    )
    [attempt] = delivery["attempts"]
    assert (attempt["number"], attempt["status_code"], attempt["error"]) == (1, 200, None)
    assert attempt["url"] == endpoint.url


def test_a_failed_job_is_delivered_with_its_error(
    client: httpx.Client, receiver: WebhookReceiver
) -> None:
    endpoint = receiver.endpoint()
    set_endpoint(client, endpoint)

    job = submit(client, body(model="mock-faulty-hooks", mock={"fault": "error", "status": 503}))
    settled(client, job["id"])
    failed = client.get(f"/v1/jobs/{job['id']}").json()

    [request] = endpoint.received
    assert request.payload["type"] == "job.failed"
    # provider_unavailable, or breaker_open once earlier tests' failures opened
    # this provider's breaker: either way the job's own error.
    assert failed["error"]["code"] in {"provider_unavailable", "breaker_open"}
    assert request.payload["data"]["error"] == failed["error"]


def test_only_the_chosen_events_are_delivered(
    client: httpx.Client, receiver: WebhookReceiver
) -> None:
    endpoint = receiver.endpoint()
    set_endpoint(client, endpoint, events=["job.failed"])

    succeeded = submit(client, body("fine"))
    failed = submit(client, body(model="mock-faulty-hooks", mock={"fault": "error", "status": 500}))
    wait_for_status(client, succeeded["id"], {"succeeded"})
    settled(client, failed["id"])

    # Deliveries are planned with the outcome: none was planned for the success.
    assert deliveries(client, succeeded["id"]) == []
    assert [r.payload["type"] for r in endpoint.received] == ["job.failed"]


def test_500s_are_retried_with_the_same_webhook_id(
    client: httpx.Client, receiver: WebhookReceiver
) -> None:
    endpoint = receiver.endpoint()
    set_endpoint(client, endpoint)
    endpoint.script(Reply(500), Reply(502))

    job = submit(client, body())
    [delivery] = settled(client, job["id"])

    requests = endpoint.received
    assert len(requests) == 3
    assert {r.webhook_id for r in requests} == {delivery["id"]}
    assert all(r.verified for r in requests)
    assert len({r.body for r in requests}) == 1
    assert delivery["status"] == "succeeded"
    attempts = delivery["attempts"]
    assert [(a["number"], a["status_code"]) for a in attempts] == [(1, 500), (2, 502), (3, 200)]
    assert all(a["latency_ms"] >= 0 for a in attempts)
    assert [a["created_at"] for a in attempts] == sorted(a["created_at"] for a in attempts)


def test_a_delivery_is_given_up_after_the_last_retry(
    client: httpx.Client, receiver: WebhookReceiver
) -> None:
    endpoint = receiver.endpoint()
    set_endpoint(client, endpoint)
    endpoint.script(*[Reply(500)] * 4)

    job = submit(client, body())
    [delivery] = settled(client, job["id"])

    assert delivery["status"] == "failed"
    assert delivery["reason"] == "gave up after 4 attempts"
    assert [a["status_code"] for a in delivery["attempts"]] == [500] * 4
    assert len(endpoint.received) == 4
    assert client.get("/v1/webhook").json()["enabled"] is True


def test_retry_after_is_honoured(client: httpx.Client, receiver: WebhookReceiver) -> None:
    endpoint = receiver.endpoint()
    set_endpoint(client, endpoint)
    endpoint.script(Reply(503, {"Retry-After": "2"}))

    job = submit(client, body())
    [delivery] = settled(client, job["id"])

    first, second = delivery["attempts"]
    assert (first["status_code"], second["status_code"]) == (503, 200)
    # The schedule alone would retry within 0.3 s; the receiver asked for 2.
    assert second["created_at"] - first["created_at"] >= 2.0


def test_410_disables_the_keys_endpoint(client: httpx.Client, receiver: WebhookReceiver) -> None:
    endpoint = receiver.endpoint()
    set_endpoint(client, endpoint)
    endpoint.script(Reply(410))

    first = submit(client, body())
    [delivery] = settled(client, first["id"])

    assert delivery["status"] == "failed"
    assert [a["status_code"] for a in delivery["attempts"]] == [410]
    shown = client.get("/v1/webhook").json()
    assert shown["enabled"] is False
    assert "410" in shown["disabled_reason"]
    assert shown["disabled_at"] is not None
    assert shown["secret"] is None
    second = submit(client, body())
    wait_for_status(client, second["id"], {"succeeded"})
    assert deliveries(client, second["id"]) == []
    assert len(endpoint.received) == 1
    # Setting the endpoint again enables it.
    again = client.put("/v1/webhook", json={"url": endpoint.url}).json()
    assert (again["enabled"], again["disabled_reason"], again["secret"]) == (True, None, None)


def test_during_a_rotation_either_secret_verifies_and_after_it_only_the_new_one(
    client: httpx.Client, receiver: WebhookReceiver
) -> None:
    endpoint = receiver.endpoint()
    old = set_endpoint(client, endpoint)["secret"]
    rotated = client.post("/v1/webhook/secret")
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["secret"]
    assert new.startswith("whsec_")
    assert new != old
    assert rotated.json()["previous_expires_at"] >= rotated.json()["created_at"] + 23 * 3600
    endpoint.hold(old, new)

    during = submit(client, body("during"))
    settled(client, during["id"])
    [request] = endpoint.received
    assert request.verifies(old)
    assert request.verifies(new)
    assert len(request.headers["webhook-signature"].split(" ")) == 2

    newest = client.post("/v1/webhook/secret", json={"overlap_seconds": 0}).json()["secret"]
    endpoint.hold(old, new, newest)
    after = submit(client, body("after"))
    settled(client, after["id"])
    [_, request] = endpoint.received
    assert request.verifies(newest)
    assert not request.verifies(new)
    assert not request.verifies(old)


def test_redirects_are_not_followed(client: httpx.Client, receiver: WebhookReceiver) -> None:
    endpoint = receiver.endpoint()
    elsewhere = receiver.endpoint()
    set_endpoint(client, endpoint)
    endpoint.script(Reply(307, {"Location": elsewhere.url}))

    job = submit(client, body())
    [delivery] = settled(client, job["id"])

    first, second = delivery["attempts"]
    assert first["status_code"] == 307
    assert "not followed" in first["error"]
    assert second["status_code"] == 200
    assert elsewhere.received == []


def test_a_jobs_own_webhook_is_used_instead_of_the_keys(
    client: httpx.Client, receiver: WebhookReceiver, database_url: str
) -> None:
    default = receiver.endpoint()
    secret = set_endpoint(client, default)["secret"]
    own = receiver.endpoint(secret)
    job = submit(client, body(model="mock-idle"))
    set_job_webhook(database_url, job["id"], {"url": own.url, "events": ["job.cancelled"]})

    assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
    [delivery] = settled(client, job["id"])

    assert (delivery["endpoint"], delivery["event"], delivery["url"]) == (
        "job",
        "job.cancelled",
        own.url,
    )
    [request] = own.received
    assert request.verified
    assert request.payload["data"]["webhook"] == {"url": own.url, "events": ["job.cancelled"]}
    assert request.payload["data"]["status"] == "cancelled"
    assert default.received == []


def test_410_from_a_jobs_own_webhook_only_stops_that_delivery(
    client: httpx.Client, receiver: WebhookReceiver, database_url: str
) -> None:
    default = receiver.endpoint()
    secret = set_endpoint(client, default)["secret"]
    own = receiver.endpoint(secret)
    own.script(Reply(410))
    job = submit(client, body(model="mock-idle"))
    set_job_webhook(database_url, job["id"], {"url": own.url, "events": TERMINAL_EVENTS})

    client.post(f"/v1/jobs/{job['id']}/cancel")
    [delivery] = settled(client, job["id"])

    assert (delivery["status"], delivery["reason"]) == ("failed", "the endpoint answered 410 Gone")
    assert len(own.received) == 1
    assert client.get("/v1/webhook").json()["enabled"] is True


def test_another_key_cannot_list_a_jobs_deliveries(
    client: httpx.Client, receiver: WebhookReceiver, stack: Stack, make_key: KeyFactory
) -> None:
    set_endpoint(client, receiver.endpoint())
    job = submit(client, body())
    settled(client, job["id"])

    with httpx.Client(
        base_url=stack.base_url, headers={"Authorization": f"Bearer {make_key()}"}
    ) as other:
        listed = other.get(f"/v1/jobs/{job['id']}/webhook-deliveries")
        endpoint = other.get("/v1/webhook")

    assert listed.status_code == 404
    assert listed.json()["error"]["code"] == "job_not_found"
    assert endpoint.status_code == 404
    assert endpoint.json()["error"]["code"] == "webhook_not_found"


def test_the_endpoint_can_be_read_and_deleted(
    client: httpx.Client, receiver: WebhookReceiver
) -> None:
    endpoint = receiver.endpoint()
    set_endpoint(client, endpoint, events=["job.failed", "job.failed", "job.cancelled"])

    shown = client.get("/v1/webhook").json()
    assert shown["events"] == ["job.failed", "job.cancelled"]
    assert shown["secret"] is None
    deleted = client.delete("/v1/webhook")
    assert deleted.status_code == 200
    assert deleted.json() == {
        "object": "webhook.endpoint.deleted",
        "id": shown["id"],
        "deleted": True,
    }
    assert client.get("/v1/webhook").status_code == 404
    assert client.delete("/v1/webhook").status_code == 404
    bad = client.put("/v1/webhook", json={"url": endpoint.url, "events": ["job.started"]})
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == "events[0]"


@pytest.fixture
def strict_api(database_url: str, redis_server: str, tmp_path: Path) -> ApiRunner:
    """The API in this process, refusing private destinations (as it does unless told
    otherwise), on the shared database."""
    return api_runner(
        database_url=database_url,
        redis_server=redis_server,
        tmp_path=tmp_path,
        webhooks=WebhookSettings(allow_private_destinations=False),
    )


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("http://127.0.0.1:9/hook", "webhook_destination_refused"),
        ("http://localhost:9/hook", "webhook_destination_refused"),
        ("https://10.1.2.3/hook", "webhook_destination_refused"),
        ("http://169.254.169.254/latest/meta-data", "webhook_destination_refused"),
        ("http://[::1]/hook", "webhook_destination_refused"),
        ("http://[::ffff:192.168.0.1]/hook", "webhook_destination_refused"),
        ("ftp://example.com/hook", "invalid_value"),
    ],
)
def test_private_destinations_are_refused_when_not_allowed(
    strict_api: ApiRunner, url: str, code: str
) -> None:
    async def scenario(env: ApiEnv) -> None:
        key = await env.key()
        response = await env.call(key.secret, "PUT", "/v1/webhook", json={"url": url})

        assert response.status_code == 400
        error = response.json()["error"]
        assert (error["param"], error["code"], error["type"]) == (
            "url",
            code,
            "invalid_request_error",
        )

    strict_api(scenario)


def test_a_webhook_in_the_job_body_is_checked_stored_and_used(
    client: httpx.Client, receiver: WebhookReceiver, strict_api: ApiRunner
) -> None:
    secret = client.post("/v1/webhook/secret").json()["secret"]
    own = receiver.endpoint(secret)
    job = submit(client, body(webhook={"url": own.url}))
    assert job["webhook"] == {"url": own.url, "events": TERMINAL_EVENTS}
    assert "webhook" not in job["request"]
    settled(client, job["id"])
    assert [r.payload["type"] for r in own.received] == ["job.succeeded"]

    async def scenario(env: ApiEnv) -> None:
        key = await env.key()
        refused = await env.call(
            key.secret, "POST", "/v1/jobs", json=body(model="mock", webhook={"url": own.url})
        )
        assert refused.status_code == 400
        assert refused.json()["error"]["param"] == "webhook.url"

    strict_api(scenario)


def test_address_rules() -> None:
    def refused(text: str, *, allow_private: bool = False) -> bool:
        address = ipaddress.ip_address(text)
        return address_refusal(address, allow_private=allow_private) is not None

    for text in ("127.0.0.1", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254"):
        assert refused(text)
    for text in ("100.64.0.1", "0.0.0.0", "224.0.0.1", "240.0.0.1", "::1", "fe80::1", "fc00::1"):
        assert refused(text)
    assert refused("::ffff:127.0.0.1")
    assert not refused("93.184.215.14")
    assert not refused("2606:4700::1111")
    assert not refused("127.0.0.1", allow_private=True)
    assert refused("0.0.0.0", allow_private=True)
    assert refused("ff02::1", allow_private=True)


def test_delivery_time_check_refuses_loopback_by_address_and_by_name(
    receiver: WebhookReceiver,
) -> None:
    endpoint = receiver.endpoint()
    by_name = endpoint.url.replace("127.0.0.1", "localhost")

    async def attempt(url: str, *, allow_private: bool) -> tuple[int | None, str | None]:
        client = build_webhook_client(allow_private=allow_private, max_connections=2)
        try:
            answer = await post_webhook(
                client,
                url=url,
                body=json.dumps({}).encode(),
                headers={},
                timeout_seconds=3,
                allow_private=allow_private,
            )
        finally:
            await client.aclose()
        return answer.status_code, answer.error

    for url in (endpoint.url, by_name):
        status, error = asyncio.run(attempt(url, allow_private=False))
        assert status is None
        assert error is not None
        assert error.startswith("destination refused:"), error
    assert endpoint.received == []
    # Allowed, the same request arrives (and, unsigned, is answered 401).
    assert asyncio.run(attempt(by_name, allow_private=True)) == (401, None)


async def _stored_job(session: AsyncSession, key_id: str, **extra: Any) -> Job:
    """A queued mock job of ``key_id``, stored at t=1."""
    job, _ = await create_job(session, job=mock_job(key_id, **extra), now=1.0)
    return job


def test_a_delivery_is_attempted_by_one_claim_at_a_time_and_succeeds_once(
    private_database_url: str,
) -> None:
    # A database of its own: the shared stack's reconciler would publish (and
    # so claim) this delivery, planned at made-up old times, under the test.
    async def scenario() -> None:
        database = Database(private_database_url)
        try:
            async with database.session() as session:
                await body_of_scenario(session)
        finally:
            await database.aclose()

    async def body_of_scenario(session: AsyncSession) -> None:
        key = await create_key(session, name="webhooks")
        await put_endpoint(
            session, key_id=key.id, url="http://127.0.0.1:9/", events=TERMINAL_EVENTS, now=1.0
        )
        job = await _stored_job(session, key.id)
        claim = await claim_job(session, job_id=job.id, now=2.0, lease_seconds=60)
        assert claim is not None
        outcome = Outcome(status=JobStatus.SUCCEEDED, response={"id": "x"})
        assert await finish_job(session, claim=claim, outcome=outcome, attempt=None, now=3.0)
        [unsent] = await find_unsent(session, now=3.0, grace=0, republish_after=3600, limit=10)
        assert unsent.run == 0

        first = await claim_delivery(
            session, delivery_id=unsent.delivery_id, run=0, now=4.0, lease_seconds=30
        )
        assert isinstance(first, DeliveryClaim)
        assert first.run == 1
        assert first.payload["data"]["status"] == "succeeded"
        # The same message again, or one for the new run while the lease lives: nothing.
        for run in (0, 1):
            assert (
                await claim_delivery(
                    session, delivery_id=unsent.delivery_id, run=run, now=5.0, lease_seconds=30
                )
                is None
            )
        failed = DeliveryOutcome(status=DeliveryStatus.PENDING, next_attempt_at=100.0)
        attempt = DeliveryAttempt(
            url="http://127.0.0.1:9/", status_code=500, error=None, latency_ms=1, started_at=4.0
        )
        assert await record_attempt(session, claim=first, attempt=attempt, outcome=failed, now=6)
        early = await claim_delivery(
            session, delivery_id=unsent.delivery_id, run=1, now=40.0, lease_seconds=30
        )
        assert early == NotDue(wait=60.0)

        second = await claim_delivery(
            session, delivery_id=unsent.delivery_id, run=1, now=100.0, lease_seconds=30
        )
        assert isinstance(second, DeliveryClaim)
        # Its worker died: once the lease lapses the reconciler sends the delivery again.
        [again] = await find_unsent(session, now=131.0, grace=0, republish_after=3600, limit=10)
        assert again == Unsent(delivery_id=unsent.delivery_id, run=2)
        third = await claim_delivery(
            session, delivery_id=unsent.delivery_id, run=2, now=131.0, lease_seconds=30
        )
        assert isinstance(third, DeliveryClaim)
        done = DeliveryOutcome(status=DeliveryStatus.SUCCEEDED)
        ok = DeliveryAttempt(
            url="http://127.0.0.1:9/", status_code=200, error=None, latency_ms=1, started_at=131
        )
        assert await record_attempt(session, claim=third, attempt=ok, outcome=done, now=132)
        # The dead worker's late answer, or a repeat, records its attempt but not an outcome.
        assert not await record_attempt(session, claim=second, attempt=ok, outcome=done, now=133)
        assert not await record_attempt(session, claim=third, attempt=ok, outcome=done, now=134)
        rows, attempts, _ = await list_deliveries(session, job_id=job.id, limit=10)
        [row] = rows
        assert (row.status, row.finished_at) == ("succeeded", 132.0)
        assert [a.number for a in attempts[row.id]] == [1, 3, 2, 3]
        assert await find_unsent(session, now=9999.0, grace=0, republish_after=1, limit=10) == []

    asyncio.run(scenario())


def test_an_outcome_plans_deliveries_only_where_a_webhook_can_go(
    private_database_url: str,
) -> None:
    """The outcome's own UPDATE says whether to look further: the job's webhook, the key's."""

    statements: list[str] = []

    def executed(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    async def scenario() -> None:
        database = Database(private_database_url)
        event.listen(database.engine.sync_engine, "before_cursor_execute", executed)
        try:
            async with database.session() as session:
                await planned(session)
        finally:
            await database.aclose()

    async def finished(session: AsyncSession, key_id: str, **extra: Any) -> tuple[str, ...]:
        job = await _stored_job(session, key_id, **extra)
        claim = await claim_job(session, job_id=job.id, now=2.0, lease_seconds=60)
        assert claim is not None
        outcome = Outcome(status=JobStatus.SUCCEEDED, response={"id": "x"})
        statements.clear()
        done = await finish_job(session, claim=claim, outcome=outcome, attempt=None, now=3.0)
        assert done.written
        return done.deliveries

    async def planned(session: AsyncSession) -> None:
        bare = await create_key(session, name="no endpoint")
        assert await finished(session, bare.id) == ()
        # Nowhere to deliver: the read-back of the tick's outcomes said so, and nothing
        # else was looked up.
        lookups = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
        assert len(lookups) == 1, statements
        assert lookups[0].lstrip().startswith("SELECT jobs.id, jobs.run, jobs.finished_at")
        own = {"url": "http://127.0.0.1:9/own", "events": ["job.succeeded"]}
        assert len(await finished(session, bare.id, webhook=own)) == 1

        with_endpoint = await create_key(session, name="endpoint")
        await put_endpoint(
            session,
            key_id=with_endpoint.id,
            url="http://127.0.0.1:9/",
            events=TERMINAL_EVENTS,
            now=1.0,
        )
        assert len(await finished(session, with_endpoint.id)) == 1
        endpoint = await get_endpoint(session, key_id=with_endpoint.id)
        assert endpoint is not None
        endpoint.enabled = False
        await session.commit()
        assert await finished(session, with_endpoint.id) == ()

    asyncio.run(scenario())
