"""A relayq batch as Anthropic's message batch, and its requests as result lines."""

from __future__ import annotations

from typing import Any

import pytest

from relayq.batches.message_batches import MESSAGES_ENDPOINT, message_batch, result_line
from relayq.schemas.batches import BatchStatus
from relayq.store.batches import RequestResult, Tally
from relayq.store.models import Batch

_URL = "http://relayq.test/v1/messages/batches/batch_1/results"


def _batch(status: BatchStatus, *, total: int = 0, **times: float) -> Batch:
    return Batch(
        id="batch_1",
        key_id="key_1",
        status=status.value,
        endpoint=MESSAGES_ENDPOINT,
        input_file_id="file_1",
        completion_window="24h",
        priority=1,
        total=total,
        created_at=1_700_000_000.0,
        expires_at=1_700_086_400.0,
        **times,
    )


def _tally(status: str, count: int) -> Tally:
    return Tally(batch_id="batch_1", provider="mock", status=status, held=False, count=count)


def test_a_running_batch_counts_what_is_left_as_processing() -> None:
    shown = message_batch(
        _batch(BatchStatus.IN_PROGRESS, total=5, in_progress_at=1_700_000_001.0),
        [_tally("succeeded", 2), _tally("failed", 1), _tally("queued", 2)],
        lines=5,
        results_url=_URL,
    )

    assert shown.processing_status == "in_progress"
    assert shown.request_counts.model_dump() == {
        "processing": 2,
        "succeeded": 2,
        "errored": 1,
        "canceled": 0,
        "expired": 0,
    }
    assert shown.created_at == "2023-11-14T22:13:20Z"
    assert (shown.ended_at, shown.results_url) == (None, None)


def test_a_batch_being_cancelled_is_canceling_then_ended_with_its_results() -> None:
    canceling = message_batch(
        _batch(BatchStatus.CANCELLING, total=2, cancelling_at=1_700_000_010.0),
        [],
        lines=2,
        results_url=_URL,
    )
    ended = message_batch(
        _batch(
            BatchStatus.CANCELLED,
            total=2,
            cancelling_at=1_700_000_010.0,
            cancelled_at=1_700_000_011.0,
        ),
        [_tally("cancelled", 1), _tally("expired", 1)],
        lines=2,
        results_url=_URL,
    )

    assert canceling.processing_status == "canceling"
    assert canceling.cancel_initiated_at == "2023-11-14T22:13:30Z"
    assert ended.processing_status == "ended"
    assert ended.ended_at == "2023-11-14T22:13:31Z"
    assert ended.results_url == _URL
    assert (ended.request_counts.canceled, ended.request_counts.expired) == (1, 1)


@pytest.mark.parametrize(
    ("status", "counted"),
    [(BatchStatus.FAILED, "errored"), (BatchStatus.CANCELLED, "canceled")],
)
def test_a_batch_that_ended_before_its_requests_were_jobs_counts_its_lines(
    status: BatchStatus, counted: str
) -> None:
    shown = message_batch(_batch(status, failed_at=1_700_000_002.0), [], lines=4, results_url=_URL)

    assert shown.processing_status == "ended"
    assert shown.request_counts.model_dump()[counted] == 4


def _result(status: str, **fields: Any) -> RequestResult:
    return RequestResult(
        job_id="job_01X",
        custom_id="c1",
        status=status,
        response=fields.get("response"),
        error=fields.get("error"),
    )


def test_result_lines_for_every_ending() -> None:
    completion = {
        "id": "chatcmpl-1",
        "model": "mock",
        "choices": [{"index": 0, "message": {"content": "Hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1},
    }
    succeeded = result_line(_result("succeeded", response=completion))
    errored = result_line(_result("failed", error={"code": "rate_limited", "message": "Slow down"}))
    refused = result_line(
        _result("failed", error={"code": "x", "message": "No", "status_code": 400})
    )
    unknown = result_line(_result("failed", error={"message": "Upstream broke"}))

    assert succeeded["custom_id"] == "c1"
    assert succeeded["result"]["type"] == "succeeded"
    assert succeeded["result"]["message"]["id"] == "msg_01X"
    assert succeeded["result"]["message"]["content"] == [{"type": "text", "text": "Hi"}]
    assert errored["result"] == {
        "type": "errored",
        "error": {"type": "error", "error": {"type": "rate_limit_error", "message": "Slow down"}},
    }
    assert refused["result"]["error"]["error"]["type"] == "invalid_request_error"
    assert unknown["result"]["error"]["error"]["type"] == "api_error"
    assert result_line(_result("cancelled"))["result"] == {"type": "canceled"}
    assert result_line(_result("expired"))["result"] == {"type": "expired"}
