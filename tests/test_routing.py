"""Route resolution and each strategy's choices, with shared state in real Redis."""

from __future__ import annotations

import random
import uuid
from collections import Counter

import pytest
import redis.asyncio as aioredis

from relayq.config.routes import RoutingConfig
from relayq.routing.router import Deployment, Router, UnknownModel
from relayq.routing.state import RoutingState
from tests.services import run


def config(strategy: str = "weighted") -> RoutingConfig:
    return RoutingConfig.model_validate(
        {
            "providers": {"a": {"type": "mock"}, "b": {"type": "mock"}, "c": {"type": "mock"}},
            "routes": {
                "smart": {
                    "strategy": strategy,
                    "aliases": ["smart-latest", "team/smart"],
                    "deployments": [
                        {"provider": "a", "model": "m-a", "weight": 6},
                        {"provider": "b", "model": "m-b", "weight": 3},
                        {"provider": "c", "model": "m-c", "weight": 1},
                    ],
                },
                "solo": {"provider": "a", "model": "m-solo"},
            },
        }
    )


def with_state(redis_url: str, scenario: object) -> object:
    async def body() -> object:
        client = aioredis.Redis.from_url(redis_url)
        try:
            state = RoutingState(client, key_prefix=f"test-{uuid.uuid4().hex[:8]}")
            assert callable(scenario)
            return await scenario(state)
        finally:
            await client.aclose()

    return run(body())


def test_names_and_aliases_resolve_to_their_route() -> None:
    router = Router(config())

    assert run(router.choose("solo")) == Deployment(
        route="solo", provider="a", upstream_model="m-solo"
    )
    for name in ("smart", "smart-latest", "team/smart"):
        assert run(router.choose(name)).route == "smart"
    assert router.model_names == ["smart", "smart-latest", "solo", "team/smart"]


def test_an_unknown_model_lists_the_available_ones() -> None:
    with pytest.raises(UnknownModel) as raised:
        run(Router(config()).choose("gpt-9"))

    assert raised.value.available == ["smart", "smart-latest", "solo", "team/smart"]


def test_weighted_random_follows_the_weights() -> None:
    router = Router(config(), rng=random.Random(7))

    async def choose_many() -> Counter[str]:
        # On one event loop: a loop per pick (asyncio.run) took seconds of CPU.
        return Counter([(await router.choose("smart")).provider for _ in range(5000)])

    picks = run(choose_many())

    assert picks["a"] / 5000 == pytest.approx(0.6, abs=0.03)
    assert picks["b"] / 5000 == pytest.approx(0.3, abs=0.03)
    assert picks["c"] / 5000 == pytest.approx(0.1, abs=0.02)


def test_least_in_flight_picks_the_least_busy_deployment(redis_url: str) -> None:
    async def scenario(state: RoutingState) -> None:
        router = Router(config("least_in_flight"), state=state, rng=random.Random(1))
        for _ in range(3):
            await state.assigned(provider="a", model="m-a")
        await state.assigned(provider="b", model="m-b")
        await state.assigned(provider="c", model="m-c")
        await state.assigned(provider="c", model="m-c")
        assert (await router.choose("smart")).provider == "b"
        await state.finished(provider="a", model="m-a", latency_ms=None)
        await state.finished(provider="a", model="m-a", latency_ms=None)
        await state.finished(provider="a", model="m-a", latency_ms=None)
        assert (await router.choose("smart")).provider == "a"
        await state.reset_in_flight({("a", "m-a"): 9, ("b", "m-b"): 9})
        assert (await router.choose("smart")).provider == "c"

    with_state(redis_url, scenario)


def test_lowest_latency_measures_each_then_prefers_the_fastest(redis_url: str) -> None:
    async def scenario(state: RoutingState) -> None:
        router = Router(config("lowest_latency"), state=state, rng=random.Random(3))
        await state.finished(provider="a", model="m-a", latency_ms=900)
        await state.finished(provider="b", model="m-b", latency_ms=200)
        # c is unmeasured: it is tried before any preference.
        assert (await router.choose("smart")).provider == "c"
        await state.finished(provider="c", model="m-c", latency_ms=400)
        assert {(await router.choose("smart")).provider for _ in range(50)} == {"b"}
        for _ in range(10):  # b slows down; the moving average follows
            await state.finished(provider="b", model="m-b", latency_ms=2000)
        assert {(await router.choose("smart")).provider for _ in range(50)} == {"c"}
        [a, b, c] = await state.latencies(router.routing.routes["smart"].deployments)
        assert a == 900
        assert b is not None
        assert b > 1500
        assert c == 400

    with_state(redis_url, scenario)


def test_latencies_within_the_buffer_share_the_traffic(redis_url: str) -> None:
    async def scenario(state: RoutingState) -> None:
        router = Router(config("lowest_latency"), state=state, rng=random.Random(5))
        await state.finished(provider="a", model="m-a", latency_ms=100)
        await state.finished(provider="b", model="m-b", latency_ms=105)
        await state.finished(provider="c", model="m-c", latency_ms=500)
        picks = Counter([(await router.choose("smart")).provider for _ in range(300)])
        assert set(picks) == {"a", "b"}

    with_state(redis_url, scenario)


def test_provider_slash_model_reaches_a_published_model() -> None:
    async def published(provider: str) -> frozenset[str] | None:
        return frozenset({"llama3", "qwen2"}) if provider == "b" else None

    router = Router(config(), published=published)

    assert run(router.choose("b/llama3")) == Deployment(
        route="b/llama3", provider="b", upstream_model="llama3"
    )
    for missing in ("b/gpt-4", "a/llama3", "zz/llama3"):
        with pytest.raises(UnknownModel):
            run(router.choose(missing))
