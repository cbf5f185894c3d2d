"""What the API process opens at start-up and closes at shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from redis.exceptions import RedisError

from api.key_cache import KeyCache
from api.key_usage import KeyUsage
from relayq.auth.jwt import TokenVerifier
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
from relayq.routing.drains import Drains
from relayq.routing.live import LiveRouting
from relayq.routing.router import Router
from relayq.routing.state import RoutingState
from relayq.store import Database
from relayq.webhooks.publishing import DeliveryPublisher, WebhookEnqueuer

__all__ = ["Services"]

log = logging.getLogger(__name__)


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
        # JWT tenants' rows by ``issuer|tenant``: a cache of their own, so that no bearer
        # secret can ever be looked up as a tenant's name.
        self.tenants = KeyCache(ttl_seconds=settings.api.key_cache_seconds)
        self.verifier: TokenVerifier | None = (
            TokenVerifier(settings.auth) if settings.auth.jwt_issuers else None
        )
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
        self.drains = Drains(self.redis, key_prefix=settings.key_prefix)
        """Deployments routing gives no new jobs, followed as admins change them."""
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
            key_limits=KeyLimits(
                self.redis,
                key_prefix=settings.key_prefix,
                batch=self.batch,
                tpm_window_seconds=settings.api.key_tpm_window_seconds,
            ),
            batch=self.batch,
        )
        self._watcher: asyncio.Task[None] | None = None
        self._drains_watcher: asyncio.Task[None] | None = None

    def _apply(self, config: RoutingConfig) -> None:
        providers = build_providers(config.providers, self.http)
        self.router = Router(
            config,
            state=self.routing_state,
            published=self.catalog.published,
            drains=self.drains,
        )
        self.providers = providers
        self.catalog.forget()

    def start(self) -> None:
        """Start watching the config file and the drained deployments, and reading
        replies (on the running loop)."""
        self._watcher = asyncio.create_task(self.live.watch())
        self._drains_watcher = asyncio.create_task(self.drains.watch())
        self.replies.start()

    async def read_drains(self) -> None:
        """Read the drained deployments once, before the first request is served (the
        watcher reads them too, as soon as it listens)."""
        try:
            await self.drains.refresh()
        except RedisError as exc:
            log.warning("drained deployments not read at start (%s); the watcher retries", exc)

    def forget_key(self, key_id: str) -> None:
        """Drop ``key_id`` from this process's caches (keys and JWT tenants): a change
        made here takes effect on the next request."""
        self.keys.forget(key_id)
        self.tenants.forget(key_id)

    async def aclose(self) -> None:
        for watcher in (self._watcher, self._drains_watcher):
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
        await self.outbox.aclose()
        self.enqueuer.close()
        await self.hub.aclose()
        await self.replies.aclose()
        await self.http.aclose()
        if self.verifier is not None:
            await self.verifier.aclose()
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
