"""``GET /v1/jobs/{id}/events``: a job's events as server-sent events.

Replays from the start, or from ``Last-Event-ID`` (or ``?after=``), then
follows live; event ids are the stream ids; comments keep idle connections
open; the stream ends after the terminal event. A finished job whose events
have expired replays its terminal event from SQL.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse

from api.deps import ReadCaller, ServicesDep
from api.errors import ERROR_RESPONSES, APIError, job_not_found
from api.services import Services
from api.sse import HEARTBEAT
from relayq.events.log import EventType, JobEvent, event_frame, terminal_data
from relayq.schemas.jobs import TERMINAL_STATUSES, JobStatus
from relayq.store.jobs import get_job

__all__ = ["router"]

router = APIRouter(tags=["jobs"], responses=ERROR_RESPONSES)

_STREAM_ID = re.compile(r"[0-9]+-[0-9]+")  # ASCII digits: \d would take "٣-0"
_SQL_CHECK_SECONDS = 5.0
_RETRY = b"retry: 3000\n"
_HEARTBEAT = HEARTBEAT.encode()
_SSE = {"content-type": "text/event-stream", "cache-control": "no-cache", "x-accel-buffering": "no"}


def _stream_id(text: str) -> bool:
    """Whether ``text`` is a Redis stream id: two 64-bit numbers (Redis refuses larger ones
    mid-stream, after the answer started)."""
    if _STREAM_ID.fullmatch(text) is None:
        return False
    return all(len(part) <= 20 and int(part) < 2**64 for part in text.split("-"))


@router.get(
    "/v1/jobs/{job_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "The job's events."}},
)
async def job_events(
    job_id: str,
    key: ReadCaller,
    services: ServicesDep,
    last_event_id: Annotated[str | None, Header()] = None,
    after: Annotated[str | None, Query(description="Resume after this event id.")] = None,
) -> StreamingResponse:
    """The job's events from the start (or after an id), then live, until it ends."""
    position = last_event_id or after or "0-0"
    if not _stream_id(position):
        raise APIError(
            400,
            f"Invalid event id '{position}': expected an id such as '1700000000000-0'.",
            code="invalid_event_id",
            param="Last-Event-ID" if last_event_id else "after",
        )
    # A short session of its own: a dependency's session would stay checked out
    # for the whole stream, and hundreds of followers would drain the pool.
    async with services.database.session() as session:
        job = await get_job(session, job_id=job_id, key_id=key.id)
    if job is None:
        raise job_not_found(job_id)
    return StreamingResponse(
        _stream(services, job_id=job_id, key_id=key.id, position=position), headers=_SSE
    )


async def _stream(
    services: Services, *, job_id: str, key_id: str, position: str
) -> AsyncIterator[bytes]:
    """The SSE body: bytes as the hub made them, several messages per write under load."""
    retry = _RETRY  # sent with the first message: a lone retry field is no event
    if await services.redis.exists(services.events.key(job_id)) == 0:
        ended = await _ended(services, job_id=job_id, key_id=key_id)
        if ended is not None:
            yield retry + event_frame(ended)
            return
    heartbeat = services.settings.events.heartbeat_seconds
    async with services.hub.follow(job_id=job_id, position=position) as feed:
        checked = time.monotonic()
        while not feed.ended:
            messages = await feed.next(quiet=heartbeat)
            if messages is None:
                if time.monotonic() - checked >= _SQL_CHECK_SECONDS:
                    # Quiet for a while: if the job ended but its terminal event was
                    # lost, say so (at most this often, whatever the heartbeat).
                    checked = time.monotonic()
                    ended = await _ended(services, job_id=job_id, key_id=key_id)
                    if ended is not None:
                        yield retry + event_frame(ended)
                        return
                yield _HEARTBEAT  # alone: a retry field beside it would make an event
                continue
            yield retry + messages
            retry = b""


async def _ended(services: Services, *, job_id: str, key_id: str) -> JobEvent | None:
    """The job's terminal event rebuilt from SQL, if it has ended."""
    async with services.database.session() as session:
        job = await get_job(session, job_id=job_id, key_id=key_id)
    if job is None or JobStatus(job.status) not in TERMINAL_STATUSES:
        return None
    return JobEvent(
        job_id=job_id,
        key_id=key_id,
        type=EventType(job.status),
        data=terminal_data(job),
        id="0-1",
        timestamp=job.finished_at or job.created_at,
    )
