"""Starting a worker process from settings."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from relayq.config.settings import Settings
from relayq.observability.logs import configure_logging
from relayq.observability.tracing import check as check_tracing
from worker.supervisor import supervise

__all__ = ["main", "worker_argv"]

log = logging.getLogger(__name__)


def worker_argv(
    settings: Settings, *, queues: Sequence[str] = (), extra: Sequence[str] = ()
) -> list[str]:
    """Celery worker arguments; the pool is the app's (``worker_pool``: :mod:`worker.pool`).

    ``--quiet``: no banner on stdout (a block of plain text among the JSON
    lines); :func:`main` logs what it said (queues, concurrency) as a line.
    """
    return [
        "--quiet",  # Celery's own option, before the sub-command
        "worker",
        f"--concurrency={settings.worker.concurrency}",
        f"--queues={','.join(queues or settings.queues)}",
        f"--loglevel={settings.log_level}",
        "--without-mingle",
        "--without-gossip",
        *extra,
    ]


def main(argv: Sequence[str] = ()) -> int:
    """Run a worker; ``argv`` are extra Celery worker options (e.g. ``-n name``)."""
    settings = Settings()
    configure_logging(settings.log_level)
    check_tracing(settings.tracing)  # before a supervisor would start a child again and again
    if settings.worker.supervise:
        return supervise(argv, settings=settings)
    # Imported here: a supervisor runs no Celery app and never loads it (nor the
    # executor, the store and the providers behind it).
    from worker.app import create_worker_app

    app = create_worker_app(settings)
    log.info(
        "worker starting on %s",
        ",".join(settings.queues),
        extra={"queues": settings.queues, "concurrency": settings.worker.concurrency},
    )
    app.worker_main(worker_argv(settings, extra=argv))
    return 0
