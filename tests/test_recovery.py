"""Nothing is lost: a broker that was down, and a worker killed mid-call."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from relayq.config.settings import Settings, WorkerSettings
from relayq.queueing.broker import Enqueuer
from relayq.recovery.handback import hand_back
from relayq.store import Database
from relayq.store.deliveries import add_delivery
from relayq.store.keys import create_key
from relayq.store.unsent import Unsent, find_unsent, mark_deliveries_enqueued
from relayq.webhooks.publishing import WebhookEnqueuer
from tests.conftest import key_factory
from tests.jobs import body, submit, wait_for_status
from tests.services import free_port, run, running_valkey
from tests.stack import Stack, wait_until

pytestmark = pytest.mark.slow(seconds=30)  # workers and brokers killed and restarted


@pytest.mark.usefixtures("sqlite_only")  # its subject is the broker and Redis
def test_jobs_accepted_while_the_broker_is_down_run_once_it_returns(
    private_database_url: str, logs: Path
) -> None:
    make_key = key_factory(private_database_url)
    port = free_port()
    with running_valkey(port) as broker_url:
        stack = Stack(database_url=private_database_url, redis_url=broker_url, logs=logs)
        stack.start_api()
        stack.start_worker()
    # The broker is gone; the API still takes jobs and stores them.
    try:
        with httpx.Client(
            base_url=stack.base_url, headers={"Authorization": f"Bearer {make_key()}"}
        ) as client:
            jobs = [submit(client, body(f"while down {i}")) for i in range(3)]
            time.sleep(1.5)
            for job in jobs:
                assert client.get(f"/v1/jobs/{job['id']}").json()["status"] == "queued"
            with running_valkey(port):
                for job in jobs:
                    finished = wait_for_status(
                        client, job["id"], {"succeeded", "failed"}, timeout=60
                    )
                    assert finished["status"] == "succeeded"
                    assert len(finished["attempts"]) == 1
    finally:
        stack.stop()


@pytest.mark.parametrize("redelivery_seconds", [4])
def test_a_job_whose_worker_was_killed_mid_call_finishes_exactly_once(
    private_database_url: str, logs: Path, redelivery_seconds: int
) -> None:
    make_key = key_factory(private_database_url)
    with (
        running_valkey() as broker_url,
        Stack(
            database_url=private_database_url,
            redis_url=broker_url,
            logs=logs,
            # Let the broker also redeliver the dead worker's unacked message during
            # the test, so the redelivery is shown to be harmless too.
            env={"RELAYQ_WORKER__VISIBILITY_TIMEOUT": str(redelivery_seconds)},
        ) as stack,
    ):
        stack.start_api()
        doomed = stack.start_worker()
        with httpx.Client(
            base_url=stack.base_url, headers={"Authorization": f"Bearer {make_key()}"}
        ) as client:
            # A call long enough that the kill surely cuts it, however late a loaded
            # machine lets this test see the job running (2.5 s once was not).
            job = submit(client, body("survive", mock={"latency_ms": 6000}))
            wait_for_status(client, job["id"], {"running"})
            stack.kill_worker(doomed)
            stack.start_worker()
            finished = wait_for_status(client, job["id"], {"succeeded", "failed"}, timeout=60)
            time.sleep(redelivery_seconds + 3)
            final = client.get(f"/v1/jobs/{job['id']}").json()

    assert finished["status"] == "succeeded"
    assert final["status"] == "succeeded"
    assert final["finished_at"] == finished["finished_at"]
    assert final["response"] == finished["response"]
    # The call the kill cut is recorded too (it was not, before): interrupted, then the one
    # that succeeded.
    assert [a["status"] for a in final["attempts"]] == ["interrupted", "succeeded"]
    assert final["attempts"][0]["error"]["code"] == "interrupted"


SHIPPED = WorkerSettings()
SHIPPED_RECOVERY = {
    "RELAYQ_WORKER__LEASE_SECONDS": str(SHIPPED.lease_seconds),
    "RELAYQ_WORKER__RECONCILE_INTERVAL": str(SHIPPED.reconcile_interval),
    "RELAYQ_WORKER__ENQUEUE_GRACE_SECONDS": str(SHIPPED.enqueue_grace_seconds),
    "RELAYQ_WORKER__VISIBILITY_TIMEOUT": str(SHIPPED.visibility_timeout),
}
"""The shipped recovery settings, not the test stack's quick ones."""


def _children(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in children]


def _six_jobs_two_running(client: httpx.Client, payload: dict[str, Any]) -> list[dict[str, Any]]:
    """Six jobs on a worker with two slots: two running, four taken and waiting."""
    with ThreadPoolExecutor(6) as pool:
        jobs = list(pool.map(lambda _: submit(client, payload), range(6)))

    def two_running() -> bool:
        states = [client.get(f"/v1/jobs/{j['id']}").json()["status"] for j in jobs]
        return states.count("running") == 2

    wait_until(two_running, timeout=10)
    return jobs


def _assert_two_cut_runs_then_all_succeeded(finished: list[dict[str, Any]]) -> None:
    assert [job["status"] for job in finished] == ["succeeded"] * 6
    cut = [job for job in finished if len(job["attempts"]) > 1]
    assert len(cut) == 2
    for job in cut:
        assert [a["status"] for a in job["attempts"]] == ["interrupted", "succeeded"]


def test_a_supervised_workers_jobs_run_again_within_seconds_of_its_death(
    private_database_url: str, logs: Path
) -> None:
    """SIGKILL to a supervised worker's Celery process, on the shipped lease (60 s) and
    visibility timeout (300 s): its supervisor hands back the jobs it ran (each cut run an
    ``interrupted`` attempt) and those it had taken but not begun, so every job succeeds
    seconds after the kill, not a lease or a redelivery later. The bound is half the
    shipped lease: only the hand-back can meet it, on a loaded machine too."""
    make_key = key_factory(private_database_url)
    with (
        running_valkey() as broker_url,
        Stack(
            database_url=private_database_url,
            redis_url=broker_url,
            logs=logs,
            env={
                # Two in flight: the rest of what it takes waits, taken but not claimed.
                "RELAYQ_WORKER__CONCURRENCY": "2",
                **SHIPPED_RECOVERY,
            },
        ) as stack,
    ):
        stack.start_api()
        supervisor = stack.start_worker()
        headers = {"Authorization": f"Bearer {make_key()}"}
        with httpx.Client(base_url=stack.base_url, headers=headers, timeout=10) as client:
            jobs = _six_jobs_two_running(client, body("handed back", mock={"latency_ms": 1000}))
            [celery] = _children(supervisor.pid)
            os.kill(celery, signal.SIGKILL)
            killed = time.time()
            within = SHIPPED.lease_seconds / 2
            finished = [
                wait_for_status(client, job["id"], {"succeeded", "failed"}, timeout=within)
                for job in jobs
            ]

    assert max(job["finished_at"] for job in finished) - killed < within
    _assert_two_cut_runs_then_all_succeeded(finished)


def test_a_lost_machines_jobs_are_handed_back_by_another_worker_within_a_lease(
    private_database_url: str, logs: Path
) -> None:
    """A worker and its supervisor SIGKILLed together (a machine lost whole: nobody
    learns of the death at once), on the shipped lease (60 s), visibility timeout
    (300 s) and heartbeat (5 s). Another worker takes it for dead three beats after
    its last and hands back the jobs it ran and those it had taken but not begun,
    so every job succeeds within one lease of the kill; before, the taken ones
    waited for the broker's redelivery, 300 s."""
    make_key = key_factory(private_database_url)
    with (
        running_valkey() as broker_url,
        Stack(
            database_url=private_database_url,
            redis_url=broker_url,
            logs=logs,
            env={"RELAYQ_WORKER__CONCURRENCY": "2", **SHIPPED_RECOVERY},
        ) as stack,
    ):
        stack.start_api()
        doomed = stack.start_worker()
        headers = {"Authorization": f"Bearer {make_key()}"}
        with httpx.Client(base_url=stack.base_url, headers=headers, timeout=10) as client:
            jobs = _six_jobs_two_running(client, body("machine lost", mock={"latency_ms": 3000}))
            stack.kill_worker(doomed)
            killed = time.time()
            stack.start_worker()
            finished = [
                wait_for_status(client, job["id"], {"succeeded", "failed"}, timeout=70)
                for job in jobs
            ]
        instances = redis.Redis.from_url(broker_url).hkeys(f"{Settings().key_prefix}:workers")

    assert max(job["finished_at"] for job in finished) - killed < SHIPPED.lease_seconds
    _assert_two_cut_runs_then_all_succeeded(finished)
    assert len(instances) == 1  # the dead one left the hash of workers; the live one is in it


@contextmanager
def _api_on_a_broker_of_its_own(
    database_url: str, logs: Path
) -> Iterator[tuple[Stack, httpx.Client, Settings]]:
    """An API (no worker yet) on the shipped recovery settings and an embedded Valkey of
    its own, whose lists the test reads and rewrites; a client with a key; the settings
    a supervisor's hand-back would use."""
    make_key = key_factory(database_url)
    with (
        running_valkey() as broker_url,
        Stack(
            database_url=database_url, redis_url=broker_url, logs=logs, env=SHIPPED_RECOVERY
        ) as stack,
    ):
        stack.start_api()
        headers = {"Authorization": f"Bearer {make_key()}"}
        with httpx.Client(base_url=stack.base_url, headers=headers, timeout=10) as client:
            yield stack, client, Settings(database_url=database_url, redis_url=broker_url)


def _deliver_to_a_consumer_that_dies(broker_url: str, queue: str, *, drop: bool = False) -> int:
    """Do what kombu's Redis transport does when it delivers: move each message of
    ``queue`` to the ``unacked`` hash, its delivery time to ``unacked_index``. Nobody
    acks them: their consumer died before it recorded them as taken. (``drop``: throw
    the messages away instead.)"""
    client = redis.Redis.from_url(broker_url)
    moved = 0
    try:
        for key in client.scan_iter(match=f"{queue}*", _type="list"):
            while (raw := client.rpop(key)) is not None:
                assert isinstance(raw, bytes)
                if drop:
                    continue
                tag = uuid.uuid4().hex
                delivered = json.dumps([json.loads(raw), "", queue])
                client.hset("unacked", tag, delivered)
                client.zadd("unacked_index", {tag: time.time()})
                moved += 1
    finally:
        client.close()
    return moved


def test_jobs_a_dead_worker_took_before_it_recorded_them_are_handed_back(
    private_database_url: str, logs: Path
) -> None:
    """A worker process killed a moment after its broker delivered messages, before it
    wrote them to its record of taken jobs: its supervisor finds them among the
    messages delivered since the process started and never acknowledged, and sends
    their queued jobs again, so they run in seconds, not after the visibility timeout
    (300 s shipped; the chaos runs saw such jobs wait it out)."""
    born = time.time()
    with _api_on_a_broker_of_its_own(private_database_url, logs) as (stack, client, settings):
        broker_url = settings.redis_url
        jobs = [submit(client, body(f"taken {n}")) for n in range(3)]
        queue = settings.queue_for("mock")
        # What the dead consumer took: the first job's run-job task, and an
        # envelope carrying the other two (their own tasks are dropped).
        _deliver_to_a_consumer_that_dies(broker_url, queue, drop=True)
        enqueuer = Enqueuer(settings=settings)
        enqueuer.send(job_id=jobs[0]["id"], provider="mock", priority=jobs[0]["priority"])
        assert _deliver_to_a_consumer_that_dies(broker_url, queue) == 1
        enqueuer.send_many([(job["id"], "mock", job["priority"]) for job in jobs[1:]])
        enqueuer.close()
        assert _deliver_to_a_consumer_that_dies(broker_url, queue) == 1

        sent = hand_back(settings, "a-worker-that-died", since=born)

        assert sent == 3
        stack.start_worker()
        finished = [
            wait_for_status(client, job["id"], {"succeeded", "failed"}, timeout=15) for job in jobs
        ]
    assert [job["status"] for job in finished] == ["succeeded"] * 3


async def _confirmed_deliveries(database_url: str, count: int) -> list[str]:
    """``count`` pending deliveries, due now, whose messages the broker took (marked)."""
    database = Database(database_url)
    try:
        async with database.session() as session:
            key = await create_key(session, name="hooks")
            now = time.time()
            ids = [
                add_delivery(
                    session,
                    key_id=key.id,
                    event="job.succeeded",
                    url="http://127.0.0.1:9/hook",
                    endpoint_id=None,
                    payload={"n": n},
                    now=now,
                )
                for n in range(count)
            ]
            await session.commit()
            sent = [Unsent(delivery_id=d, run=0) for d in ids]
            await mark_deliveries_enqueued(session, sent=sent, now=now)
        return ids
    finally:
        await database.aclose()


async def _sent_by_the_reconciler(database_url: str) -> set[str]:
    """The deliveries the reconciler's next pass publishes (on the shipped settings)."""
    database = Database(database_url)
    try:
        async with database.session() as session:
            unsent = await find_unsent(
                session,
                now=time.time() + SHIPPED.enqueue_grace_seconds,
                grace=SHIPPED.enqueue_grace_seconds,
                republish_after=SHIPPED.visibility_timeout,
                limit=100,
            )
        return {u.delivery_id for u in unsent}
    finally:
        await database.aclose()


def test_webhook_deliveries_a_dead_worker_took_before_it_recorded_them_are_sent_again(
    private_database_url: str,
) -> None:
    """A worker records a webhook delivery as taken beside its attempt, not before it: one
    killed a moment after its broker delivered it the message (or took it off the list)
    left no record, and the delivery, its message confirmed, waited for the broker's
    redelivery (300 s) while its job had long succeeded (the chaos kill run: a job's
    ``job.succeeded`` webhook never came). The hand-back voids their messages, so the
    reconciler sends them at its next pass; one whose message waits in the list is left."""
    born = time.time()
    lost, delivered, waiting = run(_confirmed_deliveries(private_database_url, 3))
    with running_valkey() as broker_url:
        settings = Settings(database_url=private_database_url, redis_url=broker_url)
        queue = settings.webhooks.queue
        enqueuer = WebhookEnqueuer(settings=settings)
        try:
            enqueuer.send_delivery(delivery_id=lost, run=0)
            _deliver_to_a_consumer_that_dies(broker_url, queue, drop=True)
            enqueuer.send_delivery(delivery_id=delivered, run=0)
            assert _deliver_to_a_consumer_that_dies(broker_url, queue) == 1
            enqueuer.send_delivery(delivery_id=waiting, run=0)
        finally:
            enqueuer.close()
        assert run(_sent_by_the_reconciler(private_database_url)) == set()

        hand_back(settings, "a-worker-that-died", since=born)

        assert run(_sent_by_the_reconciler(private_database_url)) == {lost, delivered}
        assert _messages_of(broker_url, queue) == (1, 1)


def _messages_of(broker_url: str, queue: str) -> tuple[int, int]:
    """(messages waiting in ``queue``'s lists, messages delivered and not acknowledged)."""
    client = redis.Redis.from_url(broker_url)
    try:
        waiting = sum(
            int(client.llen(key)) for key in client.scan_iter(match=f"{queue}*", _type="list")
        )
        return waiting, int(client.hlen("unacked"))
    finally:
        client.close()


def test_a_message_a_dead_worker_took_off_the_list_before_recording_it_is_sent_again(
    private_database_url: str, logs: Path
) -> None:
    """Kombu takes a message off its list (BRPOP), then records its delivery in a
    second round trip: a worker killed between the two takes the message with it,
    and its job stays queued with nothing in the broker to run it (the reconciler
    would send it again minutes later). The hand-back finds such a job and sends it
    again at once; a job whose message waits in the list, or is delivered to a live
    worker, gets no second one."""
    with _api_on_a_broker_of_its_own(private_database_url, logs) as (stack, client, settings):
        broker_url = settings.redis_url
        queue = settings.queue_for("mock")
        jobs = []
        for fate in ("lost", "delivered", "waiting"):
            jobs.append(submit(client, body(fate)))
            wait_until(lambda: _messages_of(broker_url, queue)[0] == 1, timeout=10)
            if fate == "lost":  # taken off the list, never recorded as delivered
                _deliver_to_a_consumer_that_dies(broker_url, queue, drop=True)
            elif fate == "delivered":  # a live worker holds it
                assert _deliver_to_a_consumer_that_dies(broker_url, queue) == 1
        assert _messages_of(broker_url, queue) == (1, 1)

        # No process start given: only what it held, and what nobody holds, goes again.
        sent = hand_back(settings, "a-worker-that-died")

        assert sent == 1
        assert _messages_of(broker_url, queue) == (2, 1)
        stack.start_worker()
        lost = wait_for_status(client, jobs[0]["id"], {"succeeded", "failed"}, timeout=15)
        waiting = wait_for_status(client, jobs[2]["id"], {"succeeded", "failed"}, timeout=15)
    assert lost["status"] == "succeeded"
    assert waiting["status"] == "succeeded"


@pytest.mark.usefixtures("sqlite_only")  # its subject is the broker and Redis
def test_sync_calls_whose_worker_died_are_answered_by_its_successor(
    private_database_url: str, logs: Path
) -> None:
    """Sync chat calls on the sync lane, on the shipped recovery settings: SIGKILL to the
    worker process running two of them. Its supervisor hands back what it read from the
    lane, its restarted process runs them, and every caller, still waiting, gets its
    answer; each call is one job, recorded once, the cut runs as ``interrupted``."""
    make_key = key_factory(private_database_url)
    with (
        running_valkey() as broker_url,
        Stack(
            database_url=private_database_url,
            redis_url=broker_url,
            logs=logs,
            env={"RELAYQ_WORKER__CONCURRENCY": "2", **SHIPPED_RECOVERY},
        ) as stack,
    ):
        stack.start_api()
        supervisor = stack.start_worker()
        headers = {"Authorization": f"Bearer {make_key()}"}
        with httpx.Client(base_url=stack.base_url, headers=headers, timeout=30) as client:
            payload = {
                "model": "mock",
                "messages": [{"role": "user", "content": "still there?"}],
                "mock": {"latency_ms": 1500},
            }

            def call(_: int) -> httpx.Response:
                return client.post("/v1/chat/completions", json=payload)

            with ThreadPoolExecutor(4) as pool:
                calls = [pool.submit(call, n) for n in range(4)]

                def two_running() -> bool:
                    listed = client.get("/v1/jobs", params={"status": "running"}).json()
                    return len(listed["data"]) == 2

                wait_until(two_running, timeout=10)
                [celery] = _children(supervisor.pid)
                os.kill(celery, signal.SIGKILL)
                answers = [future.result(timeout=30) for future in calls]
            job_ids = [answer.headers["x-relayq-job-id"] for answer in answers]
            # A sync call's outcome is written in its worker's tick after the answer.
            jobs = [
                wait_for_status(client, job_id, {"succeeded", "failed"}, timeout=10)
                for job_id in job_ids
            ]

    assert [answer.status_code for answer in answers] == [200] * 4
    assert all(answer.json()["object"] == "chat.completion" for answer in answers)
    assert len(set(job_ids)) == 4
    assert [job["status"] for job in jobs] == ["succeeded"] * 4
    attempts = sorted([a["status"] for a in job["attempts"]] for job in jobs)
    assert attempts == [
        ["interrupted", "succeeded"],
        ["interrupted", "succeeded"],
        ["succeeded"],
        ["succeeded"],
    ]


@pytest.mark.usefixtures("sqlite_only")  # its subject is the broker and Redis
def test_jobs_running_through_a_redis_restart_end_within_seconds(
    private_database_url: str, logs: Path
) -> None:
    """Redis restarts (empty) under running jobs, on the shipped lease (60 s): whether
    Celery rides out the reconnect or exits and its supervisor hands its jobs back, every
    job ends, once, well within a lease of Redis coming back."""
    make_key = key_factory(private_database_url)
    port = free_port()
    with running_valkey(port) as broker_url:
        stack = Stack(
            database_url=private_database_url,
            redis_url=broker_url,
            logs=logs,
            env=SHIPPED_RECOVERY,
        )
        stack.start_api()
        stack.start_worker()
        client = httpx.Client(
            base_url=stack.base_url, headers={"Authorization": f"Bearer {make_key()}"}
        )
        jobs = [submit(client, body(f"restart {i}", mock={"latency_ms": 2000})) for i in range(6)]

        def all_running() -> bool:
            states = [client.get(f"/v1/jobs/{j['id']}").json()["status"] for j in jobs]
            return states == ["running"] * len(jobs)

        wait_until(all_running, timeout=10)
    try:
        time.sleep(1)
        with running_valkey(port):
            back = time.time()
            finished = [
                wait_for_status(client, job["id"], {"succeeded", "failed"}, timeout=30)
                for job in jobs
            ]
    finally:
        client.close()
        stack.stop()

    assert [job["status"] for job in finished] == ["succeeded"] * len(jobs)
    assert max(job["finished_at"] for job in finished) - back < 20
    for job in finished:
        assert [a["status"] for a in job["attempts"]].count("succeeded") == 1
