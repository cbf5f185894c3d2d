"""The API's key cache: found keys for a few seconds, never unknown ones."""

from __future__ import annotations

from api.key_cache import KeyCache
from relayq.store.models import ApiKey


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def key() -> ApiKey:
    return ApiKey(id="key_1", name="k", key_hash="h", hint="abcd", created_at=0.0)


def test_a_found_key_is_kept_for_its_ttl_then_looked_up_again() -> None:
    clock = Clock()
    cache = KeyCache(ttl_seconds=5.0, clock=clock)
    assert cache.get("rq-secret") is None
    found = key()
    cache.put("rq-secret", found)
    assert cache.get("rq-secret") is found
    assert cache.get("rq-other") is None
    clock.now += 5.0
    assert cache.get("rq-secret") is None


def test_a_ttl_of_zero_caches_nothing() -> None:
    cache = KeyCache(ttl_seconds=0.0, clock=Clock())
    cache.put("rq-secret", key())
    assert cache.get("rq-secret") is None
