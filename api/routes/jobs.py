"""``/v1/jobs``: submit, retrieve, list and cancel jobs (chat completions, embeddings)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response, status

from api.controls import checked_controls
from api.deps import (
    JobsCaller,
    ReadCaller,
    ServicesDep,
    SessionDep,
    key_budget,
    key_limits,
    require_model,
)
from api.errors import ERROR_RESPONSES, APIError, job_not_found
from api.observability import request_id_of
from api.pages import After, cursor_page
from relayq.schemas.destinations import check_webhook_url
from relayq.schemas.jobs import (
    TERMINAL_STATUSES,
    JobBody,
    JobList,
    JobPublic,
    JobStatus,
)
from relayq.store.attempts import list_attempts
from relayq.store.jobs import get_job, list_jobs
from relayq.store.views import job_public

__all__ = ["router"]

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=ERROR_RESPONSES)


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=JobPublic)
async def create(
    body: JobBody,
    key: JobsCaller,
    services: ServicesDep,
    request: Request,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> JobPublic:
    """Queue a job: a chat completion, or embeddings with ``"kind": "embeddings"``.
    Answers 202 with the job and its ``Location``.

    With an ``Idempotency-Key`` header, the same key and body return the
    first job again (``Idempotent-Replayed: true``); the same key with a
    different body answers 409.
    """
    require_model(key, body.model, services.router)
    checked_controls(body)
    if body.webhook is not None:
        allow_private = services.settings.webhooks.allow_private_destinations
        await check_webhook_url(body.webhook.url, allow_private=allow_private, param="webhook.url")
    submitted = await services.intake.submit(
        key_id=key.id,
        body=body,
        idempotency_key=idempotency_key,
        limits=key_limits(key, services.settings),
        request_id=request_id_of(request.scope),
        budget=key_budget(key),
    )
    response.headers["Location"] = f"/v1/jobs/{submitted.job.id}"
    if not submitted.created:
        response.headers["Idempotent-Replayed"] = "true"
    return job_public(submitted.job)


@router.get("/{job_id}", response_model=JobPublic)
async def retrieve(job_id: str, key: ReadCaller, session: SessionDep) -> JobPublic:
    """One job with its attempts. Another key's job answers 404."""
    job = await get_job(session, job_id=job_id, key_id=key.id)
    if job is None:
        raise job_not_found(job_id)
    return job_public(job, await list_attempts(session, job_id=job_id))


@router.get("", response_model=JobList)
async def list_(
    key: ReadCaller,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: After = None,
    status_: Annotated[JobStatus | None, Query(alias="status")] = None,
    model: str | None = None,
    batch_id: Annotated[str | None, Query(description="Only this batch's requests.")] = None,
) -> JobList:
    """The caller's jobs, newest first; page with ``after`` = the previous ``last_id``."""
    jobs, has_more = await list_jobs(
        session,
        key_id=key.id,
        limit=limit,
        after=after,
        status=status_,
        model=model,
        batch_id=batch_id,
    )
    data = [job_public(job) for job in jobs]
    return cursor_page(JobList, data, has_more=has_more)


@router.post("/{job_id}/cancel", response_model=JobPublic)
async def cancel(
    job_id: str, key: JobsCaller, services: ServicesDep, session: SessionDep
) -> JobPublic:
    """Cancel a queued or running job; cancelling a cancelled job is a no-op.

    Answers the job as ``GET`` does, its attempts so far included (a running
    call stopped by the cancel is recorded as its worker stops it).
    """
    job, _ = await services.intake.cancel(key_id=key.id, job_id=job_id)
    if job is None:
        raise job_not_found(job_id)
    if JobStatus(job.status) in TERMINAL_STATUSES - {JobStatus.CANCELLED}:
        raise APIError(
            409,
            f"Job '{job_id}' has already {job.status}; only queued or running jobs "
            "can be cancelled.",
            code="job_not_cancellable",
        )
    return job_public(job, await list_attempts(session, job_id=job_id))
