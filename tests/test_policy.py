"""The job policy: before a call, after its admission, and after a failed call."""

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
from relayq.resilience.policy import (
    Action,
    RetrySettings,
    Step,
    after_admission,
    after_failure,
    backoff,
    before_call,
)

SETTINGS = RetrySettings(max_attempts_per_deployment=3, max_attempts=6)


def step(error: ProviderError, on_deployment: int = 1, total: int = 1) -> Action:
    return after_failure(
        error, attempts_on_deployment=on_deployment, attempts_total=total, settings=SETTINGS
    ).action


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
    assert step(error, on_deployment=1) is Action.RETRY
    assert step(error, on_deployment=2) is Action.RETRY
    assert step(error, on_deployment=3) is Action.FALLBACK


def test_a_client_error_fails_at_once_without_fallback() -> None:
    assert step(InvalidRequest("bad field", status_code=400)) is Action.FAIL


@pytest.mark.parametrize(
    "error",
    [
        AuthenticationFailed("bad key", status_code=401),
        ModelNotFound("no such model", status_code=404),
        ProviderUnavailable("overloaded", status_code=529),
    ],
)
def test_failures_of_the_deployment_itself_fall_back_at_once(error: ProviderError) -> None:
    assert step(error) is Action.FALLBACK


def test_the_job_budget_ends_everything() -> None:
    assert step(ProviderTimeout("slow"), on_deployment=1, total=6) is Action.FAIL


def test_retry_after_is_honoured_over_a_shorter_backoff() -> None:
    decision = after_failure(
        RateLimited("wait", retry_after=17),
        attempts_on_deployment=1,
        attempts_total=1,
        settings=SETTINGS,
    )

    assert decision.action is Action.RETRY
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


@pytest.mark.parametrize(
    ("now", "expires_at", "not_before", "expected"),
    [
        (100.0, None, None, Step(Action.CALL)),
        (100.0, 100.0, None, Action.EXPIRE),  # the deadline is inclusive
        (100.0, 150.0, None, Step(Action.CALL)),
        (100.0, 99.0, 160.0, Action.EXPIRE),  # expiry wins over an early delivery
        (100.0, None, 160.0, Step(Action.WAIT, delay=60.0, reason="not yet due")),
        (100.0, None, 100.04, Step(Action.CALL)),  # within the tolerance: run it
        (100.0, None, 0.0, Step(Action.CALL)),  # no countdown
    ],
)
def test_before_a_call_a_job_expires_waits_for_its_countdown_or_is_called(
    now: float, expires_at: float | None, not_before: float | None, expected: Step | Action
) -> None:
    step = before_call(now=now, expires_at=expires_at, not_before=not_before)
    if isinstance(expected, Action):
        assert step.action is expected
        assert step.reason
    else:
        assert step == expected


@pytest.mark.parametrize(
    ("caller_left", "wait", "breaker_allows", "expected"),
    [
        (False, 0.0, True, Action.CALL),
        (True, 2.0, False, Action.CANCEL),  # a caller gone outranks the rest
        (False, 2.0, False, Action.WAIT),  # a rate limit outranks the breaker
        (False, 0.0, False, Action.FALLBACK),
    ],
)
def test_after_admission_the_job_is_cancelled_waits_falls_back_or_is_called(
    caller_left: bool, wait: float, breaker_allows: bool, expected: Action
) -> None:
    step = after_admission(caller_left=caller_left, wait=wait, breaker_allows=breaker_allows)
    assert step.action is expected
    assert step.delay == (wait if expected is Action.WAIT else 0.0)
