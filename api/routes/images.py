"""``POST /v1/images/generations``: OpenAI's image generation, served by the job pipeline.

The request becomes a high-priority job of kind ``images`` and the caller
waits on its answer (:mod:`api.sync_calls`): OpenAI's ``ImagesResponse``,
with the job id in the ``x-relayq-job-id`` header, so the job can be read
later at ``/v1/jobs/{id}`` with its usage and cost. It needs the ``chat``
scope, as the other sync calls do. A model with no deployment on an adapter
that draws images (``openai``, ``azure_openai``, ``blackbox``, ``mock``)
answers 400 (``model_not_supported``).

Images the upstream answered as bytes are kept in the file storage by the
worker (:mod:`relayq.execution.image_files`); the job's answer references
them. This route answers each one as the caller asked: ``b64_json`` (the
default, as for OpenAI's GPT image models) with the bytes read back, or
``url`` with relayq's own URL of the file's content, readable by the same key
(``read`` scope). An image the upstream answered as a URL (DALL·E asked for
``url``, Blackbox) passes through as that URL. Every stored image also names
its ``file_id``.
"""

from __future__ import annotations

import base64
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.deps import ChatCaller, ServicesDep
from api.errors import ERROR_RESPONSES, APIError
from api.services import Services
from api.sync_calls import JOB_HEADER, start_call, whole_answer
from relayq.execution.image_files import content_path
from relayq.schemas.images import ImageGenerationRequest, ImagesResponse
from relayq.schemas.jobs import JobKind

__all__ = ["router"]

router = APIRouter(tags=["images"], responses=ERROR_RESPONSES)


async def _bytes_of(services: Services, file_id: str, job_id: str) -> bytes:
    try:
        return b"".join([chunk async for chunk in services.storage.read(file_id)])
    except FileNotFoundError:
        raise APIError(
            404,
            f"The image file '{file_id}' of job '{job_id}' is gone (deleted or expired).",
            code="file_not_found",
            headers={JOB_HEADER: job_id},
        ) from None


async def _written_answer(
    answer: dict[str, Any], *, as_url: bool, services: Services, request: Request, job_id: str
) -> dict[str, Any]:
    """The job's stored answer with each stored image as the caller asked: its relayq
    URL (``as_url``), else its bytes in base64."""
    data: list[Any] = []
    for item in answer.get("data") or []:
        file_id = item.get("file_id") if isinstance(item, dict) else None
        if not isinstance(file_id, str):
            data.append(item)
            continue
        image = {key: value for key, value in item.items() if key != "url"}
        if as_url:
            image["url"] = str(request.base_url).rstrip("/") + content_path(file_id)
        else:
            content = await _bytes_of(services, file_id, job_id)
            image["b64_json"] = base64.b64encode(content).decode("ascii")
        data.append(image)
    return {**answer, "data": data}


@router.post("/v1/images/generations", response_model=ImagesResponse)
async def create_images(
    body: ImageGenerationRequest, key: ChatCaller, services: ServicesDep, request: Request
) -> JSONResponse:
    """Create images from a prompt, as OpenAI's API does (plus job options: ``priority``,
    ``metadata``, ``cache``...). Edits and variations are not served."""
    call = await start_call(
        body=body.model_dump(mode="json", exclude_none=True),
        caller=key,
        services=services,
        request=request,
        kind=JobKind.IMAGES,
    )
    job_id = call.job.id
    stored = (call.job.response if call.job.cached else await whole_answer(call)) or {}
    answer = await _written_answer(
        stored,
        as_url=body.response_format == "url",
        services=services,
        request=request,
        job_id=job_id,
    )
    return JSONResponse(answer, headers={JOB_HEADER: job_id})
