"""The API app in-process: its real services on a real database and Redis, no worker.

For tests of what the API itself decides (who may call what, the admin API):
requests go through httpx's ASGI transport to the app ``create_app`` builds,
with the services its lifespan would open. Jobs are stored and their messages
published, but nothing consumes them; a batch is prepared by calling the
worker's preparer here.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis

from api.app import create_app
from api.services import Services
from relayq.batches.notify import BatchNotifier
from relayq.batches.preparation import BatchPreparer
from relayq.config.settings import ApiSettings, FileSettings, Settings
from relayq.store.keys import CreatedKey, create_key
from tests.services import run

__all__ = ["ApiEnv", "ApiRunner", "api_runner"]

REDIS_DB = 13

PROVIDERS: dict[str, Any] = {"mock": {"type": "mock"}, "idle": {"type": "mock"}}
ROUTES: dict[str, Any] = {
    "mock": {"provider": "mock", "model": "mock"},
    "mock-idle": {"provider": "idle", "model": "mock"},
    "mock-b": {"provider": "idle", "model": "mock", "aliases": ["mock-b-alias"]},
}
"""Models the app routes; no worker consumes the queues, so jobs stay queued."""


@dataclass
class ApiEnv:
    services: Services
    http: httpx.AsyncClient
    settings: Settings

    async def key(
        self,
        *,
        scopes: Sequence[str] | None = None,
        admin: bool = False,
        models: Sequence[str] | None = None,
        expires_at: float | None = None,
        name: str = "test",
    ) -> CreatedKey:
        """A new key, stored as the CLI stores one."""
        async with self.services.database.session() as session:
            return await create_key(
                session, name=name, scopes=scopes, admin=admin, models=models, expires_at=expires_at
            )

    async def call(self, secret: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {secret}", **kwargs.pop("headers", {})}
        return await self.http.request(method, path, headers=headers, **kwargs)

    async def prepare_batch(self, batch_id: str) -> None:
        """What a worker does with a new batch: validate its lines, store its requests."""
        preparer = BatchPreparer(
            database=self.services.database,
            storage=self.services.storage,
            router=lambda: self.services.router,
            settings=self.settings,
            notifier=BatchNotifier(database=self.services.database, enqueuer=None),
        )
        await preparer.prepare(batch_id)


ApiRunner = Callable[[Callable[[ApiEnv], Awaitable[None]]], None]


def api_runner(
    *,
    database_url: str,
    redis_server: str,
    tmp_path: Path,
    key_cache_seconds: float = 5.0,
    **settings_fields: Any,
) -> ApiRunner:
    """Runs a scenario against an in-process API on ``database_url`` and a flushed Redis
    database of its own (a key prefix of its own too); ``settings_fields`` are further
    :class:`Settings` fields (``webhooks=WebhookSettings(...)``, say)."""
    redis_url = f"{redis_server}/{REDIS_DB}"
    flush = redis.Redis.from_url(redis_url)
    flush.flushdb()
    flush.close()
    settings = Settings(
        database_url=database_url,
        redis_url=redis_url,
        key_prefix=f"relayq-api-{uuid.uuid4().hex[:8]}",
        providers=PROVIDERS,
        routes=ROUTES,
        api=ApiSettings(key_cache_seconds=key_cache_seconds, access_log=False, metrics=False),
        files=FileSettings(storage_dir=tmp_path / "files"),
        **settings_fields,
    )

    @contextlib.asynccontextmanager
    async def running() -> AsyncIterator[ApiEnv]:
        app = create_app(settings, configure_logs=False)
        services = Services(settings)
        services.start()
        app.state.services = services
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(
                transport=transport, base_url="http://relayq.test"
            ) as http:
                yield ApiEnv(services=services, http=http, settings=settings)
        finally:
            await services.aclose()

    def runner(scenario: Callable[[ApiEnv], Awaitable[None]]) -> None:
        async def main() -> None:
            async with running() as env:
                await scenario(env)

        run(main())

    return runner
