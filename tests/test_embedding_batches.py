"""Batches of embeddings (``endpoint: /v1/embeddings``) with the official openai SDK
against the live stack."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from relayq.providers.mock import mock_vector
from tests.batches import jsonl, upload, wait_for_batch
from tests.conftest import PRICE, KeyFactory
from tests.stack import Stack, wait_until


def embedding_line(
    custom_id: str, text: Any = "hello", *, model: str = "mock", **body: Any
) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/embeddings",
        "body": {"model": model, "input": text, **body},
    }


def test_the_openai_sdk_runs_an_embeddings_batch(stack: Stack, make_key: KeyFactory) -> None:
    secret = make_key()
    with openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key=secret, max_retries=0) as client:
        lines = [
            embedding_line("one", "alpha beta", model="mock-priced", dimensions=4),
            embedding_line("two", ["gamma", "delta epsilon"], model="mock-priced"),
            embedding_line("three", "zeta", model="mock-priced", encoding_format="base64"),
        ]
        uploaded = client.files.create(file=("embed.jsonl", jsonl(lines)), purpose="batch")

        batch = client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h"
        )
        assert (batch.status, batch.endpoint) == ("validating", "/v1/embeddings")

        def done() -> bool:
            nonlocal batch
            batch = client.batches.retrieve(batch.id)
            return batch.status in {"completed", "failed", "expired", "cancelled"}

        wait_until(done, timeout=60, interval=0.2)
        assert batch.status == "completed", batch
        assert batch.request_counts is not None
        assert (batch.request_counts.total, batch.request_counts.completed) == (3, 3)
        assert batch.output_file_id is not None

        output = client.files.content(batch.output_file_id)
        results = {r["custom_id"]: r for r in map(json.loads, output.text.splitlines())}
        assert set(results) == {"one", "two", "three"}
        for result in results.values():
            assert result["error"] is None
            assert result["response"]["status_code"] == 200
        one = openai.types.CreateEmbeddingResponse.model_validate(
            results["one"]["response"]["body"]
        )
        assert one.data[0].embedding == pytest.approx(mock_vector("alpha beta", 4), abs=1e-9)
        assert one.usage.prompt_tokens == 2
        two = results["two"]["response"]["body"]
        assert [item["index"] for item in two["data"]] == [0, 1]
        assert isinstance(results["three"]["response"]["body"]["data"][0]["embedding"], str)

        headers = {"Authorization": f"Bearer {secret}"}
        with httpx.Client(base_url=stack.base_url, headers=headers, timeout=10) as http:
            jobs = http.get("/v1/jobs", params={"batch_id": batch.id}).json()["data"]
        assert {job["kind"] for job in jobs} == {"embeddings"}
        by_custom_id = {job["custom_id"]: job for job in jobs}
        # A batch request costs its deployment's batch discount less.
        assert by_custom_id["two"]["cost_usd"] == pytest.approx(
            3 * PRICE["input"] * (1 - PRICE["batch_discount"]) / 1_000_000
        )


def test_bad_embeddings_lines_fail_the_batch_each_named(client: httpx.Client) -> None:
    content = jsonl(
        [
            embedding_line("ok"),
            embedding_line("empty", ""),
            embedding_line("extra", "x", temperature=0.2),
            embedding_line("chat-only", "x", model="chat-only"),
            {
                "custom_id": "chat-body",
                "method": "POST",
                "url": "/v1/embeddings",
                "body": {"model": "mock", "messages": [{"role": "user", "content": "hi"}]},
            },
            {**embedding_line("wrong-url"), "url": "/v1/chat/completions"},
        ]
    )
    file_id = upload(client, content)["id"]
    created = client.post(
        "/v1/batches",
        json={"input_file_id": file_id, "endpoint": "/v1/embeddings", "completion_window": "24h"},
    )
    assert created.status_code == 200, created.text

    batch = wait_for_batch(client, created.json()["id"])

    assert batch["status"] == "failed"
    errors = [(e["line"], e["code"], e["param"]) for e in batch["errors"]["data"]]
    assert errors == [
        (2, "invalid_request", "body.input"),
        (3, "invalid_request", "body.temperature"),
        (4, "model_not_supported", "body.model"),
        (5, "invalid_request", "body.input"),
        (6, "invalid_url", "url"),
    ]


def test_an_unsupported_endpoint_is_still_refused(client: httpx.Client) -> None:
    file_id = upload(client, jsonl([embedding_line("a")]))["id"]
    response = client.post(
        "/v1/batches",
        json={"input_file_id": file_id, "endpoint": "/v1/images", "completion_window": "24h"},
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("invalid_endpoint", "endpoint")
    assert "/v1/embeddings" in error["message"]
