"""Anthropic's Message Batches on relayq batches: the batch object and its results.

A message batch is a relayq batch whose endpoint is ``/v1/messages``: its
requests, translated to the canonical chat request, are an inline input file
(:mod:`relayq.batches.inline`), validated, held and released fairly like any
batch's. Only its face differs:

- ``processing_status``: ``in_progress`` while validating, running or
  finalizing; ``canceling`` once cancelled until it has ended; ``ended`` when
  completed, failed, expired or cancelled;
- ``request_counts`` from the requests' jobs (succeeded, errored = failed,
  canceled, expired; the rest processing); a batch whose validation failed
  ran none of its requests: all of them count as errored (canceled, for one
  cancelled while validating);
- the results, one JSON line per request, ``{"custom_id", "result"}`` with
  ``{"type": "succeeded", "message"}`` (the job's answer as a ``message``),
  ``{"type": "errored", "error": {"type": "error", "error": {...}}}``,
  ``{"type": "canceled"}`` or ``{"type": "expired"}``; read from the jobs a
  page at a time, or, for a batch that ended before its requests became jobs,
  from its input file (and the validation's errors).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from relayq.files.storage import FileStorage
from relayq.schemas.anthropic_batches import MessageBatch, MessageBatchRequestCounts
from relayq.schemas.anthropic_translation import message_from_completion
from relayq.schemas.batches import FINAL_BATCH_STATUSES, BatchStatus
from relayq.schemas.jobs import JobStatus
from relayq.store import Database
from relayq.store.batches import RequestResult, Tally, request_results
from relayq.store.models import Batch

__all__ = [
    "MESSAGES_ENDPOINT",
    "has_ended",
    "message_batch",
    "result_line",
    "result_lines",
]

MESSAGES_ENDPOINT = "/v1/messages"
"""The endpoint of a message batch's relayq batch."""

_PAGE = 1000

_ERROR_TYPES = {400: "invalid_request_error", 404: "not_found_error", 429: "rate_limit_error"}
_STATUS_BY_CODE = {
    "invalid_request": 400,
    "model_not_found": 404,
    "rate_limited": 429,
    "provider_timeout": 504,
}
"""A failed request's HTTP status from its error code, when the error names none."""


def has_ended(batch: Batch) -> bool:
    return BatchStatus(batch.status) in FINAL_BATCH_STATUSES


def _time(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def _processing_status(batch: Batch) -> Literal["in_progress", "canceling", "ended"]:
    if has_ended(batch):
        return "ended"
    return "canceling" if batch.cancelling_at is not None else "in_progress"


def _unprepared(batch: Batch) -> bool:
    """Whether ``batch`` ended before its requests became jobs: failed or cancelled
    while validating."""
    return batch.total == 0 and batch.status in (
        BatchStatus.FAILED.value,
        BatchStatus.CANCELLED.value,
    )


def _counts(batch: Batch, found: Iterable[Tally], lines: int) -> MessageBatchRequestCounts:
    if _unprepared(batch):
        if batch.status == BatchStatus.FAILED.value:
            return MessageBatchRequestCounts(errored=lines)
        return MessageBatchRequestCounts(canceled=lines)
    by_status: dict[str, int] = {}
    for tally in found:
        by_status[tally.status] = by_status.get(tally.status, 0) + tally.count
    counts = MessageBatchRequestCounts(
        succeeded=by_status.get(JobStatus.SUCCEEDED.value, 0),
        errored=by_status.get(JobStatus.FAILED.value, 0),
        canceled=by_status.get(JobStatus.CANCELLED.value, 0),
        expired=by_status.get(JobStatus.EXPIRED.value, 0),
    )
    ended = counts.succeeded + counts.errored + counts.canceled + counts.expired
    # While validating, the requests are not jobs yet: all of them are processing.
    counts.processing = max(0, (batch.total or lines) - ended)
    return counts


def message_batch(
    batch: Batch, found: Iterable[Tally], *, lines: int, results_url: str
) -> MessageBatch:
    """``batch`` as a ``message_batch``; ``lines``: its requests; ``found``: their tallies;
    ``results_url`` is given once it has ended."""
    ended_at = batch.completed_at or batch.failed_at or batch.expired_at or batch.cancelled_at
    ended = has_ended(batch)
    return MessageBatch(
        id=batch.id,
        processing_status=_processing_status(batch),
        request_counts=_counts(batch, found, lines),
        created_at=_time(batch.created_at) or "",
        expires_at=_time(batch.expires_at) or "",
        ended_at=_time(ended_at) if ended else None,
        cancel_initiated_at=_time(batch.cancelling_at),
        results_url=results_url if ended else None,
    )


def _error(status_code: int, message: str) -> dict[str, Any]:
    kind = _ERROR_TYPES.get(
        status_code, "api_error" if status_code >= 500 else "invalid_request_error"
    )
    return {"type": "error", "error": {"type": kind, "message": message}}


def result_line(result: RequestResult) -> dict[str, Any]:
    """One finished request's line of the results."""
    if result.status == JobStatus.SUCCEEDED.value and result.response:
        message = message_from_completion(result.response, job_id=result.job_id)
        outcome: dict[str, Any] = {"type": "succeeded", "message": message}
    elif result.status == JobStatus.CANCELLED.value:
        outcome = {"type": "canceled"}
    elif result.status == JobStatus.EXPIRED.value:
        outcome = {"type": "expired"}
    else:
        failure = result.error or {}
        status = failure.get("status_code")
        if not (isinstance(status, int) and 400 <= status <= 599):
            status = _STATUS_BY_CODE.get(str(failure.get("code")), 500)
        why = str(failure.get("message") or "The request failed.")
        outcome = {"type": "errored", "error": _error(status, why)}
    return {"custom_id": result.custom_id, "result": outcome}


async def result_lines(
    *, database: Database, storage: FileStorage, batch: Batch
) -> AsyncIterator[bytes]:
    """The results of an ended batch, as JSON lines, a page of requests at a time."""
    if _unprepared(batch):
        async for line in _unprepared_lines(storage, batch):
            yield line
        return
    after = ""
    while True:
        async with database.session() as session:
            page = await request_results(session, batch_id=batch.id, after=after, limit=_PAGE)
        if not page:
            return
        after = page[-1].job_id
        yield b"".join(orjson.dumps(result_line(result)) + b"\n" for result in page)


async def _unprepared_lines(storage: FileStorage, batch: Batch) -> AsyncIterator[bytes]:
    """A batch that ended before its requests became jobs: each request canceled, or
    errored (with its line's error) if its validation failed."""
    failed = batch.status == BatchStatus.FAILED.value
    errors: dict[int, str] = {}
    for item in (batch.errors or {}).get("data", []):
        if isinstance(item.get("line"), int):
            errors.setdefault(item["line"], str(item.get("message", "")))
    content = b"".join([chunk async for chunk in storage.read(batch.input_file_id)])
    for number, raw in enumerate(content.splitlines(), start=1):
        custom_id = orjson.loads(raw).get("custom_id", "")
        outcome: dict[str, Any] = {"type": "canceled"}
        if failed:
            message = errors.get(number) or (
                "Not run: another request of this batch failed validation."
            )
            outcome = {"type": "errored", "error": _error(400, message)}
        yield orjson.dumps({"custom_id": custom_id, "result": outcome}) + b"\n"
