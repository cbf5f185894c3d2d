"""The official anthropic SDK's message batches against /v1/messages/batches on a live stack."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest
from anthropic.types.messages import MessageBatch

from tests.batches import wait_for_batch
from tests.conftest import KeyFactory
from tests.stack import Stack, wait_until


@pytest.fixture
def sdk(stack: Stack, make_key: KeyFactory) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(
        base_url=stack.base_url, api_key=make_key(), max_retries=0, timeout=30
    ) as client:
        yield client


def _request(custom_id: str, model: str = "mock", **params: Any) -> Any:
    return {
        "custom_id": custom_id,
        "params": {
            "model": model,
            "max_tokens": 32,
            "messages": [{"role": "user", "content": f"Say {custom_id}"}],
            **params,
        },
    }


def _ended(sdk: anthropic.Anthropic, batch_id: str, status: str = "ended") -> MessageBatch:
    seen: list[MessageBatch] = []

    def reached() -> bool:
        seen.append(sdk.messages.batches.retrieve(batch_id))
        return seen[-1].processing_status == status

    wait_until(reached, timeout=60, interval=0.2)
    return seen[-1]


def test_a_batch_runs_and_its_results_come_as_messages(sdk: anthropic.Anthropic) -> None:
    created = sdk.messages.batches.create(
        requests=[
            _request("first", system="Be brief."),
            _request("second", extra_field_ignored=None),
            _request("refused", mock={"fault": "error", "status": 400}),
        ]
    )

    assert created.type == "message_batch"
    assert created.processing_status == "in_progress"
    assert created.request_counts.processing == 3
    assert created.results_url is None
    assert created.expires_at > created.created_at

    ended = _ended(sdk, created.id)
    assert ended.ended_at is not None
    assert ended.results_url is not None
    counts = ended.request_counts
    assert (counts.processing, counts.succeeded, counts.errored) == (0, 2, 1)
    results = {line.custom_id: line.result for line in sdk.messages.batches.results(created.id)}

    assert set(results) == {"first", "second", "refused"}
    for custom_id in ("first", "second"):
        result = results[custom_id]
        assert result.type == "succeeded"
        assert result.message.type == "message"
        assert result.message.content[0].type == "text"
        assert result.message.stop_reason == "end_turn"
        assert result.message.usage.output_tokens > 0
    refused = results["refused"]
    assert refused.type == "errored"
    assert refused.error.error.type == "invalid_request_error"


def test_listing_pages_through_the_keys_message_batches_only(
    sdk: anthropic.Anthropic, stack: Stack
) -> None:
    made = [sdk.messages.batches.create(requests=[_request(f"r{i}")]).id for i in range(3)]
    # An OpenAI batch of the same key is not a message batch.
    with httpx.Client(
        base_url=stack.base_url, headers={"Authorization": f"Bearer {sdk.api_key}"}
    ) as client:
        openai_batch = client.post(
            "/v1/batches",
            json={
                "requests": [
                    {
                        "custom_id": "o",
                        "params": {
                            "model": "mock",
                            "messages": [{"role": "user", "content": "hi"}],
                        },
                    }
                ]
            },
        )
        assert openai_batch.status_code == 200, openai_batch.text
        missing = client.get(f"/v1/messages/batches/{openai_batch.json()['id']}")

    first = sdk.messages.batches.list(limit=2)
    listed = [batch.id for batch in first]  # the SDK pages on with after_id

    assert len(first.data) == 2
    assert first.has_more
    assert listed == list(reversed(made))
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "not_found_error"


@pytest.mark.parametrize("prepared", [True, False])
def test_cancelling_cancels_the_queued_requests(
    sdk: anthropic.Anthropic, stack: Stack, prepared: bool
) -> None:
    """Cancelled once its requests are queued jobs, or while they are still checked."""
    created = sdk.messages.batches.create(
        requests=[_request(f"idle-{i}", model="mock-idle") for i in range(3)]
    )
    if prepared:
        with httpx.Client(
            base_url=stack.base_url, headers={"Authorization": f"Bearer {sdk.api_key}"}
        ) as client:
            wait_for_batch(client, created.id, {"in_progress"})

    cancelling = sdk.messages.batches.cancel(created.id)
    assert cancelling.processing_status in {"canceling", "ended"}
    assert cancelling.cancel_initiated_at is not None
    ended = _ended(sdk, created.id)
    results = list(sdk.messages.batches.results(created.id))

    assert {line.result.type for line in results} == {"canceled"}
    assert {line.custom_id for line in results} == {"idle-0", "idle-1", "idle-2"}
    assert ended.request_counts.canceled == 3
    again = sdk.messages.batches.cancel(created.id)
    assert again.processing_status == "ended"


def test_a_batch_that_fails_validation_ends_with_every_request_errored(
    sdk: anthropic.Anthropic,
) -> None:
    created = sdk.messages.batches.create(
        requests=[_request("fine"), _request("lost", model="no-such-model")]
    )

    ended = _ended(sdk, created.id)
    results = {line.custom_id: line.result for line in sdk.messages.batches.results(created.id)}

    assert ended.request_counts.errored == 2
    assert {result.type for result in results.values()} == {"errored"}
    lost = results["lost"]
    assert lost.type == "errored"
    assert "no-such-model" in lost.error.error.message


def test_results_before_the_end_are_a_conflict(sdk: anthropic.Anthropic, stack: Stack) -> None:
    created = sdk.messages.batches.create(requests=[_request("idle", model="mock-idle")])

    early = httpx.get(
        f"{stack.base_url}/v1/messages/batches/{created.id}/results",
        headers={"x-api-key": str(sdk.api_key)},
    )

    assert early.status_code == 409
    assert early.json()["error"]["type"] == "invalid_request_error"
    sdk.messages.batches.cancel(created.id)


def test_a_bad_request_is_refused_at_once_naming_it(sdk: anthropic.Anthropic) -> None:
    no_max_tokens: Any = {
        "custom_id": "x",
        "params": {"model": "mock", "messages": [{"role": "user", "content": "hi"}]},
    }
    with pytest.raises(anthropic.BadRequestError) as missing:
        sdk.messages.batches.create(requests=[_request("ok"), no_max_tokens])
    with pytest.raises(anthropic.BadRequestError) as twice:
        sdk.messages.batches.create(requests=[_request("same"), _request("same")])
    with pytest.raises(anthropic.BadRequestError) as streamed:
        sdk.messages.batches.create(requests=[_request("s", stream=True)])

    for raised, param in [
        (missing, "requests[1].params.max_tokens"),
        (twice, "requests[1].custom_id"),
        (streamed, "requests[0].params.stream"),
    ]:
        body = raised.value.body
        assert isinstance(body, dict)
        assert body["error"]["type"] == "invalid_request_error"
        assert param in body["error"]["message"]


def test_an_unknown_batch_is_not_found(sdk: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError):
        sdk.messages.batches.retrieve("batch_nope")
