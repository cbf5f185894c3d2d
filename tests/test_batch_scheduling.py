"""The batch scheduler on a stack of its own: fair shares, no starvation, exact counts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.batches import wait_for_batch
from tests.conftest import key_factory
from tests.jobs import body, submit, wait_for_status
from tests.services import running_valkey
from tests.stack import Stack, wait_until

pytestmark = pytest.mark.slow(seconds=25)  # two keys' batches through a stack of its own

WINDOW = 4


def slow_requests(prefix: str, count: int, latency_ms: int) -> list[dict[str, Any]]:
    return [
        {
            "custom_id": f"{prefix}-{i}",
            "params": {
                "model": "mock",
                "messages": [{"role": "user", "content": f"{prefix} {i}"}],
                "mock": {"latency_ms": latency_ms},
            },
        }
        for i in range(count)
    ]


def test_two_keys_share_a_provider_and_interactive_jobs_go_first(
    private_database_url: str, logs: Path
) -> None:
    make_key = key_factory(private_database_url)
    env = {"RELAYQ_BATCHES__WINDOW": str(WINDOW)}
    with (
        running_valkey() as broker_url,
        Stack(
            database_url=private_database_url,
            redis_url=broker_url,
            logs=logs,
            env=env,
            supervise=False,
        ) as stack,
    ):
        stack.start_api()
        # Two workers: both finish the batches' requests; the counts must stay exact.
        stack.start_worker()
        stack.start_worker()
        first = httpx.Client(
            base_url=stack.base_url, headers={"Authorization": f"Bearer {make_key()}"}
        )
        second = httpx.Client(
            base_url=stack.base_url, headers={"Authorization": f"Bearer {make_key()}"}
        )
        with first, second:
            big = first.post("/v1/batches", json={"requests": slow_requests("big", 60, 300)})
            assert big.status_code == 200, big.text
            big_id = big.json()["id"]
            wait_until(
                lambda: (
                    first.get(f"/v1/batches/{big_id}").json()["request_counts"]["completed"]
                    >= WINDOW
                ),
                timeout=30,
            )
            small = second.post("/v1/batches", json={"requests": slow_requests("small", 8, 300)})
            small_id = small.json()["id"]
            # An interactive job of the first key, behind its own 50-odd batch requests.
            job = submit(first, body("interactive", mock={"latency_ms": 300}))
            assert wait_for_status(first, job["id"], {"succeeded"})["status"] == "succeeded"
            assert first.get(f"/v1/batches/{big_id}").json()["status"] == "in_progress"

            small_batch = wait_for_batch(second, small_id)
            big_then = first.get(f"/v1/batches/{big_id}").json()
            # First come, first served would finish all 60 of the big batch first;
            # equal shares of the window finish the small one while the big one runs.
            assert small_batch["status"] == "completed"
            assert big_then["status"] == "in_progress"
            assert big_then["request_counts"]["completed"] <= 60 - 16

            big_batch = wait_for_batch(first, big_id)
            assert big_batch["request_counts"] == {"total": 60, "completed": 60, "failed": 0}
            assert small_batch["request_counts"] == {"total": 8, "completed": 8, "failed": 0}
            for client, batch_id, total in ((first, big_id, 60), (second, small_id, 8)):
                jobs = client.get("/v1/jobs", params={"batch_id": batch_id, "limit": 100}).json()
                assert len(jobs["data"]) == total
                for listed in jobs["data"]:
                    # Each request was called once and recorded once.
                    attempts = client.get(f"/v1/jobs/{listed['id']}").json()["attempts"]
                    assert [a["status"] for a in attempts] == ["succeeded"]
