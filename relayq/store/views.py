"""Stored rows as the objects callers get: a job, a file, a batch, a key, an audit entry.

The conversion lives with the rows rather than with the schemas, so that
:mod:`relayq.schemas` imports nothing of the store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from relayq.schemas.audit import AuditEntryObject
from relayq.schemas.batches import BatchErrors, BatchObject, BatchStatus
from relayq.schemas.files import FileObject, FilePurpose
from relayq.schemas.jobs import AttemptPublic, JobKind, JobPublic, JobStatus
from relayq.schemas.keys import BudgetPeriod, KeyObject, KeySource
from relayq.schemas.usage import UsageBucket, UsageReport
from relayq.schemas.webhooks import WebhookSpec
from relayq.store.models import ApiKey, Attempt, AuditEntry, Batch, File, Job
from relayq.store.usage import Bucket

if TYPE_CHECKING:  # batches imports jobs, which imports this module
    from relayq.store.batches import BatchTotals

__all__ = [
    "audit_entry",
    "batch_object",
    "file_object",
    "job_public",
    "key_object",
    "usage_report",
]


def job_public(job: Job, attempts: list[Attempt] | None = None) -> JobPublic:
    """A job row as the API returns it (and as webhooks carry it in ``data``)."""
    return JobPublic(
        id=job.id,
        status=JobStatus(job.status),
        kind=JobKind(job.kind or JobKind.CHAT.value),
        model=job.model,
        provider=job.provider,
        priority=job.priority,
        metadata=job.metadata_,
        request=job.request,
        response=job.response,
        error=job.error,
        usage=job.usage,
        cost_usd=job.cost_usd,
        cached=job.cached,
        webhook=None if job.webhook is None else WebhookSpec.model_validate(job.webhook),
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        batch_id=job.batch_id,
        custom_id=job.custom_id,
        attempts=None
        if attempts is None
        else [
            AttemptPublic(
                provider=a.provider,
                model=a.upstream_model,
                status=a.status,
                latency_ms=a.latency_ms,
                error=a.error,
                created_at=a.created_at,
            )
            for a in attempts
        ],
    )


def file_object(row: File) -> FileObject:
    return FileObject(
        id=row.id,
        bytes=row.bytes,
        created_at=int(row.created_at),
        filename=row.filename,
        purpose=FilePurpose(row.purpose),
        expires_at=None if row.expires_at is None else int(row.expires_at),
    )


def _seconds(value: float | None) -> int | None:
    return None if value is None else int(value)


def batch_object(row: Batch, totals: BatchTotals) -> BatchObject:
    """A batch row with its requests' counts, usage and cost
    (:func:`relayq.store.batches.batch_totals`)."""
    return BatchObject(
        id=row.id,
        endpoint=row.endpoint,
        errors=None if row.errors is None else BatchErrors.model_validate(row.errors),
        input_file_id=row.input_file_id,
        completion_window=row.completion_window,
        status=BatchStatus(row.status),
        output_file_id=row.output_file_id,
        error_file_id=row.error_file_id,
        created_at=int(row.created_at),
        in_progress_at=_seconds(row.in_progress_at),
        expires_at=_seconds(row.expires_at),
        finalizing_at=_seconds(row.finalizing_at),
        completed_at=_seconds(row.completed_at),
        failed_at=_seconds(row.failed_at),
        expired_at=_seconds(row.expired_at),
        cancelling_at=_seconds(row.cancelling_at),
        cancelled_at=_seconds(row.cancelled_at),
        request_counts=totals.counts,
        usage=totals.usage,
        cost_usd=totals.cost_usd,
        metadata=row.metadata_,
    )


def _bucket(bucket: Bucket) -> UsageBucket:
    group: dict[str, str | None] = dict(bucket.group)
    if group.get("batch_id") == "":
        group["batch_id"] = None  # the ledger's "no batch"
    # Only the fields set are answered (exclude_unset): the grouped-by ones, and these.
    return UsageBucket.model_validate(
        {
            "object": "usage.bucket",
            **group,
            "requests": bucket.requests,
            "input_tokens": bucket.prompt_tokens,
            "output_tokens": bucket.completion_tokens,
            "cached_tokens": bucket.cached_tokens,
            "total_tokens": bucket.prompt_tokens + bucket.completion_tokens,
            "cost_usd": round(bucket.cost_usd, 10),
        }
    )


def usage_report(buckets: list[Bucket]) -> UsageReport:
    """``GET /v1/usage``'s answer: a bucket per group, and their total."""
    total = Bucket(
        group={},
        requests=sum(b.requests for b in buckets),
        prompt_tokens=sum(b.prompt_tokens for b in buckets),
        completion_tokens=sum(b.completion_tokens for b in buckets),
        cached_tokens=sum(b.cached_tokens for b in buckets),
        cost_usd=sum(b.cost_usd for b in buckets),
    )
    return UsageReport(object="list", data=[_bucket(b) for b in buckets], total=_bucket(total))


def key_object(row: ApiKey) -> KeyObject:
    """A key as the admin API shows it (and as its audit entries keep it): no secret, no
    hash."""
    jwt = row.source == KeySource.JWT.value
    return KeyObject(
        id=row.id,
        name=row.name,
        source=KeySource(row.source or KeySource.KEY.value),
        hint=None if jwt else f"...{row.hint}",
        subject=row.subject,
        scopes=list(row.scopes),
        models=None if row.models is None else list(row.models),
        requests_per_minute=row.requests_per_minute,
        max_concurrent_jobs=row.max_concurrent_jobs,
        tokens_per_minute=row.tokens_per_minute,
        budget_period=None if row.budget_period is None else BudgetPeriod(row.budget_period),
        budget_usd=row.budget_usd,
        budget_tokens=row.budget_tokens,
        created_at=row.created_at,
        expires_at=row.expires_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
        previous_secret_expires_at=row.previous_expires_at if row.previous_hash else None,
    )


def audit_entry(row: AuditEntry) -> AuditEntryObject:
    return AuditEntryObject(
        id=row.id,
        at=row.at,
        actor_key_id=row.actor_key_id,
        action=row.action,
        target=row.target,
        before=row.before,
        after=row.after,
        request_id=row.request_id,
    )
