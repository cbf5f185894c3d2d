"""``POST /v1/completions``: OpenAI's legacy completions, served by the job pipeline.

The request becomes a high-priority job of kind ``completions`` and the caller
waits on its answer (:mod:`api.sync_calls`): the upstream's
``text_completion``, passed through, with the job id in the
``x-relayq-job-id`` header. Only the adapters that speak OpenAI's wire format
to servers that still serve the endpoint pass it on (``openai``,
``openai_compatible``, ``azure_openai``); a model with no deployment on one
answers 400 (``model_not_supported``). It needs the ``chat`` scope. Streaming
(``stream: true``) is refused with 400: relayq does not stream these yet.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.deps import ChatCaller, ServicesDep
from api.errors import ERROR_RESPONSES
from api.sync_calls import JOB_HEADER, start_call, whole_answer
from relayq.schemas.completions import TextCompletion, TextCompletionRequest
from relayq.schemas.jobs import JobKind

__all__ = ["router"]

router = APIRouter(tags=["completions"], responses=ERROR_RESPONSES)


@router.post("/v1/completions", response_model=TextCompletion)
async def create_completion(
    body: TextCompletionRequest, key: ChatCaller, services: ServicesDep, request: Request
) -> JSONResponse:
    """Create a legacy completion, passed through to an OpenAI-compatible upstream (plus
    job options: ``priority``, ``metadata``, ``cache``...)."""
    call = await start_call(
        body=body.model_dump(mode="json", exclude_none=True),
        caller=key,
        services=services,
        request=request,
        kind=JobKind.COMPLETIONS,
    )
    headers = {JOB_HEADER: call.job.id}
    if call.job.cached:
        return JSONResponse(call.job.response, headers=headers)
    return JSONResponse(await whole_answer(call), headers=headers)
