"""Per-key tokens per minute: in-process on real Redis with a fake clock, and over HTTP
against a live stack (an API and a real worker, the mock provider reporting usage)."""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio as aioredis

from relayq.redis.keys import RedisKeys
from relayq.resilience.key_limits import Decision, KeyLimit, KeyLimits, request_tokens
from relayq.schemas.chat import ChatCompletionRequest
from relayq.store import Database
from relayq.store.keys import create_key
from tests.clock import FakeClock
from tests.jobs import body, submit, wait_for_status
from tests.services import reset_database, run, scratch_postgres_database
from tests.stack import Stack, wait_until

# In process: the limit itself, with a clock the test moves.

START = 1_700_000_000.0
"""The fake clock's start: 40 s into a minute window (1,699,999,980 is one's start)."""


@dataclass
class Limits:
    limits: KeyLimits
    clock: FakeClock
    redis: aioredis.Redis
    keys: RedisKeys

    async def admit(self, job_id: str, tokens: int, *, tpm: int | None = 100) -> Decision:
        return await self.limits.admit(
            "k1", job_id, rpm=None, max_concurrent=None, tpm=tpm, tokens=tokens
        )


def scenario(redis_url: str, body: Callable[[Limits], Awaitable[None]]) -> None:
    async def main() -> None:
        prefix = f"test-{uuid.uuid4().hex[:8]}"
        clock = FakeClock(START)
        client = aioredis.Redis.from_url(redis_url)
        try:
            limits = KeyLimits(client, key_prefix=prefix, clock=clock)
            await body(Limits(limits, clock, client, RedisKeys(prefix)))
        finally:
            await client.aclose()

    run(main())


def test_a_request_is_refused_when_the_window_s_tokens_and_its_estimate_exceed_the_limit(
    redis_url: str,
) -> None:
    async def body(world: Limits) -> None:
        assert (await world.admit("job_1", 60)).allowed
        refused = await world.admit("job_2", 50)
        assert (await world.admit("job_3", 40)).allowed  # exactly the limit
        world.clock.advance(39.5)  # the window's last half second
        still = await world.admit("job_4", 1)
        world.clock.advance(0.5)  # the next window
        fresh = await world.admit("job_5", 100)

        assert (refused.allowed, refused.limit, refused.tokens_used) == (
            False,
            KeyLimit.TOKENS_PER_MINUTE,
            60,
        )
        assert refused.retry_after == pytest.approx(40.0)
        assert still.limit is KeyLimit.TOKENS_PER_MINUTE
        assert still.retry_after == pytest.approx(0.5)
        assert still.tokens_used == 100
        assert fresh.allowed
        assert await world.limits.tokens_used("k1") == 100

    scenario(redis_url, body)


def test_a_request_larger_than_the_whole_limit_is_refused_with_no_wait(redis_url: str) -> None:
    async def body(world: Limits) -> None:
        refused = await world.admit("job_1", 101)

        assert refused == Decision(
            allowed=False, limit=KeyLimit.TOKENS_PER_MINUTE, retry_after=None, tokens_used=0
        )
        assert await world.limits.running(["k1"]) == [0]  # a refusal counts nothing
        assert await world.limits.tokens_used("k1") == 0

    scenario(redis_url, body)


def test_the_job_s_end_replaces_its_estimate_with_the_tokens_it_used(redis_url: str) -> None:
    async def body(world: Limits) -> None:
        for job in ("job_1", "job_2", "job_3", "job_4"):
            assert (await world.admit(job, 20)).allowed
        await world.limits.job_finished("k1", "job_1", tokens=35)  # the worker: usage
        await world.limits.job_finished("k1", "job_1", tokens=35)  # twice: booked once
        await world.limits.job_finished("k1", "job_2", tokens=0)  # never ran
        await world.limits.job_finished("k1", "job_3")  # usage unknown: the estimate stays
        # job_4 is still running: its estimate stays reserved.

        assert await world.limits.tokens_used("k1") == 35 + 0 + 20 + 20
        assert await world.redis.hkeys(world.keys.key_tpm_reserved) == [b"job_4 k1"]
        assert await world.limits.running(["k1"]) == [1]

    scenario(redis_url, body)


def test_a_job_ending_after_its_window_corrects_nothing_else(redis_url: str) -> None:
    async def body(world: Limits) -> None:
        assert (await world.admit("job_1", 80)).allowed
        world.clock.advance(60)
        assert (await world.admit("job_2", 80)).allowed  # a new window
        old_window = world.keys.key_tpm("k1", str(int(START // 60)))
        await world.redis.delete(old_window)  # as its expiry would
        await world.limits.job_finished("k1", "job_1", tokens=5)

        assert await world.limits.tokens_used("k1") == 80
        assert not await world.redis.exists(old_window)  # not brought back below zero

    scenario(redis_url, body)


def test_a_key_without_a_tpm_limit_leaves_no_trace_of_tokens(redis_url: str) -> None:
    async def body(world: Limits) -> None:
        for n in range(5):
            assert (await world.admit(f"job_{n}", 1_000_000, tpm=None)).allowed
        await world.limits.job_finished("k1", "job_0", tokens=12)

        found = [k async for k in world.redis.scan_iter(f"{world.keys.prefix}:*")]
        assert sorted(found) == sorted(
            [world.keys.key_running.encode(), world.keys.key_members.encode()]
        )

    scenario(redis_url, body)


def test_the_estimate_is_utf8_bytes_over_three_plus_the_answer_s_maximum() -> None:
    def tokens(content: str, **extra: Any) -> int:
        request = ChatCompletionRequest.model_validate(
            {"model": "m", "messages": [{"role": "user", "content": content}], **extra}
        )
        return request_tokens(request)

    assert tokens("a" * 30) == 10
    assert tokens("a" * 31) == 11
    assert tokens("日本語") == 3  # 9 bytes: about one token a character
    assert tokens("a" * 30, max_tokens=50) == 60
    assert tokens("a" * 30, max_tokens=50, max_completion_tokens=70, n=2) == 150


# Over HTTP: a live stack, a short window.

WINDOW = 10.0
"""The stack's TPM window (seconds): RELAYQ_API__KEY_TPM_WINDOW_SECONDS."""
_REDIS_DB = 4
_PREFIX = "relayq-tpm"


@dataclass
class Env:
    stack: Stack
    database_url: str
    redis: redis.Redis

    def key(self, **limits: Any) -> tuple[str, str]:
        """A new key's id and secret."""

        async def create() -> tuple[str, str]:
            database = Database(self.database_url)
            try:
                async with database.session() as session:
                    created = await create_key(session, name="tpm", **limits)
                    return created.id, created.secret
            finally:
                await database.aclose()

        return run(create())

    def client(self, secret: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.stack.base_url, headers={"Authorization": f"Bearer {secret}"}, timeout=10
        )


@pytest.fixture(scope="module")
def env(backend: str, redis_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with _database(backend, tmp_path_factory) as database_url:
        redis_url = f"{redis_server}/{_REDIS_DB}"
        client = redis.Redis.from_url(redis_url)
        client.flushdb()
        settings = {
            "RELAYQ_KEY_PREFIX": _PREFIX,
            "RELAYQ_API__KEY_TPM_WINDOW_SECONDS": str(WINDOW),
            "RELAYQ_PROVIDERS": json.dumps({"mock": {"type": "mock"}, "idle": {"type": "mock"}}),
            "RELAYQ_ROUTES": json.dumps(
                {
                    "mock": {"provider": "mock", "model": "mock"},
                    "mock-idle": {"provider": "idle", "model": "mock"},
                }
            ),
            "RELAYQ_WORKER__PROVIDERS": json.dumps(["mock"]),
        }
        with Stack(
            database_url=database_url,
            redis_url=redis_url,
            logs=tmp_path_factory.mktemp("tpm-logs"),
            env=settings,
            supervise=False,
        ) as stack:
            stack.start_api()
            stack.start_worker()
            yield Env(stack=stack, database_url=database_url, redis=client)
        client.close()


def _database(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    if backend == "postgresql":
        return scratch_postgres_database(os.environ["RELAYQ_TEST_DATABASE_URL"])
    url = f"sqlite:///{tmp_path_factory.mktemp('tpm') / 'relayq.db'}"
    reset_database(url)
    return contextlib.nullcontext(url)


def _early_in_a_window(need: float = 6.0) -> None:
    """Wait, if need be, until the current window has ``need`` seconds left: the steps
    that follow happen in one window (the API's clock is this machine's)."""
    wait_until(lambda: WINDOW - time.time() % WINDOW >= need, timeout=WINDOW, interval=0.1)


def _job(client: httpx.Client, *, model: str, max_tokens: int) -> httpx.Response:
    # "hi": 2 bytes, 1 token estimated; with max_tokens, 1 + max_tokens.
    return client.post("/v1/jobs", json=body("hi", model=model, max_tokens=max_tokens))


def test_over_the_limit_a_request_gets_openai_s_429_and_rate_limit_headers(env: Env) -> None:
    key_id, secret = env.key(tokens_per_minute=100)
    with env.client(secret) as client:
        _early_in_a_window()
        # mock-idle: no worker takes it, so its estimate stays reserved.
        first = _job(client, model="mock-idle", max_tokens=60)
        refused = _job(client, model="mock-idle", max_tokens=60)
        too_large = _job(client, model="mock-idle", max_tokens=200)
        sync = client.post("/v1/chat/completions", json=body("hi", max_tokens=60))

    assert first.status_code == 202, first.text
    assert refused.status_code == 429
    assert refused.json() == {
        "error": {
            "message": (
                f"Rate limit reached for key {key_id} on tokens per min (TPM): Limit 100, "
                f"Used 61, Requested 61. Please try again in {refused.headers['retry-after']}s."
            ),
            "type": "rate_limit_error",
            "param": None,
            "code": "rate_limit_exceeded",
            "request_id": refused.headers["x-request-id"],
        }
    }
    assert 1 <= int(refused.headers["retry-after"]) <= WINDOW
    assert refused.headers["x-ratelimit-limit-tokens"] == "100"
    assert refused.headers["x-ratelimit-remaining-tokens"] == "39"
    assert refused.headers["x-ratelimit-reset-tokens"] == f"{refused.headers['retry-after']}s"
    assert too_large.status_code == 429
    assert too_large.json()["error"]["message"].startswith(
        f"Request too large for key {key_id} on tokens per min (TPM): Limit 100, Requested 201."
    )
    assert "retry-after" not in too_large.headers
    assert sync.status_code == 429  # the sync lane counts against the same window
    assert sync.json()["error"]["code"] == "rate_limit_exceeded"


def test_the_window_frees_when_it_ends(env: Env) -> None:
    _, secret = env.key(tokens_per_minute=100)
    with env.client(secret) as client:
        _early_in_a_window()
        assert _job(client, model="mock-idle", max_tokens=90).status_code == 202
        refused = _job(client, model="mock-idle", max_tokens=90)
        admitted: list[httpx.Response] = []

        def admitted_again() -> bool:
            admitted.append(_job(client, model="mock-idle", max_tokens=90))
            return admitted[-1].status_code == 202

        wait_until(admitted_again, timeout=WINDOW + 5, interval=0.5)

    assert refused.status_code == 429
    assert admitted[0].status_code == 429  # refused until the window ended
    assert admitted[-1].status_code == 202


def test_a_finished_job_is_counted_at_the_tokens_it_used(env: Env) -> None:
    key_id, secret = env.key(tokens_per_minute=1000)
    reserved = RedisKeys(_PREFIX).key_tpm_reserved
    with env.client(secret) as client:
        _early_in_a_window(need=8.0)
        ran = submit(client, body("hi", max_tokens=500))  # 501 reserved
        done = wait_for_status(client, ran["id"], {"succeeded"}, timeout=WINDOW / 2)
        # Its end's effects in Redis follow its row's: wait for its reservation to go.
        wait_until(lambda: not env.redis.hexists(reserved, f"{ran['id']} {key_id}"), timeout=5)
        # With 501 still counted this would not fit; with the used tokens it does.
        queued = _job(client, model="mock-idle", max_tokens=899)
        refused = _job(client, model="mock-idle", max_tokens=899)

    used = done["usage"]["total_tokens"]
    assert 0 < used < 100
    assert queued.status_code == 202, queued.text
    assert refused.status_code == 429
    assert f"Used {used + 900}, Requested 900." in refused.json()["error"]["message"]


def test_a_key_without_tpm_is_not_counted(env: Env) -> None:
    key_id, secret = env.key()
    with env.client(secret) as client:
        jobs = [submit(client, body("hi", max_tokens=100_000)) for _ in range(3)]
        for job in jobs:
            wait_for_status(client, job["id"], {"succeeded"})

    keys = RedisKeys(_PREFIX)
    assert list(env.redis.scan_iter(keys.key_tpm(key_id, "*"))) == []
    assert not any(key_id.encode() in f for f in env.redis.hkeys(keys.key_tpm_reserved))
