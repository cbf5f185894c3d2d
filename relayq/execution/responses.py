"""A responses job's call: natively where the deployment speaks Responses, else over chat.

A job of kind ``responses`` stores the caller's Responses request (OpenAI's
``/v1/responses`` body, ``store: false``). Each attempt asks the deployment
it runs on. An adapter that speaks Responses natively
(:attr:`~relayq.providers.base.Provider.speaks_responses`) is sent the request
as it came and its ``response`` is the job's answer as the vendor gave it,
streamed as the vendor's own events. Any other is sent the request translated
to a chat completion (:func:`relayq.schemas.responses_translation.chat_body`),
and its ``chat.completion`` is translated back
(:func:`~relayq.schemas.responses_translation.response_from_completion`);
streamed, its chunks go to the caller as a chat job's do, and the API writes
them as Responses events. Either way the stored answer is a ``response``
object, and its usage is relayq's (:func:`relayq.schemas.responses.job_usage`),
which cost, budgets, the usage ledger and rate limits read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from relayq.execution.deltas import EventPublisher
from relayq.providers.base import Provider
from relayq.providers.errors import InvalidRequest, MalformedResponse
from relayq.providers.responses_wire import FINAL_EVENTS, final_response
from relayq.schemas.anthropic_translation import Untranslatable
from relayq.schemas.chat import ChatCompletion, ChatCompletionRequest
from relayq.schemas.responses import ResponsesRequest, job_usage
from relayq.schemas.responses_translation import (
    chat_body,
    echoed_fields,
    response_from_completion,
)

__all__ = ["ResponseAnswer", "chat_request", "native_answer", "stream_native", "translated"]


@dataclass(frozen=True)
class ResponseAnswer:
    """A responses job's answer: the ``response`` object, its usage as relayq counts
    it, and the model that answered."""

    response: dict[str, Any]
    usage: dict[str, Any] | None
    model: str


def native_answer(response: dict[str, Any]) -> ResponseAnswer:
    """The vendor's own ``response``, as the job's answer."""
    return ResponseAnswer(
        response=response, usage=job_usage(response.get("usage")), model=str(response["model"])
    )


def chat_request(request: ResponsesRequest) -> ChatCompletionRequest:
    """``request`` as a chat completion, for a deployment that does not speak Responses;
    what chat cannot carry (a hosted tool, say) is the request's fault."""
    try:
        body = chat_body(request)
    except Untranslatable as exc:
        raise InvalidRequest(
            f"Invalid '{exc.param}': {exc} (this deployment does not speak Responses).",
            status_code=400,
        ) from exc
    body.pop("metadata", None)  # the job's and the response's, not the chat call's
    body.pop("stream", None)  # the executor decides
    return ChatCompletionRequest.model_validate(body)


def translated(
    completion: ChatCompletion, *, request: ResponsesRequest, job_id: str
) -> ResponseAnswer:
    """A ``chat.completion`` answering ``request`` as the ``response`` the API would
    have written of it."""
    whole = completion.model_dump(mode="json", exclude_none=True)
    response = response_from_completion(whole, job_id=job_id, echo=echoed_fields(request))
    usage = completion.usage.model_dump(mode="json") if completion.usage else None
    return ResponseAnswer(response=response, usage=usage, model=completion.model)


async def stream_native(
    provider: Provider, request: ResponsesRequest, *, model: str, events: EventPublisher
) -> ResponseAnswer:
    """The upstream's events to ``events`` as they come; the answer is the ``response``
    of the event that ends the stream (``response.completed`` or ``.incomplete``)."""
    stream = provider.stream_response(request, model=model)
    final: object = None
    try:
        async for event in stream:
            events.add(event)  # its send is queued now, before the next event is parsed
            if event.type in FINAL_EVENTS:
                final = event.data.get("response")
    except BaseException:
        await events.abandon()  # no event may follow the run's end
        raise
    finally:
        close = getattr(stream, "aclose", None)
        if close is not None:
            await close()
    await events.flush()
    if final is None:
        raise MalformedResponse(f"{provider.name}: the Responses stream carried no response")
    return native_answer(final_response(final, provider=provider.name))
