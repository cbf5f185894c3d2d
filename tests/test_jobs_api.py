"""Submitting, polling, listing and cancelling jobs through the real stack."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.conftest import KeyFactory
from tests.jobs import body, submit, wait_for_status
from tests.stack import Stack


def test_job_runs_to_success_with_text_usage_and_one_attempt(client: httpx.Client) -> None:
    response = client.post(
        "/v1/jobs", json=body("Tell me a story", priority=7, metadata={"run": "a1"})
    )

    assert response.status_code == 202
    job = response.json()
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] == "queued"
    assert job["object"] == "job"
    assert (job["model"], job["provider"], job["priority"]) == ("mock", "mock", 7)
    assert job["metadata"] == {"run": "a1"}
    assert "priority" not in job["request"]
    finished = wait_for_status(client, job["id"], {"succeeded", "failed"})
    assert finished["status"] == "succeeded", finished
    text = finished["response"]["choices"][0]["message"]["content"]
    assert len(text.split()) == 16
    assert finished["usage"]["completion_tokens"] == 16
    assert finished["usage"]["total_tokens"] == finished["usage"]["prompt_tokens"] + 16
    assert finished["started_at"] >= finished["created_at"]
    assert finished["finished_at"] >= finished["started_at"]
    [attempt] = finished["attempts"]
    assert (attempt["provider"], attempt["status"], attempt["error"]) == ("mock", "succeeded", None)


def test_provider_failure_fails_the_job_with_the_error_and_attempt(client: httpx.Client) -> None:
    job = submit(client, body(model="mock-faulty", mock={"fault": "invalid_request"}))

    finished = wait_for_status(client, job["id"], {"succeeded", "failed"})

    assert finished["status"] == "failed"
    assert finished["error"]["code"] == "invalid_request"
    assert finished["error"]["status_code"] == 400
    assert finished["response"] is None
    # A client error is not retried.
    [attempt] = finished["attempts"]
    assert attempt["status"] == "failed"
    assert attempt["error"]["code"] == "invalid_request"


def test_same_idempotency_key_and_body_returns_the_same_job(client: httpx.Client) -> None:
    first = client.post("/v1/jobs", json=body("once"), headers={"Idempotency-Key": "k-1"})
    again = client.post("/v1/jobs", json=body("once"), headers={"Idempotency-Key": "k-1"})

    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    listed = client.get("/v1/jobs").json()["data"]
    assert [job["id"] for job in listed] == [first.json()["id"]]


def test_same_idempotency_key_with_another_body_is_a_conflict(client: httpx.Client) -> None:
    first = submit(client, body("one"), **{"Idempotency-Key": "k-2"})

    response = client.post("/v1/jobs", json=body("two"), headers={"Idempotency-Key": "k-2"})

    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "idempotency_key_reused"
    assert first["id"] in error["message"]


def test_idempotency_keys_are_per_api_key(
    client: httpx.Client, stack: Stack, make_key: KeyFactory
) -> None:
    mine = submit(client, body("same"), **{"Idempotency-Key": "shared"})
    with httpx.Client(
        base_url=stack.base_url, headers={"Authorization": f"Bearer {make_key()}"}
    ) as other:
        theirs = submit(other, body("same"), **{"Idempotency-Key": "shared"})

    assert theirs["id"] != mine["id"]


def test_a_key_never_sees_another_keys_jobs(
    client: httpx.Client, stack: Stack, make_key: KeyFactory
) -> None:
    job = submit(client, body("private"))
    with httpx.Client(
        base_url=stack.base_url, headers={"Authorization": f"Bearer {make_key()}"}
    ) as other:
        fetched = other.get(f"/v1/jobs/{job['id']}")
        cancelled = other.post(f"/v1/jobs/{job['id']}/cancel")
        listed = other.get("/v1/jobs")

    assert fetched.status_code == 404
    assert fetched.json()["error"]["code"] == "job_not_found"
    assert "private" not in fetched.text
    assert cancelled.status_code == 404
    assert listed.json()["data"] == []
    assert client.get(f"/v1/jobs/{job['id']}").status_code == 200


def test_list_pages_newest_first_and_filters(client: httpx.Client) -> None:
    ids = [submit(client, body(f"job {i}"))["id"] for i in range(5)]
    idle = submit(client, body("never runs", model="mock-idle"))
    for job_id in ids:
        wait_for_status(client, job_id, {"succeeded"})

    pages: list[str] = []
    after = None
    while True:
        params: dict[str, str | int] = {"limit": 2, "model": "mock"}
        if after:
            params["after"] = after
        page = client.get("/v1/jobs", params=params).json()
        assert page["object"] == "list"
        pages.extend(job["id"] for job in page["data"])
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert pages == list(reversed(ids))
    queued = client.get("/v1/jobs", params={"status": "queued"}).json()["data"]
    assert [job["id"] for job in queued] == [idle["id"]]
    succeeded = client.get("/v1/jobs", params={"status": "succeeded", "limit": 100}).json()
    assert {job["id"] for job in succeeded["data"]} == set(ids)


def test_cancel_a_queued_job(client: httpx.Client) -> None:
    job = submit(client, body(model="mock-idle"))

    response = client.post(f"/v1/jobs/{job['id']}/cancel")

    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert response.json()["finished_at"] is not None
    # As GET answers it: its attempts (none here), not null.
    assert response.json()["attempts"] == []
    again = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert again.status_code == 200
    assert again.json()["status"] == "cancelled"


def test_cancel_a_running_job_stops_its_call(client: httpx.Client) -> None:
    job = submit(client, body(mock={"latency_ms": 20_000}))
    wait_for_status(client, job["id"], {"running"})

    response = client.post(f"/v1/jobs/{job['id']}/cancel")

    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"

    def attempt_recorded() -> bool:
        return bool(client.get(f"/v1/jobs/{job['id']}").json()["attempts"])

    from tests.stack import wait_until

    wait_until(attempt_recorded, timeout=10)
    final = client.get(f"/v1/jobs/{job['id']}").json()
    assert final["status"] == "cancelled"
    assert final["response"] is None
    assert [a["status"] for a in final["attempts"]] == ["cancelled"]
    # The call ran until the cancel stopped it: its time is recorded, not 0.
    assert final["attempts"][0]["latency_ms"] > 0


def test_cancel_a_finished_job_is_a_conflict(client: httpx.Client) -> None:
    job = submit(client, body())
    wait_for_status(client, job["id"], {"succeeded"})

    response = client.post(f"/v1/jobs/{job['id']}/cancel")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "job_not_cancellable"
    assert client.get(f"/v1/jobs/{job['id']}").json()["status"] == "succeeded"


def test_one_worker_process_runs_many_jobs_at_once(client: httpx.Client) -> None:
    """Concurrency, shown by overlap rather than by timing: the stack's worker
    has 50 slots, and jobs that each wait 3 s upstream run side by side. They
    are submitted eight at a time, so a busy machine's slow intake cannot
    spread them out past their overlap."""
    with ThreadPoolExecutor(8) as pool:
        jobs = list(
            pool.map(
                lambda i: submit(client, body(f"overlap {i}", mock={"latency_ms": 3000})),
                range(60),
            )
        )
    finished = [wait_for_status(client, job["id"], {"succeeded"}, timeout=60) for job in jobs]

    events = sorted(
        [(job["started_at"], 1) for job in finished]
        + [(job["finished_at"], -1) for job in finished]
    )
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    assert peak >= 30, f"at most {peak} jobs ran at once"
