"""``POST /v1/embeddings``: OpenAI's endpoint, served by the job pipeline.

The request becomes a high-priority job of kind ``embeddings`` and the caller
waits on its answer (:mod:`api.sync_calls`): OpenAI's embeddings ``list``,
with the job id in the ``x-relayq-job-id`` header, so the job can be read
later at ``/v1/jobs/{id}`` with its usage and cost. It needs the ``chat``
scope, as ``/v1/chat/completions`` does: both are OpenAI's sync calls.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.deps import ChatCaller, ServicesDep
from api.errors import ERROR_RESPONSES
from api.sync_calls import JOB_HEADER, start_call, whole_answer
from relayq.schemas.embeddings import EmbeddingRequest, EmbeddingResponse
from relayq.schemas.jobs import JobKind

__all__ = ["router"]

router = APIRouter(tags=["embeddings"], responses=ERROR_RESPONSES)


@router.post("/v1/embeddings", response_model=EmbeddingResponse)
async def create_embeddings(
    body: EmbeddingRequest, key: ChatCaller, services: ServicesDep, request: Request
) -> JSONResponse:
    """Create embeddings, exactly as OpenAI's API does (plus job options: ``priority``,
    ``metadata``, ``cache``...).

    A model with no deployment on a provider that serves embeddings answers 400
    (``model_not_supported``). The answer comes whole: embeddings do not stream.
    """
    call = await start_call(
        body=body.model_dump(mode="json", exclude_none=True),
        caller=key,
        services=services,
        request=request,
        kind=JobKind.EMBEDDINGS,
    )
    headers = {JOB_HEADER: call.job.id}
    if call.job.cached:
        return JSONResponse(call.job.response, headers=headers)
    return JSONResponse(await whole_answer(call), headers=headers)
