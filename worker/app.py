"""The worker's Celery app: relayq's queueing config plus the run-job task."""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import worker_init, worker_shutdown

from relayq.queueing import RUN_JOB_TASK, Enqueuer, create_celery
from relayq.settings import Settings
from worker.runtime import WorkerRuntime

__all__ = ["create_worker_app"]


def create_worker_app(settings: Settings) -> Celery:
    """A Celery app whose task runs jobs on a per-process :class:`WorkerRuntime`."""
    app = create_celery(settings)
    runtime = WorkerRuntime(settings=settings, enqueuer=Enqueuer(settings=settings))

    @app.task(name=RUN_JOB_TASK, acks_late=True, ignore_result=True)
    def run_job(job_id: str) -> str:
        """Run one job; the return value is what Flower shows as its result."""
        return runtime.run_job(job_id).value

    def start(**_: Any) -> None:
        runtime.start()

    def stop(**_: Any) -> None:
        runtime.stop()

    # relayq runs the threads (or solo) pool: tasks run in the worker's main
    # process, where these signals fire.
    worker_init.connect(start, weak=False)
    worker_shutdown.connect(stop, weak=False)
    return app
