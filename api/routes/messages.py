"""``POST /v1/messages``: Anthropic's Messages API, served by any route.

Anthropic's SDK works against relayq unchanged: ``model`` is a relayq route,
whichever provider serves it. The request is translated to the canonical
chat request (:mod:`relayq.schemas.anthropic_translation`) and made a sync
job exactly as ``/v1/chat/completions`` makes one (:mod:`api.sync_calls`);
its answer is a ``message``, or with ``stream: true`` Anthropic's events
(:mod:`relayq.schemas.anthropic_stream`). The key may come as ``x-api-key``
(as Anthropic's SDK sends it) or as a bearer token, and every error is in
Anthropic's shape (``AnthropicErrorsRoute``), a stream's too (an ``error``
event).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.deps import MessagesCaller, ServicesDep
from api.errors import (
    ANTHROPIC_ERROR_RESPONSES,
    AnthropicErrorsRoute,
    APIError,
    anthropic_error_type,
)
from api.sse import CompletionStream
from api.sync_calls import (
    JOB_HEADER,
    STATUS_BY_CODE,
    cached_event_stream,
    dialect_event_stream,
    first_delta,
    start_call,
    whole_answer,
)
from relayq.schemas.anthropic_messages import MessagesRequest, MessagesResponse
from relayq.schemas.anthropic_stream import Event, MessageStream, error_event
from relayq.schemas.anthropic_translation import (
    Untranslatable,
    chat_body,
    message_from_completion,
    message_id,
)

__all__ = ["router"]

router = APIRouter(
    tags=["messages"], responses=ANTHROPIC_ERROR_RESPONSES, route_class=AnthropicErrorsRoute
)

_STREAMED: dict[int | str, dict[str, Any]] = {
    200: {
        "model": MessagesResponse,
        "description": "A `message`; with `stream: true`, Anthropic's event stream.",
        "content": {"text/event-stream": {}},
    }
}


@router.post("/v1/messages", response_model=None, responses=_STREAMED)
async def create_message(
    body: MessagesRequest, key: MessagesCaller, services: ServicesDep, request: Request
) -> JSONResponse | CompletionStream:
    """Create a message, as Anthropic's Messages API does (plus relayq's job options).

    The job behind it is in the ``x-relayq-job-id`` header, readable at
    ``/v1/jobs/{id}`` like any other (its request and response in OpenAI's
    shape, the pipeline's own).
    """
    try:
        chat = chat_body(body)
    except Untranslatable as exc:
        raise APIError(400, f"Invalid '{exc.param}': {exc}.", param=exc.param) from exc
    if body.stream:
        # The usage comes in a last chunk only when asked: message_delta reports it.
        chat["stream_options"] = {"include_usage": True}
    call = await start_call(body=chat, caller=key, services=services, request=request)
    job_id = call.job.id
    if body.stream:
        stream = MessageStream(message_id=message_id(job_id), model=body.model)
        if call.job.cached:
            return cached_event_stream(call, stream)
        first = await first_delta(call)
        return dialect_event_stream(call, first, stream, lambda error: [_error_event(error)])
    completion = (call.job.response or {}) if call.job.cached else await whole_answer(call)
    answer = message_from_completion(completion, job_id=job_id)
    return JSONResponse(answer, headers={JOB_HEADER: job_id})


def _error_event(error: dict[str, Any]) -> Event:
    """An OpenAI-shaped error that ends a stream, as Anthropic's ``error`` event."""
    code = str(error.get("code") or "")
    status = 503 if code == "job_connection_lost" else STATUS_BY_CODE.get(code, 500)
    return error_event(anthropic_error_type(status), str(error.get("message") or code))
