"""Embeddings as jobs: ``POST /v1/jobs`` with ``"kind": "embeddings"``, through the real
stack (the API, a worker, the mock provider and the fake OpenAI server)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from relayq.providers.mock import DEFAULT_DIMENSIONS
from relayq.schemas.embeddings import decode_vector
from tests.caching import until_cached
from tests.conftest import PRICE
from tests.fakes.openai_server import FakeOpenAI
from tests.jobs import body, submit, wait_for_status


def embeddings(model: str = "mock", *, input: Any = "hello world", **extra: Any) -> dict[str, Any]:
    return {"kind": "embeddings", "model": model, "input": input, **extra}


def _finished(client: httpx.Client, payload: dict[str, Any]) -> dict[str, Any]:
    job = submit(client, payload)
    return wait_for_status(client, job["id"], {"succeeded", "failed"})


def test_an_embeddings_job_runs_and_reads_back_with_its_kind_usage_and_cost(
    client: httpx.Client,
) -> None:
    payload = embeddings("mock-priced", input=["one two three", "four five"], priority=8)
    queued = submit(client, payload)
    assert (queued["kind"], queued["status"]) == ("embeddings", "queued")
    assert queued["request"] == {
        "model": "mock-priced",
        "input": ["one two three", "four five"],
        "encoding_format": "float",
    }

    job = wait_for_status(client, queued["id"], {"succeeded", "failed"})

    assert job["status"] == "succeeded", job["error"]
    assert job["kind"] == "embeddings"
    response = job["response"]
    assert response["object"] == "list"
    assert [item["index"] for item in response["data"]] == [0, 1]
    assert all(len(item["embedding"]) == DEFAULT_DIMENSIONS for item in response["data"])
    # The mock counts a word a token.
    assert job["usage"] == {"prompt_tokens": 5, "total_tokens": 5}
    assert job["cost_usd"] == pytest.approx(5 * PRICE["input"] / 1_000_000)
    [attempt] = job["attempts"]
    assert attempt["status"] == "succeeded"
    listed = client.get("/v1/jobs", params={"limit": 1}).json()["data"]
    assert (listed[0]["id"], listed[0]["kind"]) == (job["id"], "embeddings")
    # The usage ledger booked it in the outcome's transaction.
    usage = client.get("/v1/usage", params={"group_by": "", "model": "mock-priced"})
    assert usage.status_code == 200, usage.text
    [bucket] = usage.json()["data"]
    assert (bucket["requests"], bucket["input_tokens"], bucket["output_tokens"]) == (1, 5, 0)
    assert bucket["cost_usd"] == pytest.approx(job["cost_usd"])


def test_a_chat_job_is_of_kind_chat_with_or_without_kind(client: httpx.Client) -> None:
    plain = submit(client, body("hi"))
    named = submit(client, body("hi", kind="chat"))
    assert plain["kind"] == named["kind"] == "chat"
    assert "kind" not in named["request"]
    assert wait_for_status(client, named["id"], {"succeeded", "failed"})["status"] == "succeeded"


def test_dimensions_and_base64_are_carried(client: httpx.Client) -> None:
    job = _finished(client, embeddings(input="some text", dimensions=3, encoding_format="base64"))

    assert job["status"] == "succeeded", job["error"]
    [item] = job["response"]["data"]
    assert isinstance(item["embedding"], str)
    assert len(decode_vector(item["embedding"])) == 3


def test_token_id_inputs_run(client: httpx.Client) -> None:
    job = _finished(client, embeddings(input=[[1, 2, 3], [4, 5]]))
    assert job["status"] == "succeeded", job["error"]
    assert job["usage"]["prompt_tokens"] == 5


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        (embeddings(input=""), "input"),
        (embeddings(input=["a", ""]), "input[1]"),
        (embeddings(input=["a", [1]]), "input"),
        (embeddings(dimensions=0), "dimensions"),
        (embeddings(encoding_format="int8"), "encoding_format"),
        (embeddings(temperature=0.5), "temperature"),
        (embeddings(mock={"tokens": -1}), "mock.tokens"),
        ({"kind": "embeddings", "model": "mock"}, "input"),
        ({"kind": "audio", "model": "mock", "prompt": "x"}, "kind"),
        (embeddings(priority=12), "priority"),
    ],
)
def test_bad_embeddings_bodies_are_refused_naming_the_field(
    client: httpx.Client, payload: dict[str, Any], param: str
) -> None:
    response = client.post("/v1/jobs", json=payload)

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param, error
    assert error["type"] == "invalid_request_error"


def test_a_model_that_serves_no_embeddings_is_refused_at_intake(client: httpx.Client) -> None:
    response = client.post("/v1/jobs", json=embeddings("chat-only"))

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["param"], error["code"]) == ("model", "model_not_supported")
    assert "chat-only" in error["message"]
    assert "embeddings" in error["message"]
    assert client.get("/v1/jobs").json()["data"] == []


def test_an_unknown_model_is_still_a_404(client: httpx.Client) -> None:
    response = client.post("/v1/jobs", json=embeddings("no-such-model"))
    assert response.status_code == 404, response.text
    assert response.json()["error"]["param"] == "model"


def test_the_cache_answers_a_repeated_embeddings_job_apart_from_chat(
    client: httpx.Client,
) -> None:
    payload = embeddings("mock-cached", input=f"cache these words {time.time_ns()}")
    first = _finished(client, payload)
    assert (first["status"], first["cached"]) == ("succeeded", False)
    until_cached(client, payload)

    again = submit(client, payload)

    assert (again["status"], again["cached"], again["kind"]) == ("succeeded", True, "embeddings")
    assert again["response"] == first["response"]
    assert again["cost_usd"] == 0.0
    # Another dimension is another answer, not the cached one.
    other = submit(client, {**payload, "dimensions": 4})
    assert other["cached"] is False


def test_a_refused_embeddings_call_fails_without_usage(client: httpx.Client) -> None:
    job = _finished(client, embeddings("mock-faulty", mock={"fault": "error", "status": 400}))

    assert job["status"] == "failed"
    assert job["error"]["code"] == "invalid_request"
    assert job["usage"] is None
    assert job["cost_usd"] is None


def test_a_failing_embeddings_call_falls_back_like_chat(client: httpx.Client) -> None:
    """``mock-embed-cut``'s first deployment answers malformed: retried there, then the job
    moves on to the next deployment."""
    job = _finished(client, embeddings("mock-embed-cut", input=["x y"]))

    assert job["status"] == "succeeded", job["error"]
    *failed, last = [(a["provider"], a["status"]) for a in job["attempts"]]
    assert failed
    assert set(failed) == {("embed-cut", "failed")}
    assert last == ("embed-backup", "succeeded")
    assert job["usage"]["prompt_tokens"] == 2


def test_an_embeddings_job_reaches_openai(client: httpx.Client, fake_openai: FakeOpenAI) -> None:
    before = len(fake_openai.requests)

    job = _finished(client, embeddings("gpt-4o-mini", input=["alpha", "beta gamma"], dimensions=4))

    assert job["status"] == "succeeded", job["error"]
    [sent] = fake_openai.requests[before:]
    assert sent.path == "/v1/embeddings"
    assert sent.json["model"] == "gpt-4o-mini-2024-07-18"
    assert sent.json["input"] == ["alpha", "beta gamma"]
    assert sent.json["dimensions"] == 4
    assert not {"kind", "priority", "metadata"} & set(sent.json)
    assert [len(item["embedding"]) for item in job["response"]["data"]] == [4, 4]
    assert job["usage"]["prompt_tokens"] > 0
    assert job["cost_usd"] is not None
    assert job["cost_usd"] > 0
