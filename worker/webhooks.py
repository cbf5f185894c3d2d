"""The worker's webhook side: the ``relayq.deliver_webhook`` task on the process's loop.

Deliveries run on the :class:`WorkerRuntime`'s event loop, beside jobs, with
a database pool and an HTTP client of their own (opened there on first use,
closed at shutdown): a slow receiver never holds a provider connection.
"""

from __future__ import annotations

import contextlib
import logging
from concurrent.futures import Future
from typing import Any

import httpx
from celery import Celery, Task
from celery.signals import worker_shutdown

from relayq.config.settings import Settings
from relayq.store import Database
from relayq.webhooks.delivery import Deliverer, DeliveryResult
from relayq.webhooks.publishing import DELIVER_WEBHOOK_TASK, WebhookEnqueuer
from relayq.webhooks.transport import build_webhook_client
from worker.pool import loop_result, loop_task
from worker.runtime import WorkerRuntime

__all__ = ["WebhookWorker", "register_webhooks"]

log = logging.getLogger(__name__)

_POOL_SIZE = 5


class WebhookWorker:
    """Owns the process's :class:`Deliverer`, on the runtime's loop."""

    def __init__(
        self, *, settings: Settings, runtime: WorkerRuntime, enqueuer: WebhookEnqueuer
    ) -> None:
        self._settings = settings
        self._runtime = runtime
        self._enqueuer = enqueuer
        self._deliverer: Deliverer | None = None
        self._database: Database | None = None
        self._client: httpx.AsyncClient | None = None

    def start(self, delivery_id: str, run: int) -> Future[DeliveryResult]:
        """Start one delivery attempt on the runtime's loop."""
        self._runtime.start()
        return self._runtime.submit(self._deliver(delivery_id, run))

    async def _deliver(self, delivery_id: str, run: int) -> DeliveryResult:
        if self._deliverer is None:  # on the loop: no other coroutine runs in between
            webhooks = self._settings.webhooks
            self._database = Database(self._settings.database_url, pool_size=_POOL_SIZE)
            self._client = build_webhook_client(
                allow_private=webhooks.allow_private_destinations,
                max_connections=webhooks.max_connections,
            )
            self._deliverer = Deliverer(
                database=self._database,
                client=self._client,
                settings=webhooks,
                enqueuer=self._enqueuer,
            )
        async with self._runtime.holding_delivery(delivery_id):
            result = await self._deliverer.deliver(delivery_id, run)
        metrics = self._runtime.metrics
        if metrics is not None:
            metrics.webhook_deliveries.inc(result.value)
        return result

    def stop(self) -> None:
        """Close the client and pool (before the runtime stops its loop)."""
        if self._deliverer is None:
            return
        # RuntimeError: the loop is already gone, and so is everything on it.
        with contextlib.suppress(RuntimeError):
            self._runtime.call(self._close())
        self._deliverer = None

    async def _close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
        if self._database is not None:
            await self._database.aclose()


def register_webhooks(
    app: Celery, *, settings: Settings, runtime: WorkerRuntime, enqueuer: WebhookEnqueuer
) -> None:
    """Register the delivery task on ``app``. Call before the runtime's shutdown hook."""
    side = WebhookWorker(settings=settings, runtime=runtime, enqueuer=enqueuer)

    @app.task(name=DELIVER_WEBHOOK_TASK, **loop_task(side.start))
    def deliver_webhook(task: Task[Any, Any], delivery_id: str, run: int) -> str:
        """Make one delivery attempt; the return value is what Flower shows.

        When the attempt could not even be claimed or recorded (the database
        is unreachable), the message is published again after a backoff.
        """
        try:
            return loop_result(side.start, delivery_id, run).value
        except Exception as exc:
            countdown = min(60, 2 ** min(task.request.retries, 6))
            log.warning("webhook %s not delivered (%s); again in %ss", delivery_id, exc, countdown)
            raise task.retry(exc=exc, countdown=countdown, max_retries=None) from exc

    def stop(**_: Any) -> None:
        side.stop()

    worker_shutdown.connect(stop, weak=False)
