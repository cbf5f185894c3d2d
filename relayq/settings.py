"""relayq's settings: one object, built once per process and passed explicitly.

Every value can be set through the environment with the ``RELAYQ_`` prefix;
nested values use ``__`` (``RELAYQ_WORKER__CONCURRENCY=200``) and mappings
take JSON (``RELAYQ_ROUTES='{"gpt-4o": {"provider": "openai", "model": "gpt-4o"}}'``).
Nothing else in relayq reads ``os.environ``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "ApiSettings",
    "ProviderSettings",
    "RouteSettings",
    "Settings",
    "WorkerSettings",
]


class ProviderSettings(BaseModel):
    """One configured upstream: which adapter speaks to it and how to reach it."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(description="Adapter type, e.g. 'mock', 'openai', 'anthropic'.")
    base_url: str | None = None
    """The vendor's API root; each adapter has the vendor's public one as default."""
    api_key: SecretStr | None = None
    """The key itself (environment only); config files name ``api_key_env`` instead."""
    api_key_env: str | None = None
    """The environment variable holding the key, read when settings are built."""
    connect_timeout: float = Field(default=10.0, gt=0)
    read_timeout: float = Field(default=600.0, gt=0)
    headers: dict[str, str] = Field(default_factory=dict)
    """Extra headers sent with every call (they win over the adapter's own)."""
    options: dict[str, Any] = Field(default_factory=dict)
    """Adapter-specific options (e.g. Azure's ``api_version``), validated by the adapter."""


class RouteSettings(BaseModel):
    """A public model name served by one provider's upstream model."""

    provider: str
    model: str


class ApiSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8000
    max_body_bytes: int = Field(default=2 * 1024 * 1024, gt=0)
    """Largest request body accepted; larger ones answer 413."""
    page_size_max: int = 100


class WorkerSettings(BaseModel):
    providers: list[str] | None = None
    """Providers whose queues this worker consumes; all configured ones when unset."""
    concurrency: int = Field(default=200, gt=0)
    """Jobs in flight per worker process (Celery threads feeding one event loop)."""
    lease_seconds: float = Field(default=60.0, gt=0)
    """A running job whose lease is not renewed for this long is run again."""
    reconcile_interval: float = Field(default=5.0, gt=0)
    enqueue_grace_seconds: float = Field(default=10.0, ge=0)
    """A queued job without a confirmed message is re-enqueued after this long."""
    max_connections: int = Field(default=1000, gt=0)
    """Upstream HTTP connections per worker process."""
    visibility_timeout: float = Field(default=3600.0, gt=0)
    """Seconds before the broker redelivers an unacknowledged message."""


def _default_providers() -> dict[str, ProviderSettings]:
    return {"mock": ProviderSettings(type="mock")}


def _default_routes() -> dict[str, RouteSettings]:
    return {"mock": RouteSettings(provider="mock", model="mock")}


class Settings(BaseSettings):
    """All of relayq's configuration."""

    model_config = SettingsConfigDict(
        env_prefix="RELAYQ_",
        env_nested_delimiter="__",
        extra="ignore",
    )

    database_url: str = "sqlite:///.relayq/relayq.db"
    redis_url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "relayq"
    """Prefix of every Redis key relayq writes (besides Celery's own)."""
    log_level: str = "INFO"
    data_dir: Path = Path(".relayq")
    """Where the dev stack keeps its embedded Valkey and its dev key."""
    dev_api_key: SecretStr | None = None
    """The dev stack's API key; generated on first start when unset."""
    providers: dict[str, ProviderSettings] = Field(default_factory=_default_providers)
    routes: dict[str, RouteSettings] = Field(default_factory=_default_routes)
    api: ApiSettings = Field(default_factory=ApiSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)

    @model_validator(mode="after")
    def _routes_name_known_providers(self) -> Settings:
        for name, route in self.routes.items():
            if route.provider not in self.providers:
                known = ", ".join(sorted(self.providers)) or "none"
                raise ValueError(
                    f"route {name!r} names provider {route.provider!r}, which is not "
                    f"configured (configured providers: {known})"
                )
        for name in self.worker.providers or []:
            if name not in self.providers:
                raise ValueError(f"worker.providers names unknown provider {name!r}")
        return self

    def queue_for(self, provider: str) -> str:
        """The Celery queue a provider's jobs go to."""
        return f"llm.{provider}"

    @property
    def queues(self) -> list[str]:
        """The queues a worker consumes: its providers' or, by default, all."""
        names = self.worker.providers if self.worker.providers is not None else self.providers
        return [self.queue_for(name) for name in sorted(names)]
