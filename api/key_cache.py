"""A short-lived, in-process cache of API keys found by their secret.

Every request is authenticated; looking the key up in SQL each time costs a
session and a round trip per request. Found keys are kept for a few seconds
(``RELAYQ_API__KEY_CACHE_SECONDS``), so a revoked key or a changed limit
takes effect within that long. Unknown secrets are never cached.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from relayq.keys import hash_key
from relayq.store.models import ApiKey

__all__ = ["KeyCache"]

_MAX_ENTRIES = 10_000


class KeyCache:
    def __init__(self, *, ttl_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl_seconds
        self._clock = clock
        self._entries: dict[str, tuple[float, ApiKey]] = {}

    def get(self, secret: str) -> ApiKey | None:
        entry = self._entries.get(hash_key(secret))
        if entry is None or entry[0] <= self._clock():
            return None
        return entry[1]

    def put(self, secret: str, key: ApiKey) -> None:
        if self._ttl <= 0:
            return
        if len(self._entries) >= _MAX_ENTRIES:
            now = self._clock()
            self._entries = {h: e for h, e in self._entries.items() if e[0] > now}
            if len(self._entries) >= _MAX_ENTRIES:
                self._entries.clear()
        self._entries[hash_key(secret)] = (self._clock() + self._ttl, key)
