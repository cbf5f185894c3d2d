"""``POST /v1/chat/completions``: OpenAI's endpoint, served by the job pipeline.

The request becomes a high-priority job and the caller waits on its replies
(:mod:`relayq.direct.replies`): a ``chat.completion`` when it ends, or with
``stream: true`` its chunks as they come, ending with ``data: [DONE]``. The
job id is in the ``x-relayq-job-id`` header, so the job can be looked up
later. If the caller goes away first, the job is cancelled
(``RELAYQ_CHAT__CANCEL_ON_DISCONNECT``).

A streamed answer never mixes attempts: an attempt that fails before any of
its text went out is retried (or falls back) out of the caller's sight; once
some of its text went out, the stream ends with an ``attempt_interrupted``
error naming the job, whose final answer stays readable at ``/v1/jobs/{id}``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from api.controls import checked_controls
from api.deps import ChatCaller, ServicesDep, key_budget, key_limits, require_model
from api.errors import ERROR_RESPONSES, APIError, error_body
from api.observability import request_id_of
from api.services import Services
from api.sse import DONE, CompletionStream, sse_message
from relayq.direct.replies import Reply
from relayq.events.log import EventType
from relayq.ids import new_id
from relayq.providers.assembly import chunks_from_completion
from relayq.schemas.chat import ChatCompletionRequest
from relayq.schemas.jobs import JobCreate
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


def _failure(kind: str, data: dict[str, Any], call: _Call) -> JSONResponse:
    job_id, request_id = call.job.id, call.request_id
    headers = {JOB_HEADER: job_id}
    if kind == EventType.CANCELLED.value:
        message = f"Job '{job_id}' was cancelled."
        body = error_body(409, message, code="job_cancelled", request_id=request_id)
        return JSONResponse(body, status_code=409, headers=headers)
    if kind == EventType.EXPIRED.value:
        message = f"Job '{job_id}' expired before it ran."
        body = error_body(408, message, code="job_expired", request_id=request_id)
        return JSONResponse(body, status_code=408, headers=headers)
    error: dict[str, Any] = data.get("error") or {}
    code = str(error.get("code", "provider_error"))
    status = _STATUS_BY_CODE.get(code, 502)
    retry_after = error.get("retry_after")
    if status == 429 and retry_after is not None:
        headers["retry-after"] = str(max(1, round(float(retry_after))))
    message = str(error.get("message") or "The provider failed to complete the request.")
    body = error_body(status, message, code=code, request_id=request_id)
    return JSONResponse(body, status_code=status, headers=headers)


def _job_body(body: dict[str, Any], services: Services) -> JobCreate:
    if "priority" not in body:
        body = {**body, "priority": services.settings.chat.priority}
    try:
        job = JobCreate.model_validate(body)
    except ValidationError as exc:
        errors = [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
        raise RequestValidationError(errors) from exc
    checked_controls(job)
    return job


@dataclass
class _Call:
    """One caller waiting on its job's replies."""

    services: Services
    request: Request
    job: Job
    direct: bool
    replies: asyncio.Queue[Reply | Exception]

    @property
    def request_id(self) -> str | None:
        return request_id_of(self.request.scope)

    def done(self) -> None:
        """Stop collecting the job's replies."""
        self.services.replies.forget(self.job.id)

    async def abandon(self) -> None:
        if self.services.settings.chat.cancel_on_disconnect:
            await self.services.intake.abandon(
                key_id=self.job.key_id, job_id=self.job.id, direct=self.direct
            )


@router.post("/v1/chat/completions", response_model=None)
async def create_chat_completion(
    body: ChatCompletionRequest, key: ChatCaller, services: ServicesDep, request: Request
) -> JSONResponse | CompletionStream:
    """Create a chat completion, exactly as OpenAI's API does (plus job options).

    The job's runs answer this process directly (its reply stream): deltas as
    they come, then the outcome. A plain call goes to its worker in its
    message, with no SQL before or after the provider call (the worker
    stores the job's row in its next tick).
    """
    require_model(key, body.model, services.router)
    job_body = _job_body(body.model_dump(mode="json", exclude_none=True), services)
    job_id = new_id("job")
    hub = services.replies
    replies = hub.expect(job_id)
    try:
        submitted = await services.intake.submit(
            key_id=key.id,
            body=job_body,
            limits=key_limits(key, services.settings),
            reply_to=hub.stream,
            job_id=job_id,
            request_id=request_id_of(request.scope),
            budget=key_budget(key),
        )
    except BaseException:  # an unknown model, the queue down (api/errors.py answers them)
        hub.forget(job_id)
        raise
    call = _Call(services, request, submitted.job, submitted.direct, replies)
    if submitted.job.cached:
        call.done()
        return _cached(call, stream=bool(body.stream))
    if body.stream:
        return await _streaming(call, body)
    try:
        return await _whole(call)
    finally:
        call.done()


def _cached(call: _Call, *, stream: bool) -> JSONResponse | CompletionStream:
    job = call.job
    headers = {JOB_HEADER: job.id}
    if not stream:
        return JSONResponse(job.response, headers=headers)

    async def chunks() -> AsyncIterator[str]:
        for chunk in chunks_from_completion(job.response or {}):
            yield sse_message(data=chunk)
        yield DONE

    return CompletionStream(chunks(), media_type="text/event-stream", headers=headers)


def _lost(call: _Call, exc: Exception) -> APIError:
    return APIError(
        503,
        f"The connection to job '{call.job.id}' was lost ({type(exc).__name__}); the job "
        f"goes on: GET /v1/jobs/{call.job.id}.",
        code="job_connection_lost",
    )


async def _next(call: _Call) -> Reply:
    """The job's next reply; a lost Redis is a 503 that names the job, not a 500."""
    reply = await call.replies.get()
    if isinstance(reply, Exception):
        raise _lost(call, reply)
    return reply


async def _next_decisive(call: _Call, *, stream: bool) -> Reply:
    """The next reply that decides the answer: the outcome, or a delta when streaming."""
    while True:
        reply = await _next(call)
        if reply.terminal or (stream and reply.type == "delta"):
            return reply


async def _wait(call: _Call, *, stream: bool) -> Reply | None:
    """The next decisive reply, or None if the caller left (the job is then cancelled)."""
    settings = call.services.settings.chat
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.timeout_seconds
    while True:
        # In this task, not another: the reply wakes the handler itself. A reply
        # that comes as the wait times out stays queued for the next wait.
        try:
            async with asyncio.timeout(0.25):
                return await _next_decisive(call, stream=stream)
        except TimeoutError:
            pass
        if await call.request.is_disconnected():
            await call.abandon()
            return None
        if loop.time() > deadline:
            raise APIError(
                504,
                f"Job '{call.job.id}' did not finish within {settings.timeout_seconds} s; "
                f"it goes on: GET /v1/jobs/{call.job.id}.",
                code="timeout",
            )


def _gone(call: _Call) -> JSONResponse:
    """For a caller that already left: nobody reads it, but the log shows a 499."""
    body = error_body(
        499,
        "The client closed the request.",
        code="client_closed_request",
        request_id=call.request_id,
    )
    return JSONResponse(body, status_code=499, headers={JOB_HEADER: call.job.id})


async def _whole(call: _Call) -> JSONResponse:
    reply = await _wait(call, stream=False)
    if reply is None:
        return _gone(call)
    if reply.type != EventType.SUCCEEDED.value or not reply.data.get("response"):
        return _failure(reply.type, reply.data, call)
    return JSONResponse(reply.data["response"], headers={JOB_HEADER: call.job.id})


async def _streaming(call: _Call, body: ChatCompletionRequest) -> JSONResponse | CompletionStream:
    # Wait for the first delta before answering, so a job that fails first
    # still gets a proper HTTP error status. Attempts that fail before any of
    # their text went out are retried out of the caller's sight.
    try:
        first = await _wait(call, stream=True)
    except BaseException:
        call.done()
        raise
    if first is None:
        call.done()
        return _gone(call)
    if first.terminal and first.type != EventType.SUCCEEDED.value:
        call.done()
        return _failure(first.type, first.data, call)
    return CompletionStream(
        _chunks(call, first),
        media_type="text/event-stream",
        headers={JOB_HEADER: call.job.id, "cache-control": "no-cache"},
    )


async def _chunks(call: _Call, first: Reply) -> AsyncIterator[str | bytes]:
    finished = False
    written: object = None  # the run whose text went out (deltas name their run)
    try:
        reply = first
        while True:
            if reply.type == "delta":
                run = reply.data.get("run")
                if written is not None and run != written:
                    # Another run's text, come before the failed run's attempt_failed
                    # (the next run may start on another worker): never one answer.
                    finished = True
                    yield sse_message(data={"error": _interrupted(call, None)})
                    yield DONE
                    return
                if reply.sse:  # rendered for this caller by the worker: written as it is
                    written = run
                    yield reply.sse
            elif reply.type == EventType.ATTEMPT_FAILED.value and reply.data.get("deltas_sent"):
                # This attempt's text already went out: another attempt's must not
                # follow it as one answer. The job goes on; its answer stays readable.
                finished = True
                attempt = reply.data.get("attempt")
                yield sse_message(data={"error": _interrupted(call, attempt)})
                yield DONE
                return
            elif reply.terminal:
                finished = True
                if reply.type != EventType.SUCCEEDED.value:
                    error = (reply.data.get("error") or {}) | {
                        "type": "server_error",
                        "request_id": call.request_id,
                    }
                    yield sse_message(data={"error": error})
                yield DONE
                return
            try:
                reply = await _next(call)
            except APIError as lost:
                finished = True
                error = error_body(503, lost.message, code=lost.code, request_id=call.request_id)
                yield sse_message(data=error)
                yield DONE
                return
    finally:
        call.done()
        if not finished:
            # The caller went away mid-stream.
            await asyncio.shield(call.abandon())


def _interrupted(call: _Call, attempt: object) -> dict[str, Any]:
    job_id = call.job.id
    which = f"Attempt {attempt}" if attempt is not None else "An attempt"
    return {
        "message": (
            f"{which} of job '{job_id}' failed after part of its answer was sent; "
            f"the job goes on with another attempt: GET /v1/jobs/{job_id} for its answer."
        ),
        "type": "server_error",
        "param": None,
        "code": "attempt_interrupted",
        "request_id": call.request_id,
        "job_id": job_id,
    }
