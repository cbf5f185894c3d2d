"""Legacy completions (``POST /v1/completions``, kind ``completions``) with the official
openai SDK against the live stack: passed through to the fake OpenAI server."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.batches import jsonl, upload, wait_for_batch
from tests.caching import until_cached
from tests.conftest import KeyFactory
from tests.fakes.openai_server import DEFAULT_CONTENT, FakeOpenAI, Reply, error_body
from tests.jobs import submit, wait_for_status
from tests.stack import Stack


@pytest.fixture
def sdk(stack: Stack, make_key: KeyFactory) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=f"{stack.base_url}/v1", api_key=make_key(), max_retries=0, timeout=30
    ) as client:
        yield client


def _client(stack: Stack, sdk: openai.OpenAI) -> httpx.Client:
    headers = {"Authorization": f"Bearer {sdk.api_key}"}
    return httpx.Client(base_url=stack.base_url, headers=headers, timeout=10)


def test_a_completion_is_passed_through_to_the_upstream(
    sdk: openai.OpenAI, stack: Stack, fake_openai: FakeOpenAI
) -> None:
    before = len(fake_openai.requests)

    raw = sdk.completions.with_raw_response.create(
        model="gpt-4o-mini",
        prompt="Say this is a test",
        max_tokens=7,
        temperature=0,
        echo=False,
        extra_body={"top_k": 5, "metadata": {"team": "a"}},
    )
    answer = raw.parse()

    assert answer.object == "text_completion"
    assert answer.choices[0].text == DEFAULT_CONTENT
    assert answer.usage is not None
    assert answer.usage.prompt_tokens == 5  # the fake counts words
    [sent] = fake_openai.requests[before:]
    assert sent.path == "/v1/completions"
    assert sent.json["model"] == "gpt-4o-mini-2024-07-18"
    assert (sent.json["prompt"], sent.json["max_tokens"], sent.json["top_k"]) == (
        "Say this is a test",
        7,
        5,
    )
    assert not {"metadata", "priority", "kind", "stream"} & set(sent.json)

    with _client(stack, sdk) as client:
        job = wait_for_status(client, raw.headers["x-relayq-job-id"], {"succeeded", "failed"})
    assert (job["status"], job["kind"], job["priority"]) == ("succeeded", "completions", 9)
    assert job["metadata"] == {"team": "a"}
    assert job["usage"]["total_tokens"] == answer.usage.total_tokens
    assert job["cost_usd"] is not None


def test_a_cached_completion_is_answered_again_plain_and_streamed(
    sdk: openai.OpenAI, stack: Stack, fake_openai: FakeOpenAI
) -> None:
    prompt = f"cache {time.time_ns()}"
    first = sdk.completions.create(model="gpt-4o-mini", prompt=prompt, extra_body={"cache": True})
    payload = {"kind": "completions", "model": "gpt-4o-mini", "prompt": prompt, "cache": True}
    with _client(stack, sdk) as client:
        until_cached(client, payload)
    before = len(fake_openai.requests)

    again = sdk.completions.with_raw_response.create(
        model="gpt-4o-mini", prompt=prompt, extra_body={"cache": True}
    )
    streamed = list(
        sdk.completions.create(
            model="gpt-4o-mini", prompt=prompt, stream=True, extra_body={"cache": True}
        )
    )

    assert len(fake_openai.requests) == before  # no upstream call
    assert again.parse().choices[0].text == first.choices[0].text
    assert "".join(chunk.choices[0].text for chunk in streamed) == first.choices[0].text
    assert all(chunk.choices for chunk in streamed)  # no usage chunk: none was asked for


def test_a_model_on_an_adapter_without_completions_is_refused(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        sdk.completions.create(model="mock", prompt="x")
    assert (raised.value.param, raised.value.code) == ("model", "model_not_supported")


def test_a_streamed_completion_passes_the_upstreams_chunks_on(
    sdk: openai.OpenAI, stack: Stack, fake_openai: FakeOpenAI
) -> None:
    before = len(fake_openai.requests)

    raw = sdk.completions.with_raw_response.create(
        model="gpt-4o-mini",
        prompt="Say hi",
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(raw.parse())

    assert all(chunk.object == "text_completion" for chunk in chunks)
    text = "".join(chunk.choices[0].text for chunk in chunks if chunk.choices)
    assert text == DEFAULT_CONTENT
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    [sent] = fake_openai.requests[before:]
    assert sent.json["stream"] is True
    assert sent.json["stream_options"] == {"include_usage": True}

    with _client(stack, sdk) as client:
        job = wait_for_status(client, raw.headers["x-relayq-job-id"], {"succeeded", "failed"})
    assert job["status"] == "succeeded", job["error"]
    assert job["response"]["object"] == "text_completion"
    assert job["response"]["choices"][0]["text"] == DEFAULT_CONTENT
    assert job["response"]["choices"][0]["finish_reason"] == "stop"
    assert job["usage"]["total_tokens"] == chunks[-1].usage.total_tokens


def test_a_stream_without_include_usage_has_no_usage_chunk(sdk: openai.OpenAI) -> None:
    chunks = list(sdk.completions.create(model="gpt-4o-mini", prompt="Say hi", stream=True))

    assert chunks
    assert all(chunk.choices for chunk in chunks)
    assert "".join(chunk.choices[0].text for chunk in chunks) == DEFAULT_CONTENT


def test_an_upstream_refusal_is_a_bad_request(sdk: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    fake_openai.script(Reply(status=400, body=error_body("This model does not support it")))

    with pytest.raises(openai.BadRequestError) as raised:
        sdk.completions.create(model="gpt-4o-mini", prompt="x")

    assert "does not support" in raised.value.message


def test_a_completions_job_via_v1_jobs(client: httpx.Client) -> None:
    payload: dict[str, Any] = {
        "kind": "completions",
        "model": "gpt-4o-mini",
        "prompt": ["one", "two"],
        "max_tokens": 5,
    }
    job = wait_for_status(client, submit(client, payload)["id"], {"succeeded", "failed"})

    assert (job["status"], job["kind"]) == ("succeeded", "completions")
    assert [c["index"] for c in job["response"]["choices"]] == [0, 1]


def test_a_streamed_completions_job_sends_deltas_to_its_followers(client: httpx.Client) -> None:
    payload = {"kind": "completions", "model": "gpt-4o-mini", "prompt": "x", "stream": True}
    job = wait_for_status(client, submit(client, payload)["id"], {"succeeded", "failed"})
    assert job["status"] == "succeeded", job["error"]

    raw = client.get(f"/v1/jobs/{job['id']}/events").text
    events = [json.loads(line[6:]) for line in raw.splitlines() if line.startswith("data: ")]
    deltas = [event["data"] for event in events if event["type"] == "delta"]
    assert "".join(delta["text"] for delta in deltas) == DEFAULT_CONTENT
    assert deltas[0]["chunks"][0]["object"] == "text_completion"
    assert job["response"]["choices"][0]["text"] == DEFAULT_CONTENT


def test_a_completions_batch_runs(client: httpx.Client) -> None:
    lines = [
        {
            "custom_id": f"c-{i}",
            "method": "POST",
            "url": "/v1/completions",
            "body": {"model": "gpt-4o-mini", "prompt": f"count {i}"},
        }
        for i in range(3)
    ]
    bad = {**lines[0], "custom_id": "bad", "body": {"model": "mock", "prompt": "x"}}
    refused = _batch(client, jsonl([*lines, bad]))
    assert refused["status"] == "failed"
    assert [(e["line"], e["code"]) for e in refused["errors"]["data"]] == [
        (4, "model_not_supported")
    ]

    batch = _batch(client, jsonl(lines))

    assert batch["status"] == "completed", batch
    output = client.get(f"/v1/files/{batch['output_file_id']}/content").text
    results = [json.loads(line) for line in output.splitlines()]
    assert [r["custom_id"] for r in results] == ["c-0", "c-1", "c-2"]
    body = results[0]["response"]["body"]
    assert (body["object"], body["choices"][0]["text"]) == ("text_completion", DEFAULT_CONTENT)


def _batch(client: httpx.Client, content: bytes) -> dict[str, Any]:
    file_id = upload(client, content)["id"]
    created = client.post(
        "/v1/batches",
        json={"input_file_id": file_id, "endpoint": "/v1/completions", "completion_window": "24h"},
    )
    assert created.status_code == 200, created.text
    return wait_for_batch(client, created.json()["id"])
