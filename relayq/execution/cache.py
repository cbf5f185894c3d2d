"""The response cache: an exact-match answer for a repeated request, from Redis.

Opt-in per route (``cache: {enabled: true, ttl_seconds: …}``) or per request
(``"cache": true``; ``"cache": false`` opts out). A hit completes the job at
intake: no queue, no provider call, no rate-limit budget. Entries are scoped
to the API key, so one tenant cannot learn what another asked.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from relayq.config.routes import RouteSettings
from relayq.redis.keys import RedisKeys
from relayq.schemas.completions import TextCompletionRequest
from relayq.schemas.embeddings import EmbeddingRequest
from relayq.schemas.images import ImageGenerationRequest
from relayq.schemas.jobs import CallRequest
from relayq.schemas.responses import ResponsesRequest

__all__ = ["IGNORED_FIELDS", "ResponseCache", "cache_ttl"]

log = logging.getLogger(__name__)

IGNORED_FIELDS = frozenset({"stream", "stream_options", "user"})
"""Request fields that do not change the answer, left out of the cache key."""


def cache_ttl(route: RouteSettings | None, requested: bool | None) -> float | None:
    """The TTL to cache this job's answer with, or None when it is not cached."""
    ttl = route.cache.ttl_seconds if route is not None else 3600.0
    if requested is not None:
        return ttl if requested else None
    return ttl if route is not None and route.cache.enabled else None


def _uncounted(result: str) -> None:
    """No one counts lookups (the worker only writes entries)."""


class ResponseCache:
    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        key_prefix: str,
        counted: Callable[[str], None] = _uncounted,
    ) -> None:
        """``counted(result)`` hears of each lookup: ``hit``, ``miss`` or ``error``."""
        self._redis = redis
        self._keys = RedisKeys(key_prefix)
        self._counted = counted

    def key(
        self,
        *,
        key_id: str,
        route: str,
        request: CallRequest,
    ) -> str:
        """The entry for ``request`` on ``route`` for one API key; a request of any kind but
        chat has its kind hashed with it, so that no two kinds' bodies share an entry."""
        body = request.model_dump(mode="json", exclude_none=True, exclude=set(IGNORED_FIELDS))
        body["model"] = route
        if isinstance(request, EmbeddingRequest):
            body["kind"] = "embeddings"
        elif isinstance(request, TextCompletionRequest):
            body["kind"] = "completions"
        elif isinstance(request, ImageGenerationRequest):
            body["kind"] = "images"
        elif isinstance(request, ResponsesRequest):
            body["kind"] = "responses"
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(canonical.encode()).hexdigest()
        return self._keys.cache(key_id, digest)

    async def get(self, key: str) -> dict[str, Any] | None:
        """The cached ``{response, usage}``; None on a miss or if Redis is down."""
        try:
            raw = await self._redis.get(key)
        except RedisError as exc:
            log.warning("response cache unavailable: %s", exc)
            self._counted("error")
            return None
        if raw is None:
            self._counted("miss")
            return None
        self._counted("hit")
        entry: dict[str, Any] = json.loads(raw)
        return entry

    async def put(
        self, key: str, *, response: dict[str, Any], usage: dict[str, Any] | None, ttl: float
    ) -> None:
        entry = json.dumps({"response": response, "usage": usage})
        try:
            await self._redis.set(key, entry, px=int(ttl * 1000))
        except RedisError as exc:
            log.warning("response not cached: %s", exc)
