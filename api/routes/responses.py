"""``POST /v1/responses``: OpenAI's Responses API, stateless, served by any route.

OpenAI's SDK (``client.responses.create``, ``client.responses.stream``) works
against relayq for responses it does not store (``store: false``): ``model``
is a relayq route, whichever provider serves it. The request is made a sync
job of kind ``responses`` (:mod:`api.sync_calls`), which each attempt serves
natively on a deployment that speaks Responses, else over chat completions
(:mod:`relayq.execution.responses`); its answer is the ``response`` the job
stored. With ``stream: true``, a native run's events are relayed as the
upstream sent them, and a run over chat has its chunks written as Responses
events here (:mod:`relayq.schemas.responses_stream`). Errors are in OpenAI's
shape; one that ends a stream is an ``error`` event (then ``response.failed``
when relayq wrote the stream's events).

What needs state relayq does not keep (``store: true``,
``previous_response_id``, ``conversation``, ``background``, ``prompt``) is
refused on every route. What only the native path carries (a hosted tool such
as ``web_search``) is refused up front on a route none of whose deployments
speak Responses; on a mixed route, an attempt that falls back to a chat-only
deployment fails with ``invalid_request`` instead.
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
    events_stream,
    first_delta,
    relayed_event_stream,
    start_call,
    whole_answer,
)
from relayq.schemas.anthropic_translation import Untranslatable
from relayq.schemas.jobs import JobKind
from relayq.schemas.responses import ResponseObject, ResponsesRequest
from relayq.schemas.responses_stream import ResponsesEventStream, events_of_response
from relayq.schemas.responses_translation import chat_body, echoed_fields, refuse_state

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

    The job behind it (kind ``responses``) is in the ``x-relayq-job-id`` header,
    readable at ``/v1/jobs/{id}`` like any other, its request and response in the
    Responses shape.
    """
    try:
        refuse_state(body)
        if not services.router.speaks_responses(body.model):
            chat_body(body)  # served over chat only: what chat cannot carry is refused now
    except Untranslatable as exc:
        raise APIError(400, f"Invalid '{exc.param}': {exc}.", param=exc.param) from exc
    job_body = body.model_dump(mode="json", exclude_none=True)
    call = await start_call(
        body=job_body, caller=key, services=services, request=request, kind=JobKind.RESPONSES
    )
    job_id = call.job.id
    if body.stream:
        if call.job.cached:
            return events_stream(call, events_of_response(call.job.response or {}))
        stream = ResponsesEventStream(
            job_id=job_id, model=body.model, echo=echoed_fields(body), created_at=int(time.time())
        )
        first = await first_delta(call)
        return relayed_event_stream(call, first, stream, stream.fail)
    answer = (call.job.response or {}) if call.job.cached else await whole_answer(call)
    return JSONResponse(answer, headers={JOB_HEADER: job_id})
