"""The retry policy: which failures are retried, which fall back, which fail."""

from __future__ import annotations

import random

import pytest

from relayq.providers.errors import (
    AuthenticationFailed,
    InvalidRequest,
    MalformedResponse,
    ModelNotFound,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
)
from relayq.retry import Next, RetrySettings, backoff, decide

SETTINGS = RetrySettings(max_attempts_per_deployment=3, max_attempts=6)


def step(error: ProviderError, on_deployment: int = 1, total: int = 1) -> Next:
    return decide(
        error, attempts_on_deployment=on_deployment, attempts_total=total, settings=SETTINGS
    ).next


@pytest.mark.parametrize(
    "error",
    [
        ProviderUnavailable("boom", status_code=503),
        ProviderTimeout("slow"),
        ProviderConnectionError("refused"),
        MalformedResponse("garbage"),
        RateLimited("slow down", retry_after=2),
    ],
)
def test_provider_side_failures_are_retried_then_fall_back(error: ProviderError) -> None:
    assert step(error, on_deployment=1) is Next.RETRY
    assert step(error, on_deployment=2) is Next.RETRY
    assert step(error, on_deployment=3) is Next.FALLBACK


def test_a_client_error_fails_at_once_without_fallback() -> None:
    assert step(InvalidRequest("bad field", status_code=400)) is Next.FAIL


@pytest.mark.parametrize(
    "error",
    [
        AuthenticationFailed("bad key", status_code=401),
        ModelNotFound("no such model", status_code=404),
        ProviderUnavailable("overloaded", status_code=529),
    ],
)
def test_failures_of_the_deployment_itself_fall_back_at_once(error: ProviderError) -> None:
    assert step(error) is Next.FALLBACK


def test_the_job_budget_ends_everything() -> None:
    assert step(ProviderTimeout("slow"), on_deployment=1, total=6) is Next.FAIL


def test_retry_after_is_honoured_over_a_shorter_backoff() -> None:
    decision = decide(
        RateLimited("wait", retry_after=17),
        attempts_on_deployment=1,
        attempts_total=1,
        settings=SETTINGS,
    )

    assert decision.next is Next.RETRY
    assert decision.delay == 17


def test_backoff_is_full_jitter_under_an_exponential_ceiling() -> None:
    rng = random.Random(11)
    settings = RetrySettings(backoff_base_seconds=1, backoff_max_seconds=8)

    samples = {n: [backoff(n, settings, rng) for _ in range(2000)] for n in (1, 2, 3, 4, 6)}

    assert max(samples[1]) <= 1
    assert max(samples[2]) <= 2
    assert max(samples[3]) <= 4
    assert max(samples[6]) <= 8
    assert min(samples[4]) < 0.5  # full jitter reaches down to zero
    assert 3.5 < max(samples[6]) <= 8
    assert sum(samples[4]) / 2000 == pytest.approx(4, rel=0.1)
