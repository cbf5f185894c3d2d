"""``POST /v1/completions``: OpenAI's legacy completions, served by the job pipeline.

The request becomes a high-priority job of kind ``completions`` and the caller
waits on its replies (:mod:`api.sync_calls`): the upstream's
``text_completion``, passed through, or with ``stream: true`` its chunks as
the upstream sent them, ending with ``data: [DONE]``; the job id is in the
``x-relayq-job-id`` header. Only the adapters that speak OpenAI's wire format
to servers that still serve the endpoint pass it on (``openai``,
``openai_compatible``, ``azure_openai``); a model with no deployment on one
answers 400 (``model_not_supported``). It needs the ``chat`` scope.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.deps import ChatCaller, ServicesDep
from api.errors import ERROR_RESPONSES
from api.sse import DONE, CompletionStream
from api.sync_calls import JOB_HEADER, SyncCall, first_delta, sse_lines, start_call, whole_answer
from relayq.providers.text_stream import text_chunks
from relayq.schemas.completions import TextCompletion, TextCompletionRequest
from relayq.schemas.jobs import JobKind

__all__ = ["router"]

router = APIRouter(tags=["completions"], responses=ERROR_RESPONSES)


@router.post("/v1/completions", response_model=TextCompletion)
async def create_completion(
    body: TextCompletionRequest, key: ChatCaller, services: ServicesDep, request: Request
) -> JSONResponse | CompletionStream:
    """Create a legacy completion, passed through to an OpenAI-compatible upstream, plain
    or streamed (plus job options: ``priority``, ``metadata``, ``cache``...)."""
    call = await start_call(
        body=body.model_dump(mode="json", exclude_none=True),
        caller=key,
        services=services,
        request=request,
        kind=JobKind.COMPLETIONS,
    )
    headers = {JOB_HEADER: call.job.id}
    if call.job.cached:
        usage = bool((body.stream_options or {}).get("include_usage"))
        return _cached(call, stream=bool(body.stream), include_usage=usage)
    if body.stream:
        first = await first_delta(call)
        return CompletionStream(
            sse_lines(call, first),
            media_type="text/event-stream",
            headers={**headers, "cache-control": "no-cache"},
        )
    return JSONResponse(await whole_answer(call), headers=headers)


def _cached(
    call: SyncCall, *, stream: bool, include_usage: bool
) -> JSONResponse | CompletionStream:
    job = call.job
    headers = {JOB_HEADER: job.id}
    if not stream:
        return JSONResponse(job.response, headers=headers)

    async def chunks() -> AsyncIterator[str]:
        for chunk in text_chunks(job.response or {"choices": []}):
            if chunk.choices or include_usage:  # the usage chunk only when asked, as OpenAI
                yield f"data: {chunk.wire}\n\n"
        yield DONE

    return CompletionStream(chunks(), media_type="text/event-stream", headers=headers)
