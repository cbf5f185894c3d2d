"""A batch's output and error files, in OpenAI's line format, written as a stream.

Each line is ``{"id", "custom_id", "response": {"status_code", "request_id",
"body"}, "error"}``. Requests that succeeded go to the output file; those
that failed (with the upstream's status and error body), expired
(``batch_expired``) or were cancelled (``batch_cancelled``) go to the error
file. Rows are read a page at a time and lines written as they come, so a
file of any size passes through in bounded memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from relayq.files.storage import FileStorage
from relayq.schemas.jobs import JobStatus
from relayq.store import Database
from relayq.store.batches import RequestResult, request_results

__all__ = ["ResultFiles", "output_file_ids", "result_line", "write_results"]

_PAGE = 1000

_NOT_RUN = {
    JobStatus.EXPIRED.value: (
        "batch_expired",
        "This request could not be executed before the completion window expired.",
    ),
    JobStatus.CANCELLED.value: (
        "batch_cancelled",
        "This request was not executed because the batch was cancelled.",
    ),
}


@dataclass(frozen=True)
class ResultFiles:
    output_lines: int
    output_bytes: int
    error_lines: int
    error_bytes: int
    expired: int
    """Requests that expired (the batch passed its window)."""


def output_file_ids(batch_id: str) -> tuple[str, str]:
    """The output and error files' ids: fixed per batch, so a redone write replaces them."""
    suffix = batch_id.removeprefix("batch_")
    return f"file_{suffix}o", f"file_{suffix}e"


def _status_code(error: dict[str, Any]) -> int:
    status = error.get("status_code")
    return status if isinstance(status, int) and 400 <= status <= 599 else 500


def result_line(result: RequestResult) -> tuple[bool, dict[str, Any]]:
    """(goes to the output file, the line) for one finished request."""
    line_id = f"batch_req_{result.job_id.removeprefix('job_')}"
    if result.status == JobStatus.SUCCEEDED.value:
        response = {"status_code": 200, "request_id": result.job_id, "body": result.response}
        return True, {
            "id": line_id,
            "custom_id": result.custom_id,
            "response": response,
            "error": None,
        }
    if result.status in _NOT_RUN:
        code, message = _NOT_RUN[result.status]
        error = {"code": code, "message": message}
        return False, {
            "id": line_id,
            "custom_id": result.custom_id,
            "response": None,
            "error": error,
        }
    failure = result.error or {}
    status_code = _status_code(failure)
    body = {
        "error": {
            "message": failure.get("message", "The request failed."),
            "type": "invalid_request_error" if status_code < 500 else "api_error",
            "param": failure.get("param"),
            "code": failure.get("code"),
        }
    }
    response = {"status_code": status_code, "request_id": result.job_id, "body": body}
    return False, {
        "id": line_id,
        "custom_id": result.custom_id,
        "response": response,
        "error": None,
    }


async def write_results(*, database: Database, storage: FileStorage, batch_id: str) -> ResultFiles:
    """Write the batch's output and error files to storage; both are replaced atomically."""
    output_id, error_id = output_file_ids(batch_id)
    output, errors = storage.writer(output_id), storage.writer(error_id)
    counts = [0, 0]
    expired = 0
    try:
        after = ""
        while True:
            async with database.session() as session:
                page = await request_results(session, batch_id=batch_id, after=after, limit=_PAGE)
            if not page:
                break
            after = page[-1].job_id
            chunks: tuple[list[bytes], list[bytes]] = ([], [])
            for result in page:
                expired += result.status == JobStatus.EXPIRED.value
                succeeded, line = result_line(result)
                chunks[0 if succeeded else 1].append(orjson.dumps(line))
            for index, (writer, lines) in enumerate(((output, chunks[0]), (errors, chunks[1]))):
                if lines:
                    counts[index] += len(lines)
                    await writer.write(b"\n".join(lines) + b"\n")
        output_bytes = await output.commit() if counts[0] else 0
        error_bytes = await errors.commit() if counts[1] else 0
    finally:
        await output.abort()
        await errors.abort()
    return ResultFiles(
        output_lines=counts[0],
        output_bytes=output_bytes,
        error_lines=counts[1],
        error_bytes=error_bytes,
        expired=expired,
    )
