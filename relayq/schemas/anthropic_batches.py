"""Anthropic Message Batches shapes: what ``/v1/messages/batches`` takes and answers.

A message batch is a relayq batch whose endpoint is ``/v1/messages``
(:mod:`relayq.batches.message_batches` maps one onto the other): each
request's ``params`` is a ``POST /v1/messages`` body, checked here as a
:class:`~relayq.schemas.anthropic_messages.MessagesRequest` so a bad one is
a 400 naming it (``requests[3].params.max_tokens``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from relayq.schemas.anthropic_messages import MessagesRequest

__all__ = [
    "MessageBatch",
    "MessageBatchCreate",
    "MessageBatchList",
    "MessageBatchRequest",
    "MessageBatchRequestCounts",
]


class MessageBatchRequest(BaseModel):
    custom_id: str = Field(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_-]+$")
    params: MessagesRequest


class MessageBatchCreate(BaseModel):
    """The body of ``POST /v1/messages/batches``."""

    requests: list[MessageBatchRequest] = Field(min_length=1)


class MessageBatchRequestCounts(BaseModel):
    processing: int = 0
    succeeded: int = 0
    errored: int = 0
    canceled: int = 0
    expired: int = 0


class MessageBatch(BaseModel):
    """A ``message_batch`` object; times are RFC 3339 strings."""

    id: str
    type: Literal["message_batch"] = "message_batch"
    processing_status: Literal["in_progress", "canceling", "ended"]
    request_counts: MessageBatchRequestCounts
    created_at: str
    expires_at: str
    ended_at: str | None = None
    cancel_initiated_at: str | None = None
    archived_at: str | None = None
    results_url: str | None = None
    """Where the results are, once the batch has ended."""


class MessageBatchList(BaseModel):
    """A page of message batches, newest first."""

    data: list[MessageBatch]
    has_more: bool
    first_id: str | None
    last_id: str | None

    @classmethod
    def of(cls, data: list[MessageBatch], *, has_more: bool) -> MessageBatchList:
        first = data[0].id if data else None
        last = data[-1].id if data else None
        return cls(data=data, has_more=has_more, first_id=first, last_id=last)
