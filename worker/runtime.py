"""A worker process's asyncio side: one event loop in a thread, and what lives on it.

Celery (5.7) has no asyncio tasks. :class:`worker.pool.LoopPool` starts each
task's work on this loop (:meth:`WorkerRuntime.submit`) and lets Celery trace
it when it ends; other pools call the blocking :meth:`WorkerRuntime.call`.
All provider calls of the process share the loop, one HTTP client on the
aiohttp transport, and one database engine, so hundreds of jobs are in
flight per process while each task keeps Celery's ack semantics.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, start_http_server
from redis.exceptions import RedisError

from relayq.batches.activity import BatchActivity
from relayq.batches.notify import BatchNotifier
from relayq.batches.preparation import BatchPreparer, Prepared
from relayq.batches.scheduler import BatchScheduler
from relayq.config.routes import RoutingConfig
from relayq.config.settings import Settings
from relayq.direct.lane import LaneConsumer
from relayq.direct.replies import Replies
from relayq.events.cancellation import listen_for_cancels
from relayq.events.log import EventListener, EventLog
from relayq.execution.cache import ResponseCache
from relayq.execution.executor import Executor, RunResult
from relayq.execution.image_files import ImageFiles
from relayq.files.storage import DirectoryStorage
from relayq.heap import settle
from relayq.observability.metrics import WorkerMetrics
from relayq.observability.tracing import setup as setup_tracing
from relayq.providers import Provider, build_providers
from relayq.providers.http import build_http_client
from relayq.queueing.broker import (
    REQUEST_ID_HEADER,
    REQUEST_IDS_HEADER,
    TRACEPARENT_HEADER,
    TRACEPARENTS_HEADER,
    Enqueuer,
)
from relayq.recovery.handback import Heartbeat, Taken, delivery_entry
from relayq.recovery.reconciler import Reconciler, Retention
from relayq.redis.keys import RedisKeys
from relayq.redis.pipeline import CommandBatch
from relayq.redis.pool import shared_redis
from relayq.resilience.breaker import CircuitBreaker
from relayq.resilience.clearance import Clearance, listen_for_changes
from relayq.resilience.key_limits import KeyLimits
from relayq.resilience.ratelimit import RateLimiter
from relayq.resilience.resilience import Resilience
from relayq.routing.catalog import ModelCatalog
from relayq.routing.drains import Drains
from relayq.routing.live import LiveRouting
from relayq.routing.router import Router
from relayq.routing.state import RoutingState
from relayq.schemas.batches import BatchStatus
from relayq.store import Database
from relayq.webhooks.publishing import DeliveryPublisher, WebhookEnqueuer
from worker.pool import message_headers

__all__ = ["WorkerRuntime"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_CLOSE_SECONDS = 10.0
"""How long stopping may take to stop background tasks and close the clients."""


def _stack(task: asyncio.Task[Any]) -> str:
    """Where ``task`` is suspended (asyncio gives a suspended task's own frame only)."""
    frames = task.get_stack()
    return (
        " -> ".join(
            f"{frame.f_code.co_name} ({frame.f_code.co_filename}:{frame.f_lineno})"
            for frame in frames
        )
        or "no frames"
    )


def _new_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop where it is installed (with uvicorn[standard], as the API runs on it):
    its sockets, timers and callbacks cost a fraction of the pure-Python loop's."""
    try:
        import uvloop
    except ImportError:  # not built for this platform
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class WorkerRuntime:
    """Owns the loop thread and the resources on it, from start() to stop()."""

    def __init__(
        self,
        *,
        settings: Settings,
        enqueuer: Enqueuer,
        consume: Callable[[list[str]], None] | None = None,
    ) -> None:
        """``consume(queues)`` makes the worker consume more queues (new providers)."""
        self._settings = settings
        self._enqueuer = enqueuer
        self._consume = consume
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._executor: Executor | None = None
        self._preparer: BatchPreparer | None = None
        self._batch_activity: BatchActivity | None = None
        self._background: list[asyncio.Task[None]] = []
        self._lane: LaneConsumer | None = None
        self._heartbeat: Heartbeat | None = None
        self._taken: Taken | None = None
        self._closers: list[Coroutine[Any, Any, Any]] = []
        self._lock = threading.Lock()
        self.metrics: WorkerMetrics | None = None
        """This process's metrics once started, if served (``worker.metrics_port``)."""

    def start(self) -> None:
        """Start the loop thread and open the database, HTTP client and Redis."""
        with self._lock:
            if self._loop is None:
                self._start()

    def _start(self) -> None:
        setup_tracing(self._settings.tracing, service="relayq-worker")
        loop = _new_loop()
        self._thread = threading.Thread(target=loop.run_forever, name="relayq-loop", daemon=True)
        self._thread.start()
        self._loop = loop
        self.call(self._open())
        settle()

    def stop(self) -> None:
        """Close everything opened by start() and stop the loop thread."""
        if self._loop is None or self._thread is None:
            return
        closing = self.submit(self._close())
        try:
            closing.result(timeout=_CLOSE_SECONDS + 5)
        except TimeoutError:  # _close bounds each step: this is a loop that no longer runs
            log.error("the worker's loop did not close its resources; stopping it anyway")
            closing.cancel()
        self._executor = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
        self._loop = None

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        """Start ``coro`` on the loop from another thread; its future."""
        if self._loop is None:
            coro.close()
            raise RuntimeError("the worker runtime is not started")
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and wait for it from this (Celery) thread."""
        return self.submit(coro).result()

    @contextlib.asynccontextmanager
    async def holding_delivery(self, delivery_id: str) -> AsyncIterator[None]:
        """Keep a webhook delivery in this process's record of taken work while it is
        here: if the process dies, whoever hands its work back sends the delivery again."""
        if self._taken is None:
            yield
            return
        async with self._taken.holding(delivery_entry(delivery_id)):
            yield

    def start_job(self, job_id: str) -> Future[RunResult]:
        self.start()
        headers = message_headers()
        return self.submit(
            self._run_job(job_id, headers.get(REQUEST_ID_HEADER), headers.get(TRACEPARENT_HEADER))
        )

    def start_direct(self, message: dict[str, Any]) -> Future[RunResult]:
        self.start()
        return self.submit(self._run_direct(message))

    def start_many(self, items: list[str | dict[str, Any]]) -> Future[list[RunResult]]:
        self.start()
        headers = message_headers()
        request_ids = headers.get(REQUEST_IDS_HEADER) or {}
        traceparents = headers.get(TRACEPARENTS_HEADER) or {}
        return self.submit(self._run_many(items, request_ids, traceparents))

    def start_batch(self, batch_id: str) -> Future[Prepared | None]:
        self.start()
        return self.submit(self._prepare_batch(batch_id))

    async def _run_job(
        self, job_id: str, request_id: str | None, traceparent: str | None
    ) -> RunResult:
        assert self._executor is not None
        return await self._executor.run(job_id, request_id=request_id, traceparent=traceparent)

    async def _run_direct(self, message: dict[str, Any]) -> RunResult:
        assert self._executor is not None
        return await self._executor.run_direct(message)

    async def _run_many(
        self,
        items: list[str | dict[str, Any]],
        request_ids: dict[str, str],
        traceparents: dict[str, str],
    ) -> list[RunResult]:
        """An envelope's jobs, all at once; one failing to run does not stop the others."""
        executor = self._executor
        assert executor is not None
        runs = [
            executor.run(item, request_id=request_ids.get(item), traceparent=traceparents.get(item))
            if isinstance(item, str)
            else executor.run_direct(item)
            for item in items
        ]
        results = await asyncio.gather(*runs, return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            # The envelope is sent again; the jobs that ran are skipped then (claims).
            raise failed[0]
        return [r for r in results if isinstance(r, RunResult)]

    async def _prepare_batch(self, batch_id: str) -> Prepared | None:
        assert self._preparer is not None
        assert self._batch_activity is not None
        prepared = await self._preparer.prepare(batch_id)
        if prepared is not None and prepared.status is BatchStatus.IN_PROGRESS:
            await self._batch_activity.note()  # wake a quiet scheduler, wherever it runs
        return prepared

    async def _open(self) -> None:
        settings = self._settings
        database = Database(settings.database_url, pool_size=settings.database_pool_size)
        http = build_http_client(max_connections=settings.worker.max_connections)
        # Blocking: hundreds of jobs emit events at once, past redis-py's default 100.
        redis = shared_redis(settings.redis_url, max_connections=settings.worker.max_connections)
        self._closers = [http.aclose(), redis.aclose(), database.aclose()]
        providers: dict[str, Provider] = {}

        def apply(config: RoutingConfig) -> None:
            # Built first, so a config whose adapters fail changes nothing.
            built = build_providers(config.providers, http)
            added = sorted(set(built) - set(providers))
            providers.clear()
            providers.update(built)
            if added and settings.worker.providers is None and self._consume is not None:
                self._consume([settings.queue_for(name) for name in added])

        live = LiveRouting(settings, apply=apply)
        # A tick's Redis commands (events, breaker, limits, counts) share pipelines.
        batch = CommandBatch(redis)
        state = RoutingState(redis, key_prefix=settings.key_prefix, batch=batch)
        events = EventLog(
            redis,
            key_prefix=settings.key_prefix,
            max_events=settings.events.max_per_job,
            retention_seconds=settings.events.retention_seconds,
            listeners=self._listeners(database),
            batch=batch,
        )
        key_limits = KeyLimits(redis, key_prefix=settings.key_prefix, batch=batch)
        instance = settings.worker.instance or uuid.uuid4().hex
        self._taken = Taken(batch, key_prefix=settings.key_prefix, instance=instance)
        clearance = Clearance(ttl=settings.worker.admission_cache_seconds)
        # Deployments an operator drained: fallbacks and batches pass them over.
        drains = Drains(redis, key_prefix=settings.key_prefix)
        metrics = self.metrics = self._metrics()
        resilience = Resilience(
            database=database,
            enqueuer=self._enqueuer,
            limiter=RateLimiter(redis, key_prefix=settings.key_prefix, batch=batch),
            breaker=CircuitBreaker(
                redis, key_prefix=settings.key_prefix, settings=settings.breaker, batch=batch
            ),
            retry=settings.retry,
            routing=lambda: live.config,
            events=events,
            # Countdowns stay under the broker's redelivery window.
            max_countdown=settings.worker.visibility_timeout / 2,
            clearance=clearance,
            metrics=metrics,
            drains=drains,
        )
        storage = DirectoryStorage(settings.files.storage_dir)
        executor = Executor(
            database=database,
            providers=providers,
            lease_seconds=settings.worker.lease_seconds,
            max_in_flight=settings.worker.concurrency,
            routing_state=state,
            cache=ResponseCache(redis, key_prefix=settings.key_prefix),
            events=events,
            resilience=resilience,
            metrics=metrics,
            key_limits=key_limits,
            # Pipelines of their own: a waiting caller's first delta must not queue
            # behind the tick's other commands (its run's started event was).
            replies=Replies(CommandBatch(redis), key_prefix=settings.key_prefix),
            taken=self._taken,
            owner=instance,
            image_files=ImageFiles(
                storage=storage,
                database=database,
                lifetime_seconds=settings.retention.image_seconds(),
            ),
        )
        reconciler = Reconciler(
            database=database,
            enqueuer=self._enqueuer,
            grace_seconds=settings.worker.enqueue_grace_seconds,
            republish_after_seconds=settings.worker.visibility_timeout,
            routing_state=state,
            key_limits=key_limits,
            events=events,
            routing=lambda: live.config,
            settle_chunk=settings.budgets.sweep_chunk,
            retention=Retention(settings=settings.retention, storage=storage),
            metrics=metrics,
        )
        self._executor = executor
        if metrics is not None:  # read at each scrape: nothing per job
            metrics.jobs_in_flight = lambda: executor.in_flight

        def lane_queues() -> list[str]:
            names = settings.worker.providers
            return [
                settings.queue_for(name) for name in sorted(providers if names is None else names)
            ]

        def consumed() -> list[str]:
            # Celery's consumers: those it started with, and the added providers' queues.
            return sorted({*settings.queues, *lane_queues()})

        self._heartbeat = Heartbeat(
            redis,
            database=database,
            enqueuer=self._enqueuer,
            key_prefix=settings.key_prefix,
            instance=instance,
            interval=settings.worker.heartbeat_seconds,
            host=socket.gethostname(),
            queues=consumed,
        )
        self._lane = LaneConsumer(
            redis,
            batch,
            key_prefix=settings.key_prefix,
            consumer=instance,
            queues=lane_queues,
            run=functools.partial(executor.run_direct, recorded=True),
            capacity=settings.worker.concurrency,
            reclaim_after_seconds=settings.worker.visibility_timeout,
        )
        notifier = BatchNotifier(
            database=database,
            enqueuer=self._enqueuer if isinstance(self._enqueuer, WebhookEnqueuer) else None,
        )
        catalog = ModelCatalog(providers=lambda: providers, ttl_seconds=settings.models_ttl_seconds)
        self._batch_activity = BatchActivity(redis, key_prefix=settings.key_prefix)
        self._preparer = BatchPreparer(
            database=database,
            storage=storage,
            router=lambda: Router(
                live.config, state=state, published=catalog.published, drains=drains
            ),
            settings=settings,
            notifier=notifier,
        )
        scheduler = BatchScheduler(
            database=database,
            enqueuer=self._enqueuer,
            storage=storage,
            notifier=notifier,
            settings=settings,
            routing_state=state,
        )
        self._background = [
            asyncio.create_task(live.watch()),
            asyncio.create_task(executor.keep_leases()),
            asyncio.create_task(
                listen_for_cancels(
                    redis,
                    key_prefix=settings.key_prefix,
                    on_cancel=executor.cancel,
                    listening=executor.hearing_cancels,
                )
            ),
            asyncio.create_task(
                listen_for_changes(redis, key_prefix=settings.key_prefix, clearance=clearance)
            ),
            asyncio.create_task(drains.watch()),
            asyncio.create_task(
                reconciler.run_forever(
                    redis=redis,
                    lock_key=RedisKeys(settings.key_prefix).reconciler_lock,
                    interval=settings.worker.reconcile_interval,
                )
            ),
            asyncio.create_task(self._heartbeat.run_forever()),
        ]
        self._lane.start()
        if settings.worker.batches:
            self._background.append(asyncio.create_task(scheduler.run_forever(redis=redis)))

    def _metrics(self) -> WorkerMetrics | None:
        """This process's metrics, served on ``worker.metrics_port`` when set.

        A port already taken (two worker processes on one host with one setting)
        leaves this process without metrics, said in the log, rather than down.
        """
        port, host = self._settings.worker.metrics_port, self._settings.worker.metrics_host
        if not port:
            return None
        registry = CollectorRegistry()
        metrics = WorkerMetrics(registry)
        try:
            start_http_server(port, addr=host, registry=registry)
        except OSError as exc:
            log.error("worker metrics not served on %s:%s: %s", host, port, exc)
            return None
        log.info("worker metrics on http://%s:%s/metrics", host, port)
        return metrics

    def _listeners(self, database: Database) -> list[EventListener]:
        """Who hears of each job's outcome here: the webhook publisher, if enabled."""
        if isinstance(self._enqueuer, WebhookEnqueuer):
            return [DeliveryPublisher(database=database, enqueuer=self._enqueuer)]
        return []

    async def _close(self) -> None:
        """Stop the background tasks, then close the clients, each step bounded.

        A shutdown must end: a step that overstays is logged, with where it
        was stuck, and left behind.
        """
        if self._lane is not None:
            # Its jobs in flight are not Celery's: the pool's warm shutdown did not wait.
            await self._lane.stop(wait_seconds=_CLOSE_SECONDS / 2)
        for task in self._background:
            task.cancel()
        if self._background:
            _, stuck = await asyncio.wait(self._background, timeout=_CLOSE_SECONDS / 2)
            for task in stuck:
                log.error("%s did not stop when cancelled: %s", task.get_name(), _stack(task))
        if self._heartbeat is not None:
            try:
                await asyncio.wait_for(self._heartbeat.stop(), timeout=_CLOSE_SECONDS / 4)
            except (TimeoutError, RedisError) as exc:
                log.warning("worker left its heartbeat to lapse: %s", exc)
        for closer in self._closers:
            try:
                await asyncio.wait_for(closer, timeout=_CLOSE_SECONDS / 2 / len(self._closers))
            except TimeoutError:
                log.error("closing a worker resource timed out")
            except Exception:
                log.exception("closing a worker resource failed")
