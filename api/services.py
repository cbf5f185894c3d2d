"""What the API process opens at start-up and closes at shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import time

from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from api.key_cache import KeyCache
from api.key_usage import KeyUsage
from relayq.config.routes import RoutingConfig
from relayq.config.settings import Settings
from relayq.direct.replies import ReplyHub
from relayq.events.hub import EventHub
from relayq.events.log import EventLog
from relayq.execution.cache import ResponseCache
from relayq.files.storage import DirectoryStorage, FileStorage
from relayq.intake.intake import Intake
from relayq.observability.metrics import ApiMetrics, StateCollector
from relayq.providers import Provider, build_providers
from relayq.providers.http import UpstreamClient, build_http_client
from relayq.queueing.outbox import Outbox
from relayq.redis.pipeline import CommandBatch
from relayq.redis.pool import shared_redis
from relayq.resilience.breaker import CircuitBreaker
from relayq.resilience.key_limits import KeyLimits
from relayq.routing.catalog import ModelCatalog
from relayq.routing.live import LiveRouting
from relayq.routing.router import Router
from relayq.routing.state import RoutingState
from relayq.store import Database
from relayq.webhooks.publishing import DeliveryPublisher, WebhookEnqueuer

__all__ = ["Services"]


class Services:
    """The API's resources; routing follows the config file while the process runs."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.started_at = time.time()
        self.database = Database(settings.database_url, pool_size=settings.database_pool_size)
        self.redis = shared_redis(settings.redis_url)
        # One pipeline per loop tick carries every request's commands (key limits,
        # events, routing counts, the sync lane), not one per component.
        self.batch = CommandBatch(self.redis)
        self.enqueuer = WebhookEnqueuer(settings=settings)
        self.routing_state = RoutingState(
            self.redis, key_prefix=settings.key_prefix, batch=self.batch
        )
        self.storage: FileStorage = DirectoryStorage(settings.files.storage_dir)
        self.keys = KeyCache(ttl_seconds=settings.api.key_cache_seconds)
        self.key_usage = KeyUsage(self.database)
        # Read by the admin API and /metrics; the workers write it.
        self.breaker = CircuitBreaker(
            self.redis, key_prefix=settings.key_prefix, settings=settings.breaker
        )
        # The API calls providers only to list their models.
        self.http: UpstreamClient = build_http_client(max_connections=20)
        self.providers: dict[str, Provider] = {}
        self.catalog = ModelCatalog(
            providers=lambda: self.providers, ttl_seconds=settings.models_ttl_seconds
        )
        self.router: Router
        self.hub = EventHub(settings.redis_url, key_prefix=settings.key_prefix)
        # Its read timeout exceeds its XREAD's block, like the event hub's.
        self.replies = ReplyHub(
            shared_redis(settings.redis_url, socket_timeout=10.0), key_prefix=settings.key_prefix
        )
        self.events = EventLog(
            self.redis,
            key_prefix=settings.key_prefix,
            max_events=settings.events.max_per_job,
            retention_seconds=settings.events.retention_seconds,
            # Cancels and cache hits end jobs here: publish their webhooks at once.
            listeners=[DeliveryPublisher(database=self.database, enqueuer=self.enqueuer)],
            batch=self.batch,
        )
        self.live = LiveRouting(settings, apply=self._apply)
        self.outbox = Outbox(database=self.database, enqueuer=self.enqueuer)
        self.registry = CollectorRegistry()
        """This process's counters."""
        self.api_metrics = ApiMetrics(self.registry)
        self.state_collector = StateCollector()
        self.exposed = _exposed(settings, self.registry, self.state_collector)
        """What /metrics serves: the counters (of every process, with a multiprocess
        directory) and the shared state."""
        self.intake = Intake(
            settings=settings,
            database=self.database,
            outbox=self.outbox,
            redis=self.redis,
            router=lambda: self.router,
            state=self.routing_state,
            cache=ResponseCache(
                self.redis, key_prefix=settings.key_prefix, counted=self.api_metrics.cache_lookup
            ),
            events=self.events,
            key_limits=KeyLimits(self.redis, key_prefix=settings.key_prefix, batch=self.batch),
            batch=self.batch,
        )
        self._watcher: asyncio.Task[None] | None = None

    def _apply(self, config: RoutingConfig) -> None:
        providers = build_providers(config.providers, self.http)
        self.router = Router(config, state=self.routing_state, published=self.catalog.published)
        self.providers = providers
        self.catalog.forget()

    def start(self) -> None:
        """Start watching the config file and reading replies (on the running loop)."""
        self._watcher = asyncio.create_task(self.live.watch())
        self.replies.start()

    async def aclose(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        await self.outbox.aclose()
        self.enqueuer.close()
        await self.hub.aclose()
        await self.replies.aclose()
        await self.http.aclose()
        await self.redis.aclose()
        await self.key_usage.aclose()
        await self.database.aclose()


def _exposed(
    settings: Settings, registry: CollectorRegistry, state: StateCollector
) -> CollectorRegistry:
    """This process's registry with the shared state; or, when the API runs as several
    processes sharing ``PROMETHEUS_MULTIPROC_DIR``, every process's counters from their
    files (prometheus_client writes them there when the variable is set) and the state."""
    if settings.prometheus_multiproc_dir is None:
        registry.register(state)
        return registry
    exposed = CollectorRegistry()
    MultiProcessCollector(exposed, path=str(settings.prometheus_multiproc_dir))  # type: ignore[no-untyped-call]
    exposed.register(state)
    return exposed
