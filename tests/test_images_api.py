"""The official openai SDK against ``POST /v1/images/generations`` on a live API and worker:
through the mock and through the fake OpenAI server, in both response formats; images as
jobs (``kind: images``) readable at ``/v1/jobs/{id}``; bad input answered 400."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Literal

import httpx
import openai
import pytest

from relayq.providers.mock import MOCK_IMAGE_TOKENS
from relayq.providers.mock_image import mock_png
from tests.batches import jsonl, upload, wait_for_batch
from tests.caching import until_cached
from tests.conftest import PRICE, KeyFactory
from tests.fakes.images import ONE_PIXEL_PNG
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.jobs import wait_for_status
from tests.stack import Stack


@pytest.fixture
def sdk(stack: Stack, make_key: KeyFactory) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=f"{stack.base_url}/v1", api_key=make_key(), max_retries=0, timeout=30
    ) as client:
        yield client


@pytest.fixture
def http(stack: Stack, sdk: openai.OpenAI) -> Iterator[httpx.Client]:
    """Plain HTTP as the SDK's key."""
    headers = {"Authorization": f"Bearer {sdk.api_key}"}
    with httpx.Client(base_url=stack.base_url, headers=headers, timeout=10) as client:
        yield client


def _file_id(url: str, stack: Stack) -> str:
    prefix, suffix = f"{stack.base_url}/v1/files/", "/content"
    assert url.startswith(prefix), url
    assert url.endswith(suffix), url
    return url[len(prefix) : -len(suffix)]


def test_the_mocks_images_come_as_bytes_and_the_job_keeps_their_files(
    sdk: openai.OpenAI, http: httpx.Client
) -> None:
    """No ``response_format``: base64, as the GPT image models answer. The job, priced, is
    readable with its usage and cost, its answer naming files, not carrying bytes."""
    raw = sdk.images.with_raw_response.generate(model="mock-priced", prompt="a quiet lake", n=2)
    answer = raw.parse()
    job_id = raw.headers["x-relayq-job-id"]

    assert [base64.b64decode(image.b64_json or "") for image in answer.data or []] == [
        mock_png("a quiet lake", 0),
        mock_png("a quiet lake", 1),
    ]
    assert answer.usage is not None
    assert (answer.usage.input_tokens, answer.usage.output_tokens) == (3, 2 * MOCK_IMAGE_TOKENS)
    job = wait_for_status(http, job_id, {"succeeded", "failed"}, timeout=10)
    assert job["status"] == "succeeded", job["error"]
    assert (job["kind"], job["priority"]) == ("images", 9)
    completion = 2 * MOCK_IMAGE_TOKENS
    assert job["usage"] == {
        "prompt_tokens": 3,
        "completion_tokens": completion,
        "total_tokens": 131,
    }
    want = (3 * PRICE["input"] + completion * PRICE["output"]) / 1_000_000
    assert job["cost_usd"] == pytest.approx(want)
    stored = job["response"]["data"]
    assert all("b64_json" not in image for image in stored)
    for index, image in enumerate(stored):
        assert image["url"] == f"/v1/files/{image['file_id']}/content"
        assert http.get(image["url"]).content == mock_png("a quiet lake", index)
        assert http.get(f"/v1/files/{image['file_id']}").json()["purpose"] == "image_generation"


def test_asked_as_urls_the_mocks_images_are_relayqs_to_read_by_their_owner_only(
    sdk: openai.OpenAI, http: httpx.Client, stack: Stack, make_key: KeyFactory
) -> None:
    answer = sdk.images.generate(model="mock", prompt="red kite", response_format="url")

    [image] = answer.data or []
    assert image.b64_json is None
    assert image.url is not None
    got = http.get(image.url)
    assert got.status_code == 200
    assert got.headers["content-type"] == "image/png"
    assert got.content == mock_png("red kite", 0)
    stranger = {"Authorization": f"Bearer {make_key()}"}
    other = httpx.get(image.url, headers=stranger, timeout=10)
    assert other.status_code == 404
    assert _file_id(image.url, stack) in other.json()["error"]["message"]


@pytest.mark.parametrize("response_format", ["b64_json", "url"])
def test_gpt_image_1_on_the_openai_upstream_in_both_formats(
    sdk: openai.OpenAI,
    http: httpx.Client,
    stack: Stack,
    fake_openai: FakeOpenAI,
    response_format: Literal["url", "b64_json"],
) -> None:
    """The upstream is never sent ``response_format`` (a GPT image model refuses it) and
    answers bytes; the caller gets them as it asked."""
    before = len(fake_openai.requests)

    answer = sdk.images.generate(
        model="gpt-image-1",
        prompt="a lighthouse",
        size="1024x1024",
        quality="low",
        response_format=response_format,
    )

    [sent] = fake_openai.requests[before:]
    assert sent.path == "/v1/images/generations"
    assert sent.json == {
        "model": "gpt-image-1",
        "prompt": "a lighthouse",
        "size": "1024x1024",
        "quality": "low",
    }
    [image] = answer.data or []
    if response_format == "url":
        assert image.url is not None
        _file_id(image.url, stack)
        assert http.get(image.url).content == ONE_PIXEL_PNG
    else:
        assert base64.b64decode(image.b64_json or "") == ONE_PIXEL_PNG
    assert answer.output_format == "png"
    assert answer.usage is not None
    assert answer.usage.output_tokens == 272


@pytest.mark.parametrize("response_format", ["b64_json", "url"])
def test_dall_e_3_on_the_openai_upstream_in_both_formats(
    sdk: openai.OpenAI, fake_openai: FakeOpenAI, response_format: Literal["url", "b64_json"]
) -> None:
    """Asked as a URL, DALL·E's own URL passes through; asked as bytes, they come back."""
    before = len(fake_openai.requests)

    answer = sdk.images.generate(
        model="dall-e-3",
        prompt="an owl",
        style="natural",
        response_format=response_format,
    )

    [sent] = fake_openai.requests[before:]
    assert sent.json["response_format"] == response_format
    [image] = answer.data or []
    assert image.revised_prompt == "A detailed rendering of an owl"
    if response_format == "url":
        assert image.url == f"{fake_openai.origin}/generated/0.png"
    else:
        assert base64.b64decode(image.b64_json or "") == ONE_PIXEL_PNG


def test_bytes_that_do_not_decode_are_a_malformed_answer_and_retried(
    sdk: openai.OpenAI, http: httpx.Client, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(Reply(body={"created": 1, "data": [{"b64_json": "not base64!"}]}))

    raw = sdk.images.with_raw_response.generate(model="gpt-image-1", prompt="again")

    [image] = raw.parse().data or []
    assert base64.b64decode(image.b64_json or "") == ONE_PIXEL_PNG
    job = wait_for_status(http, raw.headers["x-relayq-job-id"], {"succeeded"}, timeout=10)
    first, second = job["attempts"]
    assert (first["status"], first["error"]["code"]) == ("failed", "malformed_response")
    assert second["status"] == "succeeded"


def test_an_images_job_on_v1_jobs_falls_back_and_is_readable(http: httpx.Client) -> None:
    """``kind: images`` on ``POST /v1/jobs``: its first deployment fails (malformed), the
    second draws; the job shows both attempts and its image's file."""
    created = http.post(
        "/v1/jobs",
        json={
            "kind": "images",
            "model": "mock-image-cut",
            "prompt": "dunes",
            "priority": 3,
            "metadata": {"a": "b"},
        },
    )
    assert created.status_code in (200, 201, 202), created.text

    job = wait_for_status(http, created.json()["id"], {"succeeded", "failed"}, timeout=20)

    assert job["status"] == "succeeded", job["error"]
    assert (job["kind"], job["priority"], job["metadata"]) == ("images", 3, {"a": "b"})
    assert job["request"]["prompt"] == "dunes"
    assert [attempt["status"] for attempt in job["attempts"]][-1] == "succeeded"
    assert job["provider"] == "image-backup"
    [image] = job["response"]["data"]
    assert http.get(image["url"]).content == mock_png("dunes", 0)


def test_a_cached_answer_is_answered_again_from_the_same_files(
    sdk: openai.OpenAI, http: httpx.Client
) -> None:
    """The cache keeps the answer with its file references: a hit reads a stored file."""
    prompt = f"cache me {time.time_ns()}"
    first = sdk.images.with_raw_response.generate(model="mock-cached", prompt=prompt)
    until_cached(http, {"kind": "images", "model": "mock-cached", "prompt": prompt})

    second = sdk.images.with_raw_response.generate(model="mock-cached", prompt=prompt)

    job = http.get(f"/v1/jobs/{second.headers['x-relayq-job-id']}").json()
    assert job["cached"] is True
    [image] = second.parse().data or []
    assert base64.b64decode(image.b64_json or "") == mock_png(prompt, 0)
    # The entry is the last uncached run's (until_cached ran a few): its own file.
    assert image.model_extra is not None
    assert http.get(f"/v1/files/{image.model_extra['file_id']}").status_code == 200
    assert [i.b64_json for i in first.parse().data or []] == [image.b64_json]


def test_bad_input_is_a_400_naming_the_field(sdk: openai.OpenAI, http: httpx.Client) -> None:
    cases = [
        ({"n": 11}, "n"),
        ({"response_format": "png"}, "response_format"),
        ({"size": "big"}, "size"),
        ({"quality": "ultra"}, "quality"),
        ({"temperature": 1}, "temperature"),
        ({"stream": True}, "stream"),
    ]
    for extra, param in cases:
        with pytest.raises(openai.BadRequestError) as raised:
            sdk.images.generate(model="mock", prompt="x", extra_body=extra)
        assert raised.value.param == param, extra

    missing = http.post("/v1/images/generations", json={"model": "mock"})
    assert missing.status_code == 400
    assert missing.json()["error"]["param"] == "prompt"

    with pytest.raises(openai.BadRequestError) as unserved:
        sdk.images.generate(model="chat-only", prompt="x")
    assert (unserved.value.param, unserved.value.code) == ("model", "model_not_supported")

    with pytest.raises(openai.BadRequestError) as upstream:
        sdk.images.generate(
            model="mock-faulty", prompt="x", extra_body={"mock": {"fault": "invalid_request"}}
        )
    assert upstream.value.code == "invalid_request"
    assert upstream.value.response.headers["x-relayq-job-id"].startswith("job_")

    for unserved_path in ("/v1/images/edits", "/v1/images/variations"):
        assert http.post(unserved_path, json={"prompt": "x"}).status_code == 404

    bad_kind = http.post("/v1/jobs", json={"kind": "pictures", "model": "mock", "prompt": "x"})
    assert bad_kind.status_code == 400
    assert "'images'" in bad_kind.json()["error"]["message"]


def _image_line(custom_id: str, prompt: str, **body: object) -> dict[str, object]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/images/generations",
        "body": {"model": "mock", "prompt": prompt, **body},
    }


def test_an_images_batch_runs_its_lines_as_images_jobs(
    sdk: openai.OpenAI, http: httpx.Client
) -> None:
    """Each output line's body is the job's stored answer: file references, not bytes."""
    lines = [_image_line("one", "a cat"), _image_line("two", "a dog", n=2)]
    uploaded = sdk.files.create(file=("images.jsonl", jsonl(lines)), purpose="batch")
    batch = sdk.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/images/generations", completion_window="24h"
    )

    done = wait_for_batch(http, batch.id)

    assert done["status"] == "completed", done
    output = sdk.files.content(done["output_file_id"]).text
    results = {r["custom_id"]: r for r in map(json.loads, output.splitlines())}
    images = results["two"]["response"]["body"]["data"]
    assert [http.get(image["url"]).content for image in images] == [
        mock_png("a dog", 0),
        mock_png("a dog", 1),
    ]
    assert results["one"]["response"]["status_code"] == 200
    jobs = http.get("/v1/jobs", params={"batch_id": batch.id}).json()["data"]
    assert {job["kind"] for job in jobs} == {"images"}


def test_bad_images_lines_fail_the_batch_each_named(http: httpx.Client) -> None:
    content = jsonl(
        [
            _image_line("ok", "fine"),
            _image_line("big-n", "x", n=11),
            _image_line("unknown", "x", temperature=1),
            {**_image_line("chat-only", "x"), "body": {"model": "chat-only", "prompt": "x"}},
        ]
    )
    created = http.post(
        "/v1/batches",
        json={
            "input_file_id": upload(http, content)["id"],
            "endpoint": "/v1/images/generations",
            "completion_window": "24h",
        },
    )
    assert created.status_code == 200, created.text

    batch = wait_for_batch(http, created.json()["id"])

    assert batch["status"] == "failed"
    errors = [(e["line"], e["code"], e["param"]) for e in batch["errors"]["data"]]
    assert errors == [
        (2, "invalid_request", "body.n"),
        (3, "invalid_request", "body.temperature"),
        (4, "model_not_supported", "body.model"),
    ]
