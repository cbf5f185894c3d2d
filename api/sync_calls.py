"""A sync call through the job pipeline: the caller waits on its job's replies.

``POST /v1/chat/completions``, ``POST /v1/messages``, ``POST /v1/embeddings``,
``POST /v1/completions`` and ``POST /v1/images/generations`` all make a
high-priority job of their request and wait on its replies
(:mod:`relayq.direct.replies`); they differ only in how they write the answer.
This module is what they share: submitting the job (:func:`start_call`),
waiting for its whole answer (:func:`whole_answer`) or its first delta
(:func:`first_delta`), then its deltas (:func:`stream_deltas`), and the
failures as :class:`~api.errors.APIError` (each route's error dialect writes
them).

The job id is in the ``x-relayq-job-id`` header, so the job can be looked up
later. If the caller goes away first, the job is cancelled
(``RELAYQ_CHAT__CANCEL_ON_DISCONNECT``). A streamed answer never mixes
attempts: an attempt that fails before any of its text went out is retried
(or falls back) out of the caller's sight; once some of its text went out,
the stream ends with an ``attempt_interrupted`` error naming the job, whose
final answer stays readable at ``/v1/jobs/{id}``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from api.controls import checked_controls
from api.deps import key_budget, key_limits, require_model
from api.errors import APIError, error_body
from api.observability import request_id_of
from api.services import Services
from api.sse import DONE, CompletionStream, sse_message
from relayq.auth.caller import Caller
from relayq.direct.replies import Reply
from relayq.events.log import EventType
from relayq.ids import new_id
from relayq.providers.assembly import chunks_from_completion
from relayq.schemas.chunk_events import ChunkEvents, SSEEvent, chunks_of
from relayq.schemas.jobs import (
    CompletionJobCreate,
    EmbeddingJobCreate,
    ImageJobCreate,
    JobCreate,
    JobCreateBody,
    JobKind,
    ResponsesJobCreate,
)
from relayq.store.models import Job

__all__ = [
    "JOB_HEADER",
    "STATUS_BY_CODE",
    "StreamBroken",
    "SyncCall",
    "cached_event_stream",
    "dialect_event_stream",
    "events_stream",
    "first_delta",
    "relayed_event_stream",
    "sse_lines",
    "start_call",
    "stream_deltas",
    "whole_answer",
]

JOB_HEADER = "x-relayq-job-id"

STATUS_BY_CODE = {
    "invalid_request": 400,
    "model_not_found": 404,
    "rate_limited": 429,
    "provider_timeout": 504,
}
"""The HTTP status a failed job's error answers with; anything else is a 502."""


@dataclass
class SyncCall:
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


@dataclass(frozen=True)
class StreamBroken:
    """Why a stream ends without its answer: OpenAI's error fields (message, type,
    code...), the last item :func:`stream_deltas` yields when it is not a success."""

    error: dict[str, Any]


_BODIES: dict[JobKind, type[JobCreateBody]] = {
    JobKind.CHAT: JobCreate,
    JobKind.EMBEDDINGS: EmbeddingJobCreate,
    JobKind.COMPLETIONS: CompletionJobCreate,
    JobKind.IMAGES: ImageJobCreate,
    JobKind.RESPONSES: ResponsesJobCreate,
}


def _job_body(body: dict[str, Any], services: Services, kind: JobKind) -> JobCreateBody:
    if "priority" not in body:
        body = {**body, "priority": services.settings.chat.priority}
    try:
        job = _BODIES[kind].model_validate({**body, "kind": kind.value})
    except ValidationError as exc:
        errors = [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
        raise RequestValidationError(errors) from exc
    checked_controls(job)
    return job


async def start_call(
    *,
    body: dict[str, Any],
    caller: Caller,
    services: Services,
    request: Request,
    kind: JobKind = JobKind.CHAT,
) -> SyncCall:
    """Submit ``body`` (a chat completions body, or with ``kind`` an embeddings body, job
    options included) as a sync job.

    The job's runs answer this process directly (its reply stream): deltas as
    they come, then the outcome. A plain call goes to its worker in its
    message, with no SQL before or after the provider call (the worker stores
    the job's row in its next tick). A cached answer is in ``call.job``
    already (``job.cached``): the call is then done.
    """
    job_body = _job_body(body, services, kind)
    require_model(caller, job_body.model, services.router)
    job_id = new_id("job")
    hub = services.replies
    replies = hub.expect(job_id)
    try:
        submitted = await services.intake.submit(
            key_id=caller.id,
            body=job_body,
            limits=key_limits(caller, services.settings),
            reply_to=hub.stream,
            job_id=job_id,
            request_id=request_id_of(request.scope),
            budget=key_budget(caller),
        )
    except BaseException:  # an unknown model, the queue down (api/errors.py answers them)
        hub.forget(job_id)
        raise
    call = SyncCall(services, request, submitted.job, submitted.direct, replies)
    if submitted.job.cached:
        call.done()
    return call


def job_failure(kind: str, data: dict[str, Any], job_id: str) -> APIError:
    """A job that ended without an answer, as the error its caller gets."""
    headers = {JOB_HEADER: job_id}
    if kind == EventType.CANCELLED.value:
        return APIError(
            409, f"Job '{job_id}' was cancelled.", code="job_cancelled", headers=headers
        )
    if kind == EventType.EXPIRED.value:
        return APIError(
            408, f"Job '{job_id}' expired before it ran.", code="job_expired", headers=headers
        )
    error: dict[str, Any] = data.get("error") or {}
    code = str(error.get("code", "provider_error"))
    status = STATUS_BY_CODE.get(code, 502)
    retry_after = error.get("retry_after")
    if status == 429 and retry_after is not None:
        headers["retry-after"] = str(max(1, round(float(retry_after))))
    message = str(error.get("message") or "The provider failed to complete the request.")
    return APIError(status, message, code=code, headers=headers)


def _lost(call: SyncCall, exc: Exception) -> APIError:
    return APIError(
        503,
        f"The connection to job '{call.job.id}' was lost ({type(exc).__name__}); the job "
        f"goes on: GET /v1/jobs/{call.job.id}.",
        code="job_connection_lost",
    )


def _gone(job: Job) -> APIError:
    """For a caller that already left: nobody reads it, but the log shows a 499."""
    return APIError(
        499,
        "The client closed the request.",
        code="client_closed_request",
        headers={JOB_HEADER: job.id},
    )


async def _next(call: SyncCall) -> Reply:
    """The job's next reply; a lost Redis is a 503 that names the job, not a 500."""
    reply = await call.replies.get()
    if isinstance(reply, Exception):
        raise _lost(call, reply)
    return reply


async def _next_decisive(call: SyncCall, *, stream: bool) -> Reply:
    """The next reply that decides the answer: the outcome, or a delta when streaming."""
    while True:
        reply = await _next(call)
        if reply.terminal or (stream and reply.type == "delta"):
            return reply


async def _wait(call: SyncCall, *, stream: bool) -> Reply:
    """The next decisive reply; a caller that left raises the 499 (the job is cancelled)."""
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
            raise _gone(call.job)
        if loop.time() > deadline:
            raise APIError(
                504,
                f"Job '{call.job.id}' did not finish within {settings.timeout_seconds} s; "
                f"it goes on: GET /v1/jobs/{call.job.id}.",
                code="timeout",
            )


async def whole_answer(call: SyncCall) -> dict[str, Any]:
    """The job's answer (a ``chat.completion``, an embeddings ``list``, a
    ``text_completion``); its failure
    raised as an :class:`APIError`."""
    try:
        reply = await _wait(call, stream=False)
    finally:
        call.done()
    if reply.type != EventType.SUCCEEDED.value or not reply.data.get("response"):
        raise job_failure(reply.type, reply.data, call.job.id)
    response: dict[str, Any] = reply.data["response"]
    return response


async def first_delta(call: SyncCall) -> Reply:
    """The first reply of a streamed answer, before any of it is written.

    Waiting for it lets a job that fails first still get a proper HTTP error
    status. Attempts that fail before any of their text went out are retried
    out of the caller's sight. A failure raises (the call is then done).
    """
    try:
        first = await _wait(call, stream=True)
    except BaseException:
        call.done()
        raise
    if first.terminal and first.type != EventType.SUCCEEDED.value:
        call.done()
        raise job_failure(first.type, first.data, call.job.id)
    return first


async def stream_deltas(call: SyncCall, first: Reply) -> AsyncGenerator[Reply | StreamBroken, None]:
    """The deltas to write, from ``first`` on; a :class:`StreamBroken` last if the
    answer will not come whole. Close it (``contextlib.aclosing``) when done:
    a caller gone mid-stream has its job abandoned."""
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
                    yield StreamBroken(_interrupted(call, None))
                    return
                if reply.sse:  # rendered for this caller by the worker
                    written = run
                    yield reply
            elif reply.type == EventType.ATTEMPT_FAILED.value and reply.data.get("deltas_sent"):
                # This attempt's text already went out: another attempt's must not
                # follow it as one answer. The job goes on; its answer stays readable.
                finished = True
                yield StreamBroken(_interrupted(call, reply.data.get("attempt")))
                return
            elif reply.terminal:
                finished = True
                if reply.type != EventType.SUCCEEDED.value:
                    error = reply.data.get("error") or {}
                    yield StreamBroken(
                        error | {"type": "server_error", "request_id": call.request_id}
                    )
                return
            try:
                reply = await _next(call)
            except APIError as lost:
                finished = True
                body = error_body(503, lost.message, code=lost.code, request_id=call.request_id)
                yield StreamBroken(body["error"])
                return
    finally:
        call.done()
        if not finished:
            # The caller went away mid-stream.
            await asyncio.shield(call.abandon())


async def sse_lines(call: SyncCall, first: Reply) -> AsyncIterator[str | bytes]:
    """A streamed answer's ``data:`` lines as its caller gets them, from ``first`` on,
    an ``{"error": ...}`` event if it breaks, then ``data: [DONE]``."""
    async with aclosing(stream_deltas(call, first)) as items:
        async for item in items:
            if isinstance(item, StreamBroken):
                yield sse_message(data={"error": item.error})
                break
            assert item.sse is not None
            yield item.sse
    yield DONE


def _interrupted(call: SyncCall, attempt: object) -> dict[str, Any]:
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


def _events_text(events: Iterable[SSEEvent]) -> str:
    return "".join(sse_message(event=name, data=data) for name, data in events)


def _event_stream(text: AsyncIterator[str], call: SyncCall) -> CompletionStream:
    headers = {JOB_HEADER: call.job.id, "cache-control": "no-cache"}
    return CompletionStream(text, media_type="text/event-stream", headers=headers)


def cached_event_stream(call: SyncCall, stream: ChunkEvents) -> CompletionStream:
    """A cached answer (``call.job.response``) streamed as ``stream``'s dialect's events."""

    async def once() -> AsyncIterator[str]:
        completion = call.job.response or {}
        events = [e for chunk in chunks_from_completion(completion) for e in stream.feed(chunk)]
        yield _events_text(events + stream.finish())

    return _event_stream(once(), call)


def dialect_event_stream(
    call: SyncCall,
    first: Reply,
    stream: ChunkEvents,
    broken: Callable[[dict[str, Any]], list[SSEEvent]],
) -> CompletionStream:
    """The job's deltas, from ``first`` on, as ``stream``'s dialect's events (an API
    other than chat completions: Anthropic's Messages, OpenAI's Responses); a stream
    that ends without its answer ends with ``broken(error)``'s events."""

    async def text() -> AsyncIterator[str]:
        async with aclosing(stream_deltas(call, first)) as items:
            async for item in items:
                if isinstance(item, StreamBroken):
                    yield _events_text(broken(item.error))
                    return
                assert item.sse is not None
                chunks = chunks_of(item.sse)
                piece = _events_text(event for chunk in chunks for event in stream.feed(chunk))
                if piece:
                    yield piece
        yield _events_text(stream.finish())

    return _event_stream(text(), call)


def events_stream(call: SyncCall, events: list[SSEEvent]) -> CompletionStream:
    """``events``, all known already (a cached answer's), as the job's stream."""

    async def once() -> AsyncIterator[str]:
        yield _events_text(events)

    return _event_stream(once(), call)


def relayed_event_stream(
    call: SyncCall,
    first: Reply,
    stream: ChunkEvents,
    broken: Callable[[dict[str, Any]], list[SSEEvent]],
) -> CompletionStream:
    """As :func:`dialect_event_stream`, but a run whose deltas are events of the dialect
    already (``"events": true``: a native Responses run's, as its upstream sent them) is
    written as it came, its own last event ending the stream."""

    async def text() -> AsyncIterator[str | bytes]:
        relayed = False
        async with aclosing(stream_deltas(call, first)) as items:
            async for item in items:
                if isinstance(item, StreamBroken):
                    ended = [_error_event(item.error)] if relayed else broken(item.error)
                    yield _events_text(ended)
                    return
                assert item.sse is not None
                if item.data.get("events"):
                    relayed = True
                    yield item.sse
                    continue
                chunks = chunks_of(item.sse)
                piece = _events_text(event for chunk in chunks for event in stream.feed(chunk))
                if piece:
                    yield piece
        if not relayed:
            yield _events_text(stream.finish())

    return CompletionStream(
        text(),
        media_type="text/event-stream",
        headers={JOB_HEADER: call.job.id, "cache-control": "no-cache"},
    )


def _error_event(error: dict[str, Any]) -> SSEEvent:
    """An ``error`` event ending a stream whose upstream's own events went out."""
    message = str(error.get("message") or "The response failed.")
    data = {"code": error.get("code"), "message": message, "param": error.get("param")}
    return "error", {"type": "error", "sequence_number": 0, **data}
