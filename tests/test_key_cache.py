"""The API's key cache: found keys for a few seconds, never unknown ones."""

from __future__ import annotations

import asyncio

from api.key_cache import KeyCache
from relayq.store.models import ApiKey
from tests.clock import FakeClock


def key() -> ApiKey:
    return ApiKey(id="key_1", name="k", key_hash="h", hint="abcd", created_at=0.0)


def test_a_found_key_is_kept_for_its_ttl_then_looked_up_again() -> None:
    clock = FakeClock(100.0)
    cache = KeyCache(ttl_seconds=5.0, clock=clock)
    assert cache.get("rq-secret") is None
    found = key()
    cache.put("rq-secret", found)
    assert cache.get("rq-secret") is found
    assert cache.get("rq-other") is None
    clock.now += 5.0
    assert cache.get("rq-secret") is None


def test_a_ttl_of_zero_caches_nothing() -> None:
    cache = KeyCache(ttl_seconds=0.0, clock=FakeClock(100.0))
    cache.put("rq-secret", key())
    assert cache.get("rq-secret") is None


def test_concurrent_finds_of_one_secret_share_one_lookup() -> None:
    """An entry that ran out under load is looked up once, not once per waiting request."""
    cache = KeyCache(ttl_seconds=5.0, clock=FakeClock(100.0))
    found = key()
    lookups = 0

    async def load() -> ApiKey | None:
        nonlocal lookups
        lookups += 1
        await asyncio.sleep(0.01)
        return found

    async def many() -> list[ApiKey | None]:
        return await asyncio.gather(*(cache.find("rq-secret", load) for _ in range(50)))

    assert asyncio.run(many()) == [found] * 50
    assert lookups == 1
    assert cache.get("rq-secret") is found


def test_an_unknown_secret_is_looked_up_again_and_a_failed_lookup_fails_its_waiters() -> None:
    cache = KeyCache(ttl_seconds=5.0, clock=FakeClock(100.0))
    lookups = 0

    async def unknown() -> ApiKey | None:
        nonlocal lookups
        lookups += 1
        return None

    async def broken() -> ApiKey | None:
        await asyncio.sleep(0.01)
        raise ConnectionError("database unavailable")

    async def run() -> list[object]:
        assert await cache.find("rq-nobody", unknown) is None
        assert await cache.find("rq-nobody", unknown) is None
        return await asyncio.gather(
            *(cache.find("rq-secret", broken) for _ in range(3)), return_exceptions=True
        )

    failures = asyncio.run(run())
    assert lookups == 2  # unknown secrets are never kept
    assert [type(f) for f in failures] == [ConnectionError] * 3


def test_a_cancelled_request_does_not_cancel_the_shared_lookup() -> None:
    cache = KeyCache(ttl_seconds=5.0, clock=FakeClock(100.0))
    found = key()

    async def load() -> ApiKey | None:
        await asyncio.sleep(0.02)
        return found

    async def run() -> ApiKey | None:
        first = asyncio.ensure_future(cache.find("rq-secret", load))
        second = asyncio.ensure_future(cache.find("rq-secret", load))
        await asyncio.sleep(0.005)
        first.cancel()
        return await second

    assert asyncio.run(run()) is found
    assert cache.get("rq-secret") is found


def other_key() -> ApiKey:
    return ApiKey(id="key_2", name="k2", key_hash="h2", hint="efgh", created_at=0.0)


def test_forget_drops_every_entry_of_one_key() -> None:
    """A rotated key is cached under its old and its new secret: both go."""
    cache = KeyCache(ttl_seconds=5.0, clock=FakeClock(100.0))
    found, other = key(), other_key()
    cache.put("digest-old", found)
    cache.put("digest-new", found)
    cache.put("digest-other", other)

    cache.forget("key_1")

    assert cache.get("digest-old") is None
    assert cache.get("digest-new") is None
    assert cache.get("digest-other") is other


def test_a_lookup_begun_before_a_forget_is_not_kept_nor_shared_after_it() -> None:
    """It may have read the key as it was before the admin's change."""
    cache = KeyCache(ttl_seconds=5.0, clock=FakeClock(100.0))
    stale, fresh = key(), key()
    release = asyncio.Event()
    lookups = 0

    async def load() -> ApiKey | None:
        nonlocal lookups
        lookups += 1
        if lookups == 1:
            await release.wait()
            return stale
        return fresh

    async def run() -> tuple[ApiKey | None, ApiKey | None]:
        before = asyncio.ensure_future(cache.find("digest", load))
        await asyncio.sleep(0)
        cache.forget("key_1")
        after = await cache.find("digest", load)
        release.set()
        return await before, after

    first, second = asyncio.run(run())
    assert (first, second) == (stale, fresh)
    assert lookups == 2
    assert cache.get("digest") is fresh
