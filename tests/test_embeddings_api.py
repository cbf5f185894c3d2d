"""The official openai SDK against ``POST /v1/embeddings`` on a live API and worker."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from relayq.providers.mock import DEFAULT_DIMENSIONS, mock_vector
from relayq.schemas.embeddings import decode_vector
from tests.caching import until_cached
from tests.conftest import PRICE, KeyFactory
from tests.fakes.openai_server import FakeOpenAI
from tests.jobs import wait_for_status
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


def _close(got: list[float], want: list[float]) -> bool:
    return got == pytest.approx(want, rel=1e-6, abs=1e-6)


def test_a_string_is_embedded_the_sdk_decoding_its_default_base64(sdk: openai.OpenAI) -> None:
    """Without ``encoding_format`` the SDK asks for base64 and decodes it to floats."""
    answer = sdk.embeddings.create(model="mock", input="hello vectors")

    assert answer.object == "list"
    [item] = answer.data
    assert item.index == 0
    assert _close(item.embedding, mock_vector("hello vectors", DEFAULT_DIMENSIONS))
    assert (answer.usage.prompt_tokens, answer.usage.total_tokens) == (2, 2)


def test_a_list_with_dimensions_in_floats(sdk: openai.OpenAI) -> None:
    texts = ["first text", "second one here", "third"]

    answer = sdk.embeddings.create(model="mock", input=texts, dimensions=5, encoding_format="float")

    assert [item.index for item in answer.data] == [0, 1, 2]
    for item, text in zip(answer.data, texts, strict=True):
        assert len(item.embedding) == 5
        assert _close(item.embedding, mock_vector(text, 5))
    assert answer.usage.prompt_tokens == 6


def test_explicit_base64_is_sent_as_base64(sdk: openai.OpenAI) -> None:
    """Asked for by name, base64 reaches the caller as OpenAI sends it: the SDK keeps it."""
    raw = sdk.embeddings.with_raw_response.create(
        model="mock", input=["a b"], encoding_format="base64", dimensions=3
    )
    [item] = raw.http_response.json()["data"]

    assert isinstance(item["embedding"], str)
    assert _close(decode_vector(item["embedding"]), mock_vector("a b", 3))


def test_the_job_is_readable_with_its_kind_usage_and_cost(sdk: openai.OpenAI, stack: Stack) -> None:
    raw = sdk.embeddings.with_raw_response.create(
        model="mock-priced", input=["one two", "three"], encoding_format="float"
    )
    job_id = raw.headers["x-relayq-job-id"]

    with _client(stack, sdk) as client:
        # Its outcome is written in the worker's tick after the answer.
        job = wait_for_status(client, job_id, {"succeeded", "failed"}, timeout=10)

    assert job["status"] == "succeeded", job["error"]
    assert job["kind"] == "embeddings"
    assert job["priority"] == 9
    assert job["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    assert job["cost_usd"] == pytest.approx(3 * PRICE["input"] / 1_000_000)
    assert job["response"]["data"][1]["embedding"] == raw.parse().data[1].embedding


def test_a_model_without_embeddings_raises_bad_request(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        sdk.embeddings.create(model="chat-only", input="x")

    assert raised.value.param == "model"
    assert raised.value.code == "model_not_supported"
    assert raised.value.request_id is not None
    assert raised.value.response.json()["error"]["request_id"] == raised.value.request_id


def test_bad_input_raises_bad_request_naming_it(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as empty:
        sdk.embeddings.create(model="mock", input=["fine", ""])
    assert empty.value.param == "input[1]"

    with pytest.raises(openai.BadRequestError) as unknown:
        sdk.embeddings.create(model="mock", input="x", extra_body={"temperature": 1})
    assert unknown.value.param == "temperature"


def test_an_unknown_model_raises_not_found(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        sdk.embeddings.create(model="no-such-model", input="x")
    assert raised.value.param == "model"


def test_an_upstream_failure_is_an_openai_error(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        sdk.embeddings.create(
            model="mock-faulty", input="x", extra_body={"mock": {"fault": "invalid_request"}}
        )
    assert raised.value.code == "invalid_request"
    assert raised.value.response.headers["x-relayq-job-id"].startswith("job_")


def test_a_cached_answer_is_answered_again(sdk: openai.OpenAI, stack: Stack) -> None:
    text = f"cache me {time.time_ns()}"
    first = sdk.embeddings.with_raw_response.create(
        model="mock-cached", input=text, encoding_format="float"
    )
    payload = {"kind": "embeddings", "model": "mock-cached", "input": text}
    with _client(stack, sdk) as client:
        until_cached(client, payload)

        second = sdk.embeddings.with_raw_response.create(
            model="mock-cached", input=text, encoding_format="float"
        )
        job = client.get(f"/v1/jobs/{second.headers['x-relayq-job-id']}").json()

    assert second.headers["x-relayq-job-id"] != first.headers["x-relayq-job-id"]
    assert job["cached"] is True
    assert second.parse().data[0].embedding == first.parse().data[0].embedding


def test_gpt_4o_mini_reaches_the_openai_upstream(
    sdk: openai.OpenAI, fake_openai: FakeOpenAI
) -> None:
    before = len(fake_openai.requests)

    answer = sdk.embeddings.create(model="gpt-4o-mini", input=["alpha", "beta"], dimensions=6)

    [sent] = fake_openai.requests[before:]
    assert sent.path == "/v1/embeddings"
    assert sent.json["model"] == "gpt-4o-mini-2024-07-18"
    assert sent.json["dimensions"] == 6
    assert sent.json["encoding_format"] == "base64"  # what the SDK asked for, passed on
    assert [len(item.embedding) for item in answer.data] == [6, 6]
    assert answer.usage.prompt_tokens > 0
