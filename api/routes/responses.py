"""``POST /v1/responses``: OpenAI's Responses API, stateless, served by any route.

OpenAI's SDK (``client.responses.create``, ``client.responses.stream``) works
against relayq for responses it does not store (``store: false``): ``model``
is a relayq route, whichever provider serves it. The request is translated to
the canonical chat request (:mod:`relayq.schemas.responses_translation`) and
made a sync job exactly as ``/v1/chat/completions`` makes one
(:mod:`api.sync_calls`); its answer is a ``response``, or with
``stream: true`` the Responses events
(:mod:`relayq.schemas.responses_stream`). Errors are in OpenAI's shape; one
that ends a stream is an ``error`` event, then ``response.failed``.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.deps import ChatCaller, ServicesDep
from api.errors import ERROR_RESPONSES, APIError
from api.sse import CompletionStream
from api.sync_calls import (
    JOB_HEADER,
    cached_event_stream,
    dialect_event_stream,
    first_delta,
    start_call,
    whole_answer,
)
from relayq.schemas.anthropic_translation import Untranslatable
from relayq.schemas.responses import ResponseObject, ResponsesRequest
from relayq.schemas.responses_stream import ResponsesEventStream
from relayq.schemas.responses_translation import (
    chat_body,
    echoed_fields,
    response_from_completion,
)

__all__ = ["router"]

router = APIRouter(tags=["responses"], responses=ERROR_RESPONSES)

_STREAMED: dict[int | str, dict[str, Any]] = {
    200: {
        "model": ResponseObject,
        "description": "A `response`; with `stream: true`, the Responses event stream.",
        "content": {"text/event-stream": {}},
    }
}


@router.post("/v1/responses", response_model=None, responses=_STREAMED)
async def create_response(
    body: ResponsesRequest, key: ChatCaller, services: ServicesDep, request: Request
) -> JSONResponse | CompletionStream:
    """Create a response, as OpenAI's Responses API does with ``store: false``
    (plus relayq's job options).

    The job behind it is in the ``x-relayq-job-id`` header, readable at
    ``/v1/jobs/{id}`` like any other (its request and response in the chat
    completions shape, the pipeline's own).
    """
    try:
        chat = chat_body(body)
    except Untranslatable as exc:
        raise APIError(400, f"Invalid '{exc.param}': {exc}.", param=exc.param) from exc
    if body.stream:
        # The usage comes in a last chunk only when asked: response.completed reports it.
        chat["stream_options"] = {"include_usage": True}
    echo = echoed_fields(body)
    call = await start_call(body=chat, caller=key, services=services, request=request)
    job_id = call.job.id
    if body.stream:
        created = int(time.time())
        stream = ResponsesEventStream(
            job_id=job_id, model=body.model, echo=echo, created_at=created
        )
        if call.job.cached:
            return cached_event_stream(call, stream)
        first = await first_delta(call)
        return dialect_event_stream(call, first, stream, stream.fail)
    completion = (call.job.response or {}) if call.job.cached else await whole_answer(call)
    answer = response_from_completion(completion, job_id=job_id, echo=echo)
    return JSONResponse(answer, headers={JOB_HEADER: job_id})
