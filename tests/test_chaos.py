"""Short chaos runs (the long ones: python -m bench.chaos.run; docs/reliability.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.chaos.faults import FaultConfig, run_fault_mix
from bench.chaos.scenario import ChaosConfig, run_chaos

pytestmark = pytest.mark.slow(seconds=60)  # whole stacks under faults for a minute or more


@pytest.fixture
def chaos_database(backend: str, tmp_path: Path, private_database_url: str) -> str:
    return private_database_url


@pytest.mark.timeout(300)
def test_workers_killed_mid_run_lose_nothing_and_record_once(
    chaos_database: str, tmp_path: Path
) -> None:
    """Machines lost whole (worker and supervisor SIGKILLed; a new worker started), on the
    recovery settings relayq ships: nothing hands the dead workers' jobs back but the
    new worker's sweep for silent ones, and every job a kill caught ends within one
    lease of it; none waits for the broker's redelivery. The key has a budget: its
    ledger holds nothing reserved afterwards, and spent is what the jobs cost."""
    config = ChaosConfig(
        database_url=chaos_database,
        logs=tmp_path,
        jobs=150,
        min_latency_ms=500,
        max_latency_ms=1500,
        kills=2,
        submit_seconds=8,
        # Not two shipped leases (120 s): no dead worker's call lives on to write late.
        quiet_seconds=10,
    ).on_shipped_recovery()
    report = run_chaos(config)

    assert report.jobs == 150
    assert report.succeeded == 150, report
    assert report.other_statuses == {}
    assert report.outcome_rewrites == 0
    assert report.webhook_jobs_not_exactly_once == 0, report
    assert report.jobs_run_more_than_once > 0, "the kills hit no job in flight"
    recovery = report.recovery
    assert recovery is not None
    assert recovery.jobs_caught > 0
    assert recovery.max_seconds < config.lease_seconds, recovery
    assert recovery.jobs_over_the_visibility_timeout == 0, recovery
    # The key's budget ledger is exact after the kills: every reservation settled
    # (in its outcome's transaction, or by the reconciler's sweep), once each.
    ledger = report.ledger
    assert ledger is not None
    assert ledger.jobs_holding == 0, ledger
    assert ledger.reserved_usd == pytest.approx(0.0, abs=1e-9), ledger
    assert ledger.reserved_tokens == 0, ledger
    assert ledger.jobs_cost_usd > 0, ledger
    assert ledger.spent_usd == pytest.approx(ledger.jobs_cost_usd, rel=1e-9), ledger
    assert ledger.spent_tokens == ledger.jobs_tokens, ledger


@pytest.mark.timeout(300)
@pytest.mark.usefixtures("sqlite_only")
def test_a_redis_restart_mid_run_loses_nothing(chaos_database: str, tmp_path: Path) -> None:
    report = run_chaos(
        ChaosConfig(
            database_url=chaos_database,
            logs=tmp_path,
            jobs=150,
            min_latency_ms=500,
            max_latency_ms=1500,
            kills=0,
            redis_restarts=1,
            submit_seconds=8,
            lease_seconds=3,
        )
    )

    assert report.succeeded == 150, report
    assert report.outcome_rewrites == 0
    assert report.webhook_jobs_not_exactly_once == 0


@pytest.mark.timeout(300)
@pytest.mark.usefixtures("sqlite_only")
def test_a_flaky_upstream_every_job_ends_within_its_limits(
    chaos_database: str, redis_server: str, tmp_path: Path
) -> None:
    """The limit is checked over ten-second windows: the limiter paces requests, so
    a short window holds its share of the minute (and a burst would show), and the
    run need not outlast a minute to fill one."""
    report = run_fault_mix(
        FaultConfig(
            database_url=chaos_database,
            redis_url=f"{redis_server}/14",
            logs=tmp_path,
            jobs=50,
            rpm=240,
            submit_seconds=5,
        )
    )

    assert set(report.statuses) <= {"succeeded", "failed"}, report
    assert sum(report.statuses.values()) == 50
    assert report.failed_without_a_clear_error == 0
    assert report.fallbacks > 0
    allowed = report.paced_limit(10.0)
    assert allowed == 41
    # The limit was binding (more calls were wanted than ten seconds allow, and the
    # busiest ten seconds came near it: not all the way, because while the breaker
    # is open the calls go to the fallback instead)...
    assert report.upstream_calls > allowed
    assert report.most_upstream_calls_in_ten_seconds >= 25
    # ...and never exceeded, counted as the upstream saw the calls arrive.
    assert report.most_upstream_calls_in_ten_seconds <= allowed, report
    assert report.most_upstream_calls_in_a_minute <= 240
    assert "open" in report.breaker_states_seen, report.breaker_states_seen
    assert report.breaker_states_seen[-1] == "closed", report.breaker_states_seen
    assert report.upstream_outcomes.get("500", 0) > 0
    assert report.upstream_outcomes.get("429", 0) > 0
