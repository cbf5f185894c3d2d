"""Nothing is lost: a broker that was down, and a worker killed mid-call."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import key_factory
from tests.jobs import body, submit, wait_for_status
from tests.services import free_port, running_valkey
from tests.stack import Stack


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
            job = submit(client, body("survive", mock={"latency_ms": 2500}))
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
    assert [a["status"] for a in final["attempts"]] == ["succeeded"]
