"""``POST /v1/chat/completions``: OpenAI's endpoint, served by the job pipeline.

The request becomes a high-priority job and the caller waits on its replies
(:mod:`api.sync_calls`): a ``chat.completion`` when it ends, or with
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

from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.deps import ChatCaller, ServicesDep
from api.errors import ERROR_RESPONSES
from api.sse import DONE, CompletionStream, sse_message
from api.sync_calls import JOB_HEADER, SyncCall, first_delta, sse_lines, start_call, whole_answer
from relayq.providers.assembly import chunks_from_completion
from relayq.schemas.chat import ChatCompletionRequest

__all__ = ["router"]

router = APIRouter(tags=["chat"], responses=ERROR_RESPONSES)


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
    call = await start_call(
        body=body.model_dump(mode="json", exclude_none=True),
        caller=key,
        services=services,
        request=request,
    )
    headers = {JOB_HEADER: call.job.id}
    if call.job.cached:
        return _cached(call, stream=bool(body.stream))
    if body.stream:
        first = await first_delta(call)
        return CompletionStream(
            sse_lines(call, first),
            media_type="text/event-stream",
            headers={**headers, "cache-control": "no-cache"},
        )
    return JSONResponse(await whole_answer(call), headers=headers)


def _cached(call: SyncCall, *, stream: bool) -> JSONResponse | CompletionStream:
    job = call.job
    headers = {JOB_HEADER: job.id}
    if not stream:
        return JSONResponse(job.response, headers=headers)

    async def chunks() -> AsyncIterator[str]:
        for chunk in chunks_from_completion(job.response or {}):
            yield sse_message(data=chunk)
        yield DONE

    return CompletionStream(chunks(), media_type="text/event-stream", headers=headers)
