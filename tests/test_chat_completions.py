"""The official openai SDK against /v1/chat/completions on a live API and worker."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import openai
import pytest

from tests.conftest import KeyFactory, key_factory
from tests.jobs import wait_for_status
from tests.services import running_valkey
from tests.stack import Stack, wait_until

MESSAGES: list[Any] = [{"role": "user", "content": "Write a haiku about queues"}]


@pytest.fixture
def sdk(stack: Stack, make_key: KeyFactory) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=f"{stack.base_url}/v1", api_key=make_key(), max_retries=0, timeout=30
    ) as client:
        yield client


def test_create_returns_a_chat_completion(sdk: openai.OpenAI) -> None:
    raw = sdk.chat.completions.with_raw_response.create(
        model="mock", messages=MESSAGES, extra_body={"mock": {"tokens": 12}}
    )
    completion = raw.parse()

    assert completion.object == "chat.completion"
    assert len((completion.choices[0].message.content or "").split()) == 12
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 12
    job_id = raw.headers["x-relayq-job-id"]
    assert job_id.startswith("job_")


def test_the_job_behind_a_completion_can_be_looked_up(sdk: openai.OpenAI, stack: Stack) -> None:
    raw = sdk.chat.completions.with_raw_response.create(model="mock", messages=MESSAGES)
    job_id = raw.headers["x-relayq-job-id"]

    with httpx.Client(
        base_url=stack.base_url, headers={"Authorization": f"Bearer {sdk.api_key}"}
    ) as client:
        # Its outcome is written in the worker's tick after the answer.
        job = wait_for_status(client, job_id, {"succeeded", "failed"}, timeout=10)

    assert job["status"] == "succeeded"
    assert job["priority"] == 9
    assert job["response"]["id"] == raw.parse().id
    assert job["response"]["choices"][0]["message"]["content"] == (
        raw.parse().choices[0].message.content
    )


def test_stream_reassembles_the_same_text_with_a_usage_chunk(sdk: openai.OpenAI) -> None:
    prompt: list[Any] = [{"role": "user", "content": f"stream {uuid.uuid4().hex}"}]
    whole = sdk.chat.completions.create(model="mock", messages=prompt)

    stream = sdk.chat.completions.create(
        model="mock",
        messages=prompt,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"mock": {"stream_interval_ms": 5}},
    )
    chunks = list(stream)

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 16


def test_stream_without_include_usage_has_no_usage_chunk(sdk: openai.OpenAI) -> None:
    chunks = list(sdk.chat.completions.create(model="mock", messages=MESSAGES, stream=True))

    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)


def test_a_cached_answer_streams_too(sdk: openai.OpenAI) -> None:
    prompt: list[Any] = [{"role": "user", "content": f"cached {uuid.uuid4().hex}"}]
    whole = sdk.chat.completions.create(model="mock-cached", messages=prompt)

    chunks = list(
        sdk.chat.completions.create(
            model="mock-cached",
            messages=prompt,
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        whole.choices[0].message.content
    )
    assert chunks[-1].usage is not None


def test_a_client_that_stops_reading_at_done_keeps_its_connection(
    stack: Stack, make_key: KeyFactory
) -> None:
    """``data: [DONE]`` ends the body in the same write, so the response is complete
    when a client stops there (as most do) and its connection serves the next call."""

    payload = {"model": "mock", "messages": MESSAGES, "stream": True}
    headers = {"Authorization": f"Bearer {make_key()}"}

    async def calls() -> int:
        opened = 0

        async def on_open(*_: object) -> None:
            nonlocal opened
            opened += 1

        trace = aiohttp.TraceConfig()
        trace.on_connection_create_end.append(on_open)
        async with aiohttp.ClientSession(trace_configs=[trace]) as session:
            for _ in range(30):
                url = f"{stack.base_url}/v1/chat/completions"
                async with session.post(url, json=payload, headers=headers) as response:
                    assert response.status == 200
                    async for line in response.content:
                        if line.strip() == b"data: [DONE]":
                            break
                    else:
                        raise AssertionError("the stream ended without data: [DONE]")
        return opened

    assert asyncio.run(calls()) == 1


def test_a_bad_key_raises_authentication_error(stack: Stack) -> None:
    client = openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key="rq-wrong", max_retries=0)

    with pytest.raises(openai.AuthenticationError) as raised:
        client.chat.completions.create(model="mock", messages=MESSAGES)

    assert raised.value.code == "invalid_api_key"


def test_bad_input_raises_bad_request_error(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        sdk.chat.completions.create(model="mock", messages=[])

    assert raised.value.param == "messages"
    with pytest.raises(openai.BadRequestError) as bad_mock:
        sdk.chat.completions.create(
            model="mock", messages=MESSAGES, extra_body={"mock": {"tokens": -3}}
        )
    assert bad_mock.value.param == "mock.tokens"


def test_an_unknown_model_raises_not_found_error(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        sdk.chat.completions.create(model="gpt-9", messages=MESSAGES)

    assert raised.value.code == "model_not_found"


@pytest.mark.parametrize("stream", [False, True])
def test_an_upstream_rate_limit_raises_rate_limit_error(sdk: openai.OpenAI, stream: bool) -> None:
    with pytest.raises(openai.RateLimitError) as raised:
        sdk.chat.completions.create(
            model="mock-faulty",
            messages=MESSAGES,
            stream=stream,
            extra_body={"mock": {"fault": "rate_limit", "retry_after": 0.4}},
        )

    # Retried on the deployment (honouring Retry-After), then given up: a 429.
    assert raised.value.response.headers["retry-after"] == "1"
    assert raised.value.response.headers["x-relayq-job-id"].startswith("job_")


def test_an_upstream_failure_raises_api_status_error(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as raised:
        sdk.chat.completions.create(
            model="mock-faulty",
            messages=MESSAGES,
            extra_body={"mock": {"fault": "error", "status": 503}},
        )

    assert raised.value.status_code == 502
    assert raised.value.code == "provider_unavailable"


def test_a_client_that_goes_away_mid_stream_cancels_the_job(
    stack: Stack, make_key: KeyFactory
) -> None:
    key = make_key()
    headers = {"Authorization": f"Bearer {key}"}
    payload = {
        "model": "mock",
        "messages": MESSAGES,
        "stream": True,
        "mock": {"tokens": 400, "stream_interval_ms": 50},
    }
    with httpx.Client(base_url=stack.base_url, headers=headers, timeout=30) as client:
        with client.stream("POST", "/v1/chat/completions", json=payload) as response:
            assert response.status_code == 200
            job_id = response.headers["x-relayq-job-id"]
            for line in response.iter_lines():
                if line.startswith("data: ") and json.loads(line[6:]).get("choices"):
                    break
        # A sync call's row is stored beside it: it may land just after the first words.
        wait_until(lambda: client.get(f"/v1/jobs/{job_id}").status_code == 200, timeout=5)
        cancelled = wait_for_status(client, job_id, {"cancelled", "succeeded"}, timeout=20)

    assert cancelled["status"] == "cancelled"


def test_a_client_that_gives_up_waiting_cancels_the_job(stack: Stack, make_key: KeyFactory) -> None:
    headers = {"Authorization": f"Bearer {make_key()}"}
    payload = {"model": "mock", "messages": MESSAGES, "mock": {"latency_ms": 10_000}}
    with httpx.Client(base_url=stack.base_url, headers=headers) as client:
        with pytest.raises(httpx.ReadTimeout):
            client.post("/v1/chat/completions", json=payload, timeout=1.0)
        jobs = client.get("/v1/jobs").json()["data"]
        [job] = jobs
        final = wait_for_status(client, job["id"], {"cancelled", "succeeded"}, timeout=20)

    assert final["status"] == "cancelled"


@pytest.mark.usefixtures("cut_breaker_closed")
def test_a_stream_never_mixes_the_text_of_two_attempts(sdk: openai.OpenAI, stack: Stack) -> None:
    """An attempt that fails after some of its text went out ends the stream with an error
    naming the job; the job goes on (retries, then the backup) and its answer stays readable."""
    prompt: list[Any] = [{"role": "user", "content": f"cut {uuid.uuid4().hex}"}]
    received: list[str] = []
    raw = sdk.chat.completions.with_raw_response.create(
        model="mock-cut",
        messages=prompt,
        stream=True,
        extra_body={"mock": {"tokens": 40, "stream_interval_ms": 30}},
    )
    job_id = raw.headers["x-relayq-job-id"]

    def read() -> None:
        for chunk in raw.parse():
            received.extend(c.delta.content or "" for c in chunk.choices)

    with pytest.raises(openai.APIError) as failed:
        read()

    assert job_id in failed.value.message
    assert "attempt" in failed.value.message
    headers = {"Authorization": f"Bearer {sdk.api_key}"}
    with httpx.Client(base_url=stack.base_url, headers=headers, timeout=30) as client:
        job = wait_for_status(client, job_id, {"succeeded", "failed"}, timeout=30)
        events = client.get(f"/v1/jobs/{job_id}/events", headers={"Accept": "text/event-stream"})
    answer = job["response"]["choices"][0]["message"]["content"]
    text = "".join(received)
    # Half of the first attempt's words, and nothing of any other attempt.
    assert text
    assert answer.startswith(text)
    assert text != answer
    assert job["status"] == "succeeded"
    assert [a["provider"] for a in job["attempts"]][-1] == "backup"
    messages = [json.loads(line[6:]) for line in events.text.splitlines() if line[:6] == "data: "]
    failures = [m["data"] for m in messages if m["type"] == "attempt_failed"]
    assert failures[0]["attempt"] == 1
    assert failures[0]["deltas_sent"] is True


@pytest.mark.usefixtures("cut_breaker_closed")
def test_a_whole_answer_retries_out_of_sight(sdk: openai.OpenAI) -> None:
    """Not streamed, the same failures cost the caller nothing but time: the backup answers."""
    prompt: list[Any] = [{"role": "user", "content": f"cut {uuid.uuid4().hex}"}]
    raw = sdk.chat.completions.with_raw_response.create(
        model="mock-cut", messages=prompt, extra_body={"mock": {"tokens": 40}}
    )
    completion = raw.parse()
    assert completion.choices[0].finish_reason == "stop"
    assert len((completion.choices[0].message.content or "").split()) == 40


@pytest.mark.usefixtures("sqlite_only")  # the sync lane and its admission live in Redis
def test_a_sync_call_whose_caller_left_before_any_worker_read_it_is_cancelled_uncalled(
    private_database_url: str, logs: Path
) -> None:
    """The caller gives up while its job waits on the sync lane (no worker is up yet).
    The worker that reads it later learns, in its admission's round trip, that the caller
    left: the job is recorded cancelled, with no call made."""
    make_key = key_factory(private_database_url)
    with (
        running_valkey() as broker_url,
        Stack(
            database_url=private_database_url, redis_url=broker_url, logs=logs, supervise=False
        ) as stack,
    ):
        stack.start_api()
        headers = {"Authorization": f"Bearer {make_key()}"}
        payload = {"model": "mock", "messages": MESSAGES}
        with (
            httpx.Client(base_url=stack.base_url, headers=headers, timeout=1.0) as impatient,
            pytest.raises(httpx.ReadTimeout),
        ):
            impatient.post("/v1/chat/completions", json=payload)
        stack.start_worker()
        with httpx.Client(base_url=stack.base_url, headers=headers, timeout=10) as client:

            def recorded() -> list[dict[str, Any]]:
                jobs: list[dict[str, Any]] = client.get("/v1/jobs").json()["data"]
                return jobs

            wait_until(lambda: len(recorded()) == 1, timeout=10)
            [listed] = recorded()
            job = wait_for_status(client, listed["id"], {"succeeded", "failed", "cancelled"})

    assert job["status"] == "cancelled"
    assert job["attempts"] == []
    assert job["response"] is None
