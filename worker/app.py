"""The worker's Celery app: relayq's queueing config plus the run-job and webhook tasks."""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import Celery, Task
from celery.signals import worker_init, worker_shutdown

from relayq.config.settings import Settings
from relayq.queueing.broker import (
    PREPARE_BATCH_TASK,
    RUN_DIRECT_TASK,
    RUN_JOB_TASK,
    RUN_MANY_TASK,
    create_celery,
)
from relayq.webhooks.publishing import WebhookEnqueuer
from worker.outcomes import JobNotSucceeded, shown, shown_many
from worker.pool import LoopPool, loop_result, loop_task
from worker.runtime import WorkerRuntime
from worker.webhooks import register_webhooks

__all__ = ["create_worker_app"]

log = logging.getLogger(__name__)

_SHOWN = (JobNotSucceeded,)
"""Raised to show a job that did not succeed as a FAILURE (worker/outcomes.py): Celery
logs these as expected, without a traceback."""


def _again(task: Task[Any, Any], exc: Exception, what: str) -> Exception:
    """Publish the message again after a backoff (the work could not even start or be
    recorded: the database is unreachable); a claim makes the extra delivery harmless."""
    countdown = min(60, 2 ** min(task.request.retries, 6))
    log.warning("%s not run (%s); again in %ss", what, exc, countdown)
    return task.retry(exc=exc, countdown=countdown, max_retries=None)


def _register_jobs(app: Celery, runtime: WorkerRuntime) -> None:
    """The tasks that run jobs and prepare batches; their return value is what Flower shows."""

    @app.task(name=RUN_JOB_TASK, throws=_SHOWN, **loop_task(runtime.start_job))
    def run_job(task: Task[Any, Any], job_id: str) -> str:
        """Run one job."""
        try:
            result = loop_result(runtime.start_job, job_id)
        except Exception as exc:
            raise _again(task, exc, f"job {job_id}") from exc
        return shown(job_id, result)

    @app.task(name=RUN_DIRECT_TASK, throws=_SHOWN, **loop_task(runtime.start_direct))
    def run_direct(task: Task[Any, Any], message: dict[str, Any]) -> str:
        """Run a sync job that came in its message (see ``Executor.run_direct``)."""
        job_id = str(message["job"]["id"])
        try:
            result = loop_result(runtime.start_direct, message)
        except Exception as exc:
            raise _again(task, exc, f"job {job_id}") from exc
        return shown(job_id, result)

    @app.task(name=RUN_MANY_TASK, throws=_SHOWN, **loop_task(runtime.start_many))
    def run_many(task: Task[Any, Any], items: list[str | dict[str, Any]]) -> str:
        """Run an envelope's jobs (one tick's, for one queue); what they came to."""
        try:
            results = loop_result(runtime.start_many, items)
        except Exception as exc:
            raise _again(task, exc, f"{len(items)} jobs") from exc
        return shown_many(results)

    @app.task(name=PREPARE_BATCH_TASK, **loop_task(runtime.start_batch))
    def prepare_batch(task: Task[Any, Any], batch_id: str) -> str:
        """Validate a batch's input and store its requests (a no-op once done)."""
        try:
            prepared = loop_result(runtime.start_batch, batch_id)
        except Exception as exc:
            raise _again(task, exc, f"batch {batch_id}") from exc
        return "skipped" if prepared is None else prepared.status.value


def create_worker_app(settings: Settings) -> Celery:
    """A Celery app whose task runs jobs on a per-process :class:`WorkerRuntime`."""
    app = create_celery(settings)
    # Used unless ``--pool`` says otherwise (Celery reads it for the default pool).
    app.conf.worker_pool = f"{LoopPool.__module__}:{LoopPool.__name__}"
    hostnames: list[str] = []

    def consume(queues: list[str]) -> None:
        """Ask this worker (over Celery's control channel) to consume more queues."""

        def send() -> None:
            for queue in queues:
                app.control.add_consumer(queue, destination=hostnames, reply=False)
                log.info("now consuming %s", queue)

        # Publishing blocks; the caller is the event loop.
        threading.Thread(target=send, name="relayq-add-consumer", daemon=True).start()

    enqueuer = WebhookEnqueuer(settings=settings)
    runtime = WorkerRuntime(settings=settings, enqueuer=enqueuer, consume=consume)
    # Registered first, so its shutdown hook runs while the runtime's loop still does.
    register_webhooks(app, settings=settings, runtime=runtime, enqueuer=enqueuer)

    _register_jobs(app, runtime)

    def start(sender: Any = None, **_: Any) -> None:
        hostname = getattr(sender, "hostname", None)
        if hostname:
            hostnames.append(hostname)
        runtime.start()

    def stop(**_: Any) -> None:
        runtime.stop()

    # relayq runs its loop pool (or threads, or solo): tasks run in the
    # worker's main process, where these signals fire.
    worker_init.connect(start, weak=False)
    worker_shutdown.connect(stop, weak=False)
    return app
