"""``POST /v1/chat/completions``: OpenAI's endpoint, served by the job pipeline.

The request becomes a high-priority job and the caller waits on its events:
a ``chat.completion`` when it ends, or with ``stream: true`` its chunks as
they come, ending with ``data: [DONE]``. The job id is in the
``x-relayq-job-id`` header, so the job can be looked up later. If the caller
goes away first, the job is cancelled (``RELAYQ_CHAT__CANCEL_ON_DISCONNECT``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError

from api.deps import KeyDep, ServicesDep, key_limits
from api.errors import ERROR_RESPONSES, APIError, error_body
from api.routes.jobs import unknown_model
from api.services import Services
from api.sse import sse_message
from relayq.assembly import chunks_from_completion
from relayq.chat import ChatCompletionRequest
from relayq.events import EventType, JobEvent
from relayq.jobs import JobCreate
from relayq.routing import UnknownModel
from relayq.store.models import Job

__all__ = ["router"]

router = APIRouter(tags=["chat"], responses=ERROR_RESPONSES)

JOB_HEADER = "x-relayq-job-id"

_STATUS_BY_CODE = {
    "invalid_request": 400,
    "model_not_found": 404,
    "rate_limited": 429,
    "provider_timeout": 504,
}
"""The HTTP status a failed job's error answers with; anything else is a 502."""


def failure_response(event: JobEvent, job_id: str) -> JSONResponse:
    """A job that did not succeed, as OpenAI's error shape and status."""
    headers = {JOB_HEADER: job_id}
    if event.type is EventType.CANCELLED:
        body = error_body(409, f"Job '{job_id}' was cancelled.", code="job_cancelled")
        return JSONResponse(body, status_code=409, headers=headers)
    if event.type is EventType.EXPIRED:
        body = error_body(408, f"Job '{job_id}' expired before it ran.", code="job_expired")
        return JSONResponse(body, status_code=408, headers=headers)
    error: dict[str, Any] = event.data.get("error") or {}
    code = str(error.get("code", "provider_error"))
    status = _STATUS_BY_CODE.get(code, 502)
    retry_after = error.get("retry_after")
    if status == 429 and retry_after is not None:
        headers["retry-after"] = str(max(1, round(float(retry_after))))
    message = str(error.get("message") or "The provider failed to complete the request.")
    return JSONResponse(error_body(status, message, code=code), status_code=status, headers=headers)


def _job_body(body: dict[str, Any], services: Services) -> JobCreate:
    if "priority" not in body:
        body = {**body, "priority": services.settings.chat.priority}
    try:
        return JobCreate.model_validate(body)
    except ValidationError as exc:
        errors = [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
        raise RequestValidationError(errors) from exc


@router.post("/v1/chat/completions", response_model=None)
async def create_chat_completion(
    body: ChatCompletionRequest, key: KeyDep, services: ServicesDep, request: Request
) -> JSONResponse | StreamingResponse:
    """Create a chat completion, exactly as OpenAI's API does (plus job options)."""
    job_body = _job_body(body.model_dump(mode="json", exclude_none=True), services)
    try:
        submitted = await services.intake.submit(
            key_id=key.id, body=job_body, limits=key_limits(key, services.settings)
        )
    except UnknownModel as exc:
        raise unknown_model(exc) from exc
    job = submitted.job
    events = services.hub.follow(job_id=job.id, key_id=key.id)
    if body.stream:
        return await _streaming(services, job, events, body, request)
    return await _whole(services, job, events, request)


async def _next_decisive(events: AsyncIterator[JobEvent], *, stream: bool) -> JobEvent:
    """The next event that decides the answer: the terminal one, or a delta when streaming."""
    async for event in events:
        if event.terminal or (stream and event.type is EventType.DELTA):
            return event
    raise RuntimeError("the event stream ended before the job did")


async def _wait(
    services: Services, job: Job, request: Request, waiting: asyncio.Task[JobEvent]
) -> JobEvent | None:
    """``waiting``'s event, or None if the caller left (the job is then cancelled)."""
    deadline = asyncio.get_running_loop().time() + services.settings.chat.timeout_seconds
    while not waiting.done():
        await asyncio.wait({waiting}, timeout=0.25)
        if waiting.done():
            break
        if await request.is_disconnected():
            waiting.cancel()
            await _abandon(services, job)
            return None
        if asyncio.get_running_loop().time() > deadline:
            waiting.cancel()
            raise APIError(
                504,
                f"Job '{job.id}' did not finish within {services.settings.chat.timeout_seconds} s; "
                f"it goes on: GET /v1/jobs/{job.id}.",
                code="timeout",
            )
    return waiting.result()


def _gone(job: Job) -> JSONResponse:
    """For a caller that already left: nobody reads it, but the log shows a 499."""
    body = error_body(499, "The client closed the request.", code="client_closed_request")
    return JSONResponse(body, status_code=499, headers={JOB_HEADER: job.id})


async def _abandon(services: Services, job: Job) -> None:
    if services.settings.chat.cancel_on_disconnect:
        await services.intake.cancel(key_id=job.key_id, job_id=job.id)


async def _whole(
    services: Services, job: Job, events: AsyncIterator[JobEvent], request: Request
) -> JSONResponse:
    try:
        waiting = asyncio.ensure_future(_next_decisive(events, stream=False))
        event = await _wait(services, job, request, waiting)
    finally:
        await _close(events)
    if event is None:
        return _gone(job)
    if event.type is not EventType.SUCCEEDED or not event.data.get("response"):
        return failure_response(event, job.id)
    return JSONResponse(event.data["response"], headers={JOB_HEADER: job.id})


async def _streaming(
    services: Services,
    job: Job,
    events: AsyncIterator[JobEvent],
    body: ChatCompletionRequest,
    request: Request,
) -> JSONResponse | StreamingResponse:
    # Wait for the first delta before answering, so a job that fails first
    # still gets a proper HTTP error status.
    try:
        waiting = asyncio.ensure_future(_next_decisive(events, stream=True))
        first = await _wait(services, job, request, waiting)
    except BaseException:
        await _close(events)
        raise
    if first is None:
        await _close(events)
        return _gone(job)
    if first.terminal and first.type is not EventType.SUCCEEDED:
        await _close(events)
        return failure_response(first, job.id)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return StreamingResponse(
        _chunks(services, job, first, events, include_usage=include_usage),
        media_type="text/event-stream",
        headers={JOB_HEADER: job.id, "cache-control": "no-cache"},
    )


async def _chunks(
    services: Services,
    job: Job,
    first: JobEvent,
    events: AsyncIterator[JobEvent],
    *,
    include_usage: bool,
) -> AsyncIterator[str]:
    finished = False
    try:
        event = first
        while True:
            for chunk in _event_chunks(event):
                if chunk.get("choices") or (include_usage and chunk.get("usage")):
                    yield sse_message(data=_without_usage(chunk, include_usage))
            if event.terminal:
                finished = True
                if event.type is not EventType.SUCCEEDED:
                    error = (event.data.get("error") or {}) | {"type": "server_error"}
                    yield sse_message(data={"error": error})
                yield "data: [DONE]\n\n"
                return
            event = await anext(aiter(events))
    finally:
        await _close(events)
        if not finished:
            # The caller went away mid-stream.
            await asyncio.shield(_abandon(services, job))


def _event_chunks(event: JobEvent) -> list[dict[str, Any]]:
    if event.type is EventType.DELTA:
        chunks: list[dict[str, Any]] = event.data.get("chunks", [])
        return chunks
    if event.type is EventType.SUCCEEDED and event.data.get("cached"):
        return chunks_from_completion(event.data["response"])
    return []


def _without_usage(chunk: dict[str, Any], include_usage: bool) -> dict[str, Any]:
    if include_usage or "usage" not in chunk:
        return chunk
    return {k: v for k, v in chunk.items() if k != "usage"}


async def _close(events: AsyncIterator[JobEvent]) -> None:
    close = getattr(events, "aclose", None)
    if close is not None:
        with contextlib.suppress(RuntimeError):
            await close()
