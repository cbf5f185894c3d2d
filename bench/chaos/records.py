"""What a chaos run reads back from the store and the broker once its jobs have ended."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from sqlalchemy import create_engine, text

from relayq.store import sync_url
from relayq.store.spend import used_tokens

__all__ = [
    "Attempts",
    "Ledger",
    "Recovery",
    "attempts",
    "finished_at",
    "ledger",
    "recovery",
    "running",
    "statuses",
    "unacked",
]


def statuses(database_url: str, ids: list[str]) -> dict[str, str]:
    """The status of each of ``ids``."""
    engine = create_engine(sync_url(database_url))
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT id, status FROM jobs")).all()
    engine.dispose()
    wanted = set(ids)
    return {row.id: row.status for row in rows if row.id in wanted}


def running(database_url: str) -> int:
    """How many jobs a worker holds in flight now (claimed and not yet ended)."""
    engine = create_engine(sync_url(database_url))
    with engine.connect() as connection:
        count = connection.execute(
            text("SELECT count(*) FROM jobs WHERE status = 'running'")
        ).scalar_one()
    engine.dispose()
    return int(count)


def finished_at(database_url: str) -> dict[str, float | None]:
    engine = create_engine(sync_url(database_url))
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT id, finished_at FROM jobs")).all()
    engine.dispose()
    return {row.id: row.finished_at for row in rows}


@dataclass(frozen=True)
class Attempts:
    jobs_claimed_again: int
    """Jobs with more than one claim (``run > 1``)."""
    most_successes_of_a_job: int
    repeated_successes: int
    """Successful attempts beyond one per job: calls that succeeded for a job whose
    outcome another call wrote."""


def attempts(database_url: str) -> Attempts:
    engine = create_engine(sync_url(database_url))
    with engine.connect() as connection:
        reruns = connection.execute(text("SELECT count(*) FROM jobs WHERE run > 1")).scalar_one()
        most = connection.execute(
            text(
                "SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM attempts "
                "WHERE status = 'succeeded' GROUP BY job_id) AS per_job"
            )
        ).scalar_one()
        successes = connection.execute(
            text("SELECT count(*) FROM attempts WHERE status = 'succeeded'")
        ).scalar_one()
        jobs = connection.execute(
            text("SELECT count(DISTINCT job_id) FROM attempts WHERE status = 'succeeded'")
        ).scalar_one()
    engine.dispose()
    return Attempts(
        jobs_claimed_again=int(reruns),
        most_successes_of_a_job=int(most),
        repeated_successes=int(successes) - int(jobs),
    )


@dataclass(frozen=True)
class Recovery:
    """How long the jobs a fault caught took to end after it.

    A job is caught by a fault when it was accepted before it and ended after
    it (in flight, queued or taken); its delay is the time from the last fault
    that caught it to its end. Without faults the longest delay would be about
    a job's own latency (1 to 3 s in the runs), so what exceeds that is recovery.
    """

    jobs_caught: int
    median_seconds: float
    max_seconds: float
    runs_cut: int
    """Jobs whose run a fault cut (their last such run, when several were)."""
    cut_noticed_median_seconds: float
    """From the fault to the cut run's release (its ``interrupted`` attempt): at once
    when a supervisor hands it back, a lease later when nothing does."""
    cut_noticed_max_seconds: float
    cut_to_end_median_seconds: float
    """From the fault to the end of the job whose run it cut."""
    cut_to_end_max_seconds: float
    last_end_after_last_fault_seconds: float
    jobs_over_a_lease: int
    """Jobs that took longer than the lease from acceptance to end."""
    jobs_over_the_visibility_timeout: int
    """Jobs that took longer than the visibility timeout: their message went with a
    dead worker, and came back on the broker's redelivery or the reconciler's republish."""


def recovery(
    database_url: str,
    ids: list[str],
    faults: list[float],
    *,
    lease_seconds: float,
    visibility_timeout: float,
) -> Recovery:
    """``faults``: the wall-clock moments (``time.time()``) of the kills or Redis stops."""
    engine = create_engine(sync_url(database_url))
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT id, created_at, finished_at FROM jobs")).all()
        cuts = connection.execute(
            text(
                "SELECT job_id, created_at, latency_ms FROM attempts "
                "WHERE status = 'interrupted' ORDER BY created_at"
            )
        ).all()
    engine.dispose()
    wanted = set(ids)
    ended = [row for row in rows if row.id in wanted and row.finished_at is not None]
    delays: list[float] = []
    for row in ended:
        caught = [moment for moment in faults if row.created_at < moment < row.finished_at]
        if caught:
            delays.append(row.finished_at - max(caught))
    # A job's last cut run: it began ``latency_ms`` before its release; the first
    # fault after it began is the one that cut it.
    last_cut = {cut.job_id: cut for cut in cuts}
    end_of = {row.id: row.finished_at for row in ended}
    noticed: list[float] = []
    to_end: list[float] = []
    for job_id, cut in last_cut.items():
        began = cut.created_at - cut.latency_ms / 1000
        fault = min((moment for moment in faults if moment >= began), default=None)
        if fault is None or job_id not in end_of:
            continue
        noticed.append(cut.created_at - fault)
        to_end.append(end_of[job_id] - fault)
    took = [row.finished_at - row.created_at for row in ended]
    last_end = max((row.finished_at for row in ended), default=0.0)
    return Recovery(
        jobs_caught=len(delays),
        median_seconds=_rounded(statistics.median, delays),
        max_seconds=_rounded(max, delays),
        runs_cut=len(noticed),
        cut_noticed_median_seconds=_rounded(statistics.median, noticed),
        cut_noticed_max_seconds=_rounded(max, noticed),
        cut_to_end_median_seconds=_rounded(statistics.median, to_end),
        cut_to_end_max_seconds=_rounded(max, to_end),
        last_end_after_last_fault_seconds=round(last_end - max(faults), 1) if faults else 0.0,
        jobs_over_a_lease=sum(1 for seconds in took if seconds > lease_seconds),
        jobs_over_the_visibility_timeout=sum(1 for seconds in took if seconds > visibility_timeout),
    )


def _rounded(summary: Callable[[list[float]], float], values: list[float]) -> float:
    return round(summary(values), 1) if values else 0.0


def unacked(redis_url: str) -> int:
    """Messages the broker has delivered and not had acknowledged (kombu's ``unacked`` hash).

    Once every job has ended, these are the messages dead workers held: the
    broker redelivers them after the visibility timeout."""
    client = redis.Redis.from_url(redis_url)
    try:
        return int(client.hlen("unacked"))
    finally:
        client.close()


@dataclass(frozen=True)
class Ledger:
    """A key's budget ledger beside what its jobs cost, summed over its windows."""

    reserved_usd: float
    reserved_tokens: int
    spent_usd: float
    spent_tokens: int
    jobs_cost_usd: float
    """The sum of the key's jobs' ``cost_usd``."""
    jobs_tokens: int
    """The tokens the usage of the key's ended jobs counts."""
    jobs_holding: int
    """Ended jobs still holding a reservation (``budget_window`` set)."""

    @property
    def exact(self) -> bool:
        """Nothing left reserved, and spent is what the jobs cost."""
        return (
            self.jobs_holding == 0
            and math.isclose(self.reserved_usd, 0.0, abs_tol=1e-9)
            and self.reserved_tokens == 0
            and math.isclose(self.spent_usd, self.jobs_cost_usd, rel_tol=1e-9, abs_tol=1e-12)
            and self.spent_tokens == self.jobs_tokens
        )


def ledger(database_url: str, key_id: str) -> Ledger:
    """``key_id``'s budget ledger and its jobs' costs (read once every job has ended)."""
    engine = create_engine(sync_url(database_url))
    with engine.connect() as connection:
        spend = connection.execute(
            text(
                "SELECT coalesce(sum(reserved_usd), 0), coalesce(sum(reserved_tokens), 0), "
                "coalesce(sum(spent_usd), 0), coalesce(sum(spent_tokens), 0) "
                "FROM budget_spend WHERE key_id = :key"
            ),
            {"key": key_id},
        ).one()
        cost, holding = connection.execute(
            text(
                "SELECT coalesce(sum(cost_usd), 0), "
                "coalesce(sum(CASE WHEN budget_window IS NULL THEN 0 ELSE 1 END), 0) "
                "FROM jobs WHERE key_id = :key"
            ),
            {"key": key_id},
        ).one()
        usages = connection.execute(
            text("SELECT usage FROM jobs WHERE key_id = :key AND usage IS NOT NULL"),
            {"key": key_id},
        ).scalars()
        tokens = sum(used_tokens(_json(usage)) for usage in usages)
    engine.dispose()
    return Ledger(
        reserved_usd=float(spend[0]),
        reserved_tokens=int(spend[1]),
        spent_usd=float(spend[2]),
        spent_tokens=int(spend[3]),
        jobs_cost_usd=float(cost),
        jobs_tokens=tokens,
        jobs_holding=int(holding),
    )


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value
