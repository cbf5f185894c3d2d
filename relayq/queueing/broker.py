"""The Celery side of the pipeline that both processes share.

The API and the reconciler publish messages by task name; only the worker
registers the task. Queues are per provider (``llm.<provider>``), the task id
is the job id, and a message carries nothing but that id: the job row in SQL
is the source of truth. The exception is the sync lane (``run_direct``): its
message carries the whole job, whose row the worker stores beside the call.

Under load, the jobs of one tick bound for the same queue at the same
priority travel together in one envelope (``run_many``): a publish, a
delivery and an ack cost about a millisecond of CPU each, whatever the
message carries. A job alone is still a task of its own (Flower shows a task
per job at low load); a redelivered envelope is harmless, as claims are fenced.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from celery import Celery

from relayq.config.settings import Settings
from relayq.redis.keys import PRIORITY_STEPS, priority_lists

__all__ = [
    "NO_DETAILS",
    "PREPARE_BATCH_TASK",
    "REQUEST_IDS_HEADER",
    "REQUEST_ID_HEADER",
    "RUN_DIRECT_TASK",
    "RUN_JOB_TASK",
    "RUN_MANY_TASK",
    "TRACEPARENTS_HEADER",
    "TRACEPARENT_HEADER",
    "Enqueuer",
    "JobDetails",
    "create_celery",
    "message_priority",
    "shown_direct",
    "shown_job",
]

log = logging.getLogger(__name__)

RUN_JOB_TASK = "relayq.run_job"
RUN_DIRECT_TASK = "relayq.run_direct"
"""A sync chat completion: the message carries the job itself (no row yet)."""
RUN_MANY_TASK = "relayq.run_many"
"""An envelope: the jobs of one tick bound for one queue at one priority, in one message."""

ENVELOPE_SIZE = 64
"""Most jobs one envelope carries: a worker's in-flight cap still bounds what it runs."""
PREPARE_BATCH_TASK = "relayq.prepare_batch"

REQUEST_ID_HEADER = "relayq_request_id"
"""A job message's header: the id of the HTTP request that made the job."""
REQUEST_IDS_HEADER = "relayq_request_ids"
"""An envelope's header: job id → the id of the request that made it (those known)."""
TRACEPARENT_HEADER = "relayq_traceparent"
"""A job message's header, when tracing: the W3C ``traceparent`` its attempt continues."""
TRACEPARENTS_HEADER = "relayq_traceparents"
"""An envelope's header, when tracing: job id → its ``traceparent`` (those known)."""


@dataclass(frozen=True, slots=True)
class JobDetails:
    """What a job's message says of it beside its id, where the publisher knows it: the
    request that made it (a header, for the worker's log lines), its trace context (a
    header, when tracing) and its model and key (what Flower and ``celery inspect``
    show as the task's arguments)."""

    request_id: str | None = None
    model: str | None = None
    key_id: str | None = None
    traceparent: str | None = None


NO_DETAILS = JobDetails()
"""A message that says nothing of its job beside its id."""


def shown_job(job_id: str, details: JobDetails) -> str:
    """A job as monitors show it: ``job_… model=… key=…``; never its prompt."""
    parts = [job_id]
    if details.model is not None:
        parts.append(f"model={details.model}")
    if details.key_id is not None:
        parts.append(f"key={details.key_id}")
    return " ".join(parts)


def shown_direct(message: dict[str, Any]) -> str:
    """A direct job's message as monitors show it (the message carries the prompt)."""
    job = message.get("job") or {}
    return shown_job(
        str(job.get("id")), JobDetails(model=job.get("model"), key_id=job.get("key_id"))
    )


def _headers(details: JobDetails) -> dict[str, str] | None:
    """A job message's headers: its request id and trace context, those known."""
    headers: dict[str, str] = {}
    if details.request_id:
        headers[REQUEST_ID_HEADER] = details.request_id
    if details.traceparent:
        headers[TRACEPARENT_HEADER] = details.traceparent
    return headers or None


def _envelope_headers(
    job_ids: list[str], details: Mapping[str, JobDetails]
) -> dict[str, dict[str, str]] | None:
    """An envelope's headers: its jobs' request ids and trace contexts, those known."""
    request_ids: dict[str, str] = {}
    traceparents: dict[str, str] = {}
    for job_id in job_ids:
        found = details.get(job_id, NO_DETAILS)
        if found.request_id:
            request_ids[job_id] = found.request_id
        if found.traceparent:
            traceparents[job_id] = found.traceparent
    headers: dict[str, dict[str, str]] = {}
    if request_ids:
        headers[REQUEST_IDS_HEADER] = request_ids
    if traceparents:
        headers[TRACEPARENTS_HEADER] = traceparents
    return headers or None


async def queue_depths(redis: aioredis.Redis, queues: Sequence[str]) -> dict[str, int]:
    """Messages waiting in each of ``queues``, every priority step summed."""
    async with redis.pipeline(transaction=False) as pipe:
        for queue in queues:
            for name in priority_lists(queue):
                pipe.llen(name)
        lengths = await pipe.execute()
    steps = len(PRIORITY_STEPS)
    return {q: sum(lengths[i * steps : (i + 1) * steps]) for i, q in enumerate(queues)}


def message_priority(job_priority: int) -> int:
    """Our 0 (lowest) to 9 (highest) as the Redis transport's 9 (last) to 0 (first)."""
    return 9 - job_priority


def create_celery(settings: Settings, *, publisher: bool = False) -> Celery:
    """A Celery app configured for relayq; it connects only when first used.

    A ``publisher`` app (the API's, the reconciler's) fails a publish at once
    when the broker is unreachable instead of retrying the connection for
    seconds: the job is already stored, and the reconciler sends it later.
    """
    app = Celery("relayq", broker=settings.redis_url, set_as_current=False)
    config = _celery_config(settings)
    if publisher:
        config["broker_transport_options"].update(max_retries=0, connect_retries_timeout=2)
    app.conf.update(config)
    return app


def _celery_config(settings: Settings) -> dict[str, Any]:
    return {
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        # At-least-once: the message is acked after the job ran; the claim in
        # SQL makes a redelivery harmless.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            # Counts from delivery: must exceed the longest job. A message lost
            # to a dead worker is recovered sooner by the lease and reconciler.
            "visibility_timeout": settings.worker.visibility_timeout,
            "priority_steps": list(PRIORITY_STEPS),
            "sep": ":",
            "socket_connect_timeout": 2,
            "socket_timeout": 5,
        },
        "worker_send_task_events": settings.worker.task_events,
        "task_send_sent_event": False,
        "worker_hijack_root_logger": False,
        "task_create_missing_queues": True,
    }


class Enqueuer:
    """Publishes run-job messages. Blocking: call it from a thread, not a loop."""

    def __init__(self, *, settings: Settings) -> None:
        self._celery = create_celery(settings, publisher=True)
        self._settings = settings

    def queue_for(self, provider: str) -> str:
        """The queue ``provider``'s jobs are published to."""
        return self._settings.queue_for(provider)

    @property
    def webhook_queue(self) -> str:
        """The queue webhook delivery messages go through."""
        return self._settings.webhooks.queue

    def send(
        self,
        *,
        job_id: str,
        provider: str,
        priority: int,
        countdown: float | None = None,
        details: JobDetails = NO_DETAILS,
    ) -> None:
        """Publish one job's message; raises if the broker does not take it.

        No publish retries: a job whose message failed stays queued without
        a confirmed message, and the reconciler sends it later.
        """
        self._celery.send_task(
            RUN_JOB_TASK,
            args=[job_id],
            task_id=job_id,
            queue=self._settings.queue_for(provider),
            priority=message_priority(priority),
            countdown=countdown if countdown and countdown > 0 else None,
            retry=False,
            headers=_headers(details),
            argsrepr=shown_job(job_id, details),
        )

    def send_direct(
        self, *, job_id: str, provider: str, priority: int, job: dict[str, Any]
    ) -> None:
        """Publish a sync job's message, carrying the job (``job``) itself (and its
        request id, if it has one)."""
        self._celery.send_task(
            RUN_DIRECT_TASK,
            args=[job],
            task_id=job_id,
            queue=self._settings.queue_for(provider),
            priority=message_priority(priority),
            retry=False,
            argsrepr=shown_direct(job),
        )

    def send_many(
        self,
        jobs: list[tuple[str, str, int]] | list[tuple[str, str, int, dict[str, Any] | None]],
        *,
        details: Mapping[str, JobDetails] | None = None,
    ) -> list[str]:
        """Publish ``(job_id, provider, priority[, direct job])`` messages; the ids the broker
        took. Jobs for one queue at one priority go in envelopes; ``details`` (by job id)
        go in their headers and in what monitors show.

        Stops at the first failure (the broker is down): the rest stay
        unconfirmed, and the reconciler sends them (a direct job's caller
        hears that it failed).
        """
        groups: dict[tuple[str, int], list[tuple[str, dict[str, Any] | None]]] = {}
        for job_id, provider, priority, *direct in jobs:
            item = (job_id, direct[0] if direct else None)
            groups.setdefault((provider, priority), []).append(item)
        sent: list[str] = []
        for (provider, priority), items in groups.items():
            for start in range(0, len(items), ENVELOPE_SIZE):
                chunk = items[start : start + ENVELOPE_SIZE]
                try:
                    self._send_group(
                        provider=provider,
                        priority=priority,
                        items=chunk,
                        details=details or {},
                    )
                except Exception as exc:
                    log.warning(
                        "%d of %d jobs not enqueued yet: %s", len(jobs) - len(sent), len(jobs), exc
                    )
                    return sent
                sent.extend(job_id for job_id, _ in chunk)
        return sent

    def _send_group(
        self,
        *,
        provider: str,
        priority: int,
        items: list[tuple[str, dict[str, Any] | None]],
        details: Mapping[str, JobDetails],
    ) -> None:
        if len(items) == 1:
            job_id, direct = items[0]
            if direct is not None:
                self.send_direct(job_id=job_id, provider=provider, priority=priority, job=direct)
            else:
                self.send(
                    job_id=job_id,
                    provider=provider,
                    priority=priority,
                    details=details.get(job_id, NO_DETAILS),
                )
            return
        shown = [
            shown_job(job_id, details.get(job_id, NO_DETAILS))
            if direct is None
            else shown_direct(direct)
            for job_id, direct in items
        ]
        self._celery.send_task(
            RUN_MANY_TASK,
            # A job id, or a direct job's whole message.
            args=[[job_id if direct is None else direct for job_id, direct in items]],
            queue=self._settings.queue_for(provider),
            priority=message_priority(priority),
            retry=False,
            headers=_envelope_headers([job_id for job_id, _ in items], details),
            argsrepr=f"{len(items)} jobs: " + ", ".join(shown),
        )

    def send_batch(self, *, batch_id: str) -> None:
        """Publish the message that validates a batch's input and stores its requests."""
        self._celery.send_task(
            PREPARE_BATCH_TASK,
            args=[batch_id],
            queue=self._settings.batches.queue,
            retry=False,
        )

    def close(self) -> None:
        self._celery.close()
