"""Batches end to end: OpenAI's Batch API and inline batches on the shared stack."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.batches import jsonl, request_line, upload, wait_for_batch
from tests.conftest import KeyFactory
from tests.stack import Stack, wait_until
from tests.webhook_receiver import WebhookReceiver


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as server:
        yield server


def lines_of(client: httpx.Client, file_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/v1/files/{file_id}/content")
    assert response.status_code == 200, response.text
    return [json.loads(line) for line in response.text.splitlines()]


def test_the_openai_sdk_runs_a_whole_batch(stack: Stack, make_key: KeyFactory) -> None:
    client = openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key=make_key(), max_retries=0)
    requests = [request_line(f"req-{i}", f"Say {i}") for i in range(25)]

    uploaded = client.files.create(file=("input.jsonl", jsonl(requests)), purpose="batch")
    assert (uploaded.object, uploaded.purpose, uploaded.status) == ("file", "batch", "processed")
    assert uploaded.bytes == len(jsonl(requests))
    assert client.files.retrieve(uploaded.id).filename == "input.jsonl"

    batch = client.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"run": "sdk"},
    )
    assert (batch.status, batch.input_file_id, batch.metadata) == (
        "validating",
        uploaded.id,
        {"run": "sdk"},
    )
    assert batch.expires_at is not None
    assert batch.expires_at - batch.created_at == 24 * 3600

    def done() -> bool:
        nonlocal batch
        batch = client.batches.retrieve(batch.id)
        return batch.status in {"completed", "failed", "expired", "cancelled"}

    wait_until(done, timeout=60, interval=0.2)
    assert batch.status == "completed", batch
    assert batch.request_counts is not None
    assert (batch.request_counts.total, batch.request_counts.completed) == (25, 25)
    assert batch.request_counts.failed == 0
    assert batch.in_progress_at is not None
    assert batch.finalizing_at is not None
    assert batch.completed_at is not None
    assert batch.error_file_id is None
    assert batch.output_file_id is not None

    output = client.files.content(batch.output_file_id)
    results = [json.loads(line) for line in output.text.splitlines()]
    assert [r["custom_id"] for r in results] == [f"req-{i}" for i in range(25)]
    for result in results:
        assert result["error"] is None
        assert result["id"].startswith("batch_req_")
        assert result["response"]["status_code"] == 200
        completion = openai.types.chat.ChatCompletion.model_validate(result["response"]["body"])
        assert completion.choices[0].message.content
    output_file = client.files.retrieve(batch.output_file_id)
    assert (output_file.purpose, output_file.bytes) == ("batch_output", len(output.content))

    assert batch.id in [b.id for b in client.batches.list(limit=10)]
    assert {uploaded.id, batch.output_file_id} <= {f.id for f in client.files.list()}
    deleted = client.files.delete(uploaded.id)
    assert deleted.deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(uploaded.id)


def test_every_bad_line_is_reported_with_its_number(client: httpx.Client) -> None:
    content = jsonl(
        [
            request_line("ok-1"),
            b"{not json",
            {"method": "POST", "url": "/v1/chat/completions", "body": {"model": "mock"}},
            request_line("ok-1"),
            {**request_line("wrong-url"), "url": "/v1/embeddings"},
            request_line("bad-role") | {"body": {"model": "mock", "messages": [{"role": "x"}]}},
            request_line("no-model", model="no-such-model"),
            request_line("streams", stream=True),
            [1, 2, 3],
            request_line("ok-2"),
        ]
    )
    file = upload(client, content)
    created = client.post("/v1/batches", json={"input_file_id": file["id"]})
    assert created.status_code == 200, created.text
    batch = wait_for_batch(client, created.json()["id"])

    assert batch["status"] == "failed"
    assert batch["failed_at"] is not None
    assert batch["request_counts"] == {"total": 0, "completed": 0, "failed": 0}
    errors = batch["errors"]["data"]
    assert [(e["line"], e["code"], e["param"]) for e in errors] == [
        (2, "invalid_json_line", None),
        (3, "missing_custom_id", "custom_id"),
        (4, "duplicate_custom_id", "custom_id"),
        (5, "invalid_url", "url"),
        (6, "invalid_request", "body.messages[0].role"),
        (7, "model_not_found", "body.model"),
        (8, "invalid_request", "body.stream"),
        (9, "invalid_request_line", None),
    ]
    assert "no-such-model" in errors[5]["message"]
    assert "/v1/embeddings" in errors[3]["message"]
    listed = client.get("/v1/jobs", params={"batch_id": batch["id"]}).json()
    assert listed["data"] == []  # nothing ran


def test_an_inline_batch_reports_failed_requests_in_the_error_file(client: httpx.Client) -> None:
    requests = [
        {
            "custom_id": "good",
            "params": {"model": "mock", "messages": [{"role": "user", "content": "hi"}]},
        },
        {
            "custom_id": "refused",
            "params": {
                "model": "mock",
                "messages": [{"role": "user", "content": "hi"}],
                "mock": {"fault": "error", "status": 400},
            },
        },
    ]
    created = client.post("/v1/batches", json={"requests": requests, "metadata": {"k": "v"}})
    assert created.status_code == 200, created.text
    assert created.json()["input_file_id"].startswith("file_")
    batch = wait_for_batch(client, created.json()["id"])

    assert batch["status"] == "completed"
    assert batch["request_counts"] == {"total": 2, "completed": 1, "failed": 1}
    [good] = lines_of(client, batch["output_file_id"])
    assert good["custom_id"] == "good"
    assert good["response"]["body"]["object"] == "chat.completion"
    [refused] = lines_of(client, batch["error_file_id"])
    assert refused["custom_id"] == "refused"
    assert refused["error"] is None
    assert refused["response"]["status_code"] == 400
    assert refused["response"]["body"]["error"]["type"] == "invalid_request_error"
    jobs = client.get("/v1/jobs", params={"batch_id": batch["id"]}).json()["data"]
    assert {(j["custom_id"], j["status"], j["priority"]) for j in jobs} == {
        ("good", "succeeded", 1),
        ("refused", "failed", 1),
    }


def test_cancelling_ends_queued_requests_and_keeps_what_ran(client: httpx.Client) -> None:
    requests = [request_line(f"idle-{i}", model="mock-idle") for i in range(5)]
    created = client.post(
        "/v1/batches", json={"input_file_id": upload(client, jsonl(requests))["id"]}
    ).json()
    wait_for_batch(client, created["id"], {"in_progress"})

    cancelling = client.post(f"/v1/batches/{created['id']}/cancel")
    assert cancelling.status_code == 200, cancelling.text
    # The scheduler may have moved it on already (it ticks every 0.2 s here).
    assert cancelling.json()["status"] in {"cancelling", "finalizing", "cancelled"}
    batch = wait_for_batch(client, created["id"])
    assert batch["status"] == "cancelled"
    assert batch["cancelling_at"] is not None
    assert batch["cancelled_at"] is not None
    assert batch["output_file_id"] is None
    errors = lines_of(client, batch["error_file_id"])
    assert {e["error"]["code"] for e in errors} == {"batch_cancelled"}
    assert len(errors) == 5
    again = client.post(f"/v1/batches/{created['id']}/cancel")
    assert (again.status_code, again.json()["status"]) == (200, "cancelled")


def test_a_batch_past_its_window_expires_its_unfinished_requests(client: httpx.Client) -> None:
    requests = [request_line(f"late-{i}", model="mock-idle") for i in range(3)]
    file = upload(client, jsonl(requests))
    created = client.post(
        "/v1/batches", json={"input_file_id": file["id"], "completion_window": "2s"}
    ).json()
    batch = wait_for_batch(client, created["id"])
    assert batch["status"] == "expired"
    assert batch["expired_at"] is not None
    assert batch["request_counts"] == {"total": 3, "completed": 0, "failed": 3}
    errors = lines_of(client, batch["error_file_id"])
    assert [e["custom_id"] for e in errors] == ["late-0", "late-1", "late-2"]
    assert {e["error"]["code"] for e in errors} == {"batch_expired"}


def test_a_finished_batch_cannot_be_cancelled(client: httpx.Client) -> None:
    created = client.post(
        "/v1/batches",
        json={
            "requests": [
                {
                    "custom_id": "a",
                    "params": {"model": "mock", "messages": [{"role": "user", "content": "x"}]},
                }
            ]
        },
    ).json()
    wait_for_batch(client, created["id"])
    answer = client.post(f"/v1/batches/{created['id']}/cancel")
    assert answer.status_code == 409
    assert answer.json()["error"]["code"] == "batch_not_cancellable"


def test_a_batch_sends_its_signed_webhook_when_it_ends(
    client: httpx.Client, receiver: WebhookReceiver
) -> None:
    secret = client.post("/v1/webhook/secret").json()["secret"]
    endpoint = receiver.endpoint(secret)
    requests = [
        {
            "custom_id": "a",
            "params": {"model": "mock", "messages": [{"role": "user", "content": "x"}]},
        }
    ]
    created = client.post(
        "/v1/batches", json={"requests": requests, "webhook": {"url": endpoint.url}}
    ).json()
    wait_for_batch(client, created["id"])

    wait_until(lambda: endpoint.received, timeout=20)
    [request] = endpoint.received
    assert request.verified
    assert request.payload["type"] == "batch.completed"
    assert request.payload["data"]["id"] == created["id"]
    assert request.payload["data"]["request_counts"] == {"total": 1, "completed": 1, "failed": 0}


def test_a_batch_streams_its_progress(client: httpx.Client) -> None:
    requests = [
        {
            "custom_id": f"p{i}",
            "params": {
                "model": "mock",
                "messages": [{"role": "user", "content": "x"}],
                "mock": {"latency_ms": 300},
            },
        }
        for i in range(6)
    ]
    created = client.post("/v1/batches", json={"requests": requests}).json()
    events: list[tuple[str, dict[str, Any]]] = []
    with client.stream("GET", f"/v1/batches/{created['id']}/events", timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        kind = ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((kind, json.loads(line.removeprefix("data: "))))
    kinds = [kind for kind, _ in events]
    assert kinds[0] in {"batch.validating", "batch.in_progress"}
    assert kinds[-1] == "batch.completed"
    assert "batch.in_progress" in kinds
    completed = [data["request_counts"]["completed"] for _, data in events]
    assert completed == sorted(completed)
    assert completed[-1] == 6


def test_file_and_batch_errors_are_clear(client: httpx.Client, make_key: KeyFactory) -> None:
    wrong_purpose = client.post(
        "/v1/files",
        files={"file": ("a.jsonl", io.BytesIO(b"{}\n"))},
        data={"purpose": "fine-tune"},
    )
    assert wrong_purpose.status_code == 400
    assert wrong_purpose.json()["error"]["param"] == "purpose"
    no_file = client.post("/v1/files", data={"purpose": "batch"})
    assert no_file.status_code == 400
    assert no_file.json()["error"]["param"] == "file"
    empty = client.post(
        "/v1/files", files={"file": ("a.jsonl", io.BytesIO(b""))}, data={"purpose": "batch"}
    )
    assert (empty.status_code, empty.json()["error"]["code"]) == (400, "empty_file")

    mine = upload(client, jsonl([request_line("a")]))
    other = httpx.Client(
        base_url=str(client.base_url), headers={"Authorization": f"Bearer {make_key()}"}
    )
    with other:
        assert other.get(f"/v1/files/{mine['id']}").status_code == 404
        assert other.get(f"/v1/files/{mine['id']}/content").status_code == 404
        refused = other.post("/v1/batches", json={"input_file_id": mine["id"]})
        assert refused.status_code == 404
        assert refused.json()["error"]["param"] == "input_file_id"

    both = client.post(
        "/v1/batches",
        json={"input_file_id": mine["id"], "requests": [{"custom_id": "a", "params": {}}]},
    )
    assert both.status_code == 400
    endpoint = client.post(
        "/v1/batches", json={"input_file_id": mine["id"], "endpoint": "/v1/images/edits"}
    )
    assert (endpoint.status_code, endpoint.json()["error"]["param"]) == (400, "endpoint")
    assert client.get("/v1/batches/batch_nope").status_code == 404
    assert client.get("/v1/files/file_nope").status_code == 404
    assert client.delete("/v1/files/file_nope").status_code == 404


def test_an_idempotency_key_makes_a_batch_create_safe_to_retry(client: httpx.Client) -> None:
    body = {"requests": [{"custom_id": "a", "params": {"model": "mock-idle", "messages": []}}]}
    first = client.post("/v1/batches", json=body, headers={"Idempotency-Key": "nightly-7"})
    again = client.post("/v1/batches", json=body, headers={"Idempotency-Key": "nightly-7"})
    assert first.status_code == again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    # The replay stored no second copy of the inline requests.
    files = client.get("/v1/files", params={"purpose": "batch"}).json()["data"]
    assert [f["id"] for f in files] == [first.json()["input_file_id"]]

    other = {"requests": [{"custom_id": "b", "params": body["requests"][0]["params"]}]}
    conflict = client.post("/v1/batches", json=other, headers={"Idempotency-Key": "nightly-7"})
    assert conflict.status_code == 409
    assert conflict.json()["error"]["code"] == "idempotency_key_reused"
    assert first.json()["id"] in conflict.json()["error"]["message"]


def test_a_download_names_its_file_safely(client: httpx.Client) -> None:
    answer = client.post(
        "/v1/files",
        files={"file": ("prompts;v2 (final).jsonl", io.BytesIO(jsonl([request_line("a")])))},
        data={"purpose": "batch"},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["filename"] == "prompts;v2 (final).jsonl"
    content = client.get(f"/v1/files/{answer.json()['id']}/content")
    assert content.headers["content-disposition"] == (
        'attachment; filename="prompts_v2 _final_.jsonl"'
    )
    assert content.content == jsonl([request_line("a")])
