"""Models that providers publish (OpenAI, OpenRouter, Ollama…), fetched and kept a while."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from relayq.providers.base import Provider
from relayq.providers.errors import ProviderError

__all__ = ["ModelCatalog"]

log = logging.getLogger(__name__)

_RETRY_FAILED_AFTER = 30.0
"""A provider whose list could not be fetched is asked again after this long."""


@dataclass(frozen=True)
class _Entry:
    models: frozenset[str] | None
    expires_at: float


class ModelCatalog:
    """Each provider's published model ids, cached for ``ttl_seconds``."""

    def __init__(
        self,
        *,
        providers: Callable[[], Mapping[str, Provider]],
        ttl_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._providers = providers
        self._ttl = ttl_seconds
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def forget(self) -> None:
        """Drop every cached list (the providers changed)."""
        self._entries.clear()

    async def published(self, provider: str) -> frozenset[str] | None:
        """``provider``'s model ids, or None if it publishes none or cannot be reached."""
        entry = self._entries.get(provider)
        if entry is not None and entry.expires_at > self._clock():
            return entry.models
        lock = self._locks.setdefault(provider, asyncio.Lock())
        async with lock:
            entry = self._entries.get(provider)
            if entry is not None and entry.expires_at > self._clock():
                return entry.models
            entry = await self._fetch(provider, stale=entry)
            self._entries[provider] = entry
            return entry.models

    async def _fetch(self, provider: str, *, stale: _Entry | None) -> _Entry:
        adapter = self._providers().get(provider)
        if adapter is None or not adapter.settings.list_models:
            return _Entry(models=None, expires_at=self._clock() + self._ttl)
        try:
            models = await adapter.list_models()
        except ProviderError as exc:
            log.warning("could not list the models of provider %s: %s", provider, exc)
            kept = stale.models if stale is not None else None
            return _Entry(models=kept, expires_at=self._clock() + _RETRY_FAILED_AFTER)
        listed = frozenset(models) if models is not None else None
        return _Entry(models=listed, expires_at=self._clock() + self._ttl)

    async def all_published(self) -> dict[str, frozenset[str]]:
        """Every provider's published ids, fetched concurrently."""
        names = [name for name, p in self._providers().items() if p.settings.list_models]
        lists = await asyncio.gather(*(self.published(name) for name in names))
        return {name: models for name, models in zip(names, lists, strict=True) if models}
