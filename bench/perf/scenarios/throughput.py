"""Job throughput at depth: jobs through ``POST /v1/jobs`` against direct calls to the mock.

Both sides keep ``depth`` calls in flight against the mock answering in
``latency_ms``. The direct side makes the call relayq's worker makes for a job
nobody streams (a whole completion) from asyncio + aiohttp. The relayq
side submits jobs over HTTP and tops the jobs in flight back up to ``depth``
as they end; it learns of each end from relayq's event firehose
(:mod:`bench.perf.outcomes`), then reads the block's jobs from SQL once, for
their finish times and to check what the firehose said. The rate of each is
its completions over the time from the block's start to its last completion
(:func:`bench.perf.stats.closed_loop_rate`): whole cycles of the closed loop.
The rate between the 10th and 90th percentile of finish times, used before,
is kept in the data: it over-states a side whose calls end in waves, as the
direct calls of a fixed latency do, by up to a fifth.

Beside the rates, each side's CPU per job is read from /proc: on the direct
side the client's and the mock's, on relayq's every process of the stack as
well. That shows whether a rate is bound by waiting or by CPU, and what the
target leaves per job on this machine's cores. The harness's own client is
held to costing less per job than relayq's own processes: it shares the cores.
"""

from __future__ import annotations

import asyncio
import os
import resource
import time
from dataclasses import dataclass
from typing import Any

from bench.perf.clients import chat_body
from bench.perf.outcomes import JobOutcomes
from bench.perf.scenarios.base import Context, Figure, RunOptions, ScenarioResult, closed_loop
from bench.perf.stack import StackConfig
from bench.perf.stats import closed_loop_rate, median, ratio, steady_rate

__all__ = [
    "JobsRun",
    "client_figure",
    "cpu_figure",
    "measure_pair",
    "relayq_jobs_at_depth",
    "run",
    "stack",
    "total_jobs",
]

LATENCY_MS = 1000
MAIN_DEPTH = 500
TARGET_SHARE = 0.5
_STALL_SECONDS = 120.0
_NOT_RELAYQ = {"cpu_client", "cpu_upstream"}


def stack(options: RunOptions) -> StackConfig:
    return StackConfig(
        workers=options.workers,
        concurrency=MAIN_DEPTH,
        database=options.database,
        redis=options.redis,
        log_level=options.log_level,
    )


def _depths(ctx: Context) -> list[int]:
    return [100, MAIN_DEPTH] if ctx.options.quick else [50, 100, 250, MAIN_DEPTH]


def total_jobs(depth: int, quick: bool) -> int:
    """Jobs per block at ``depth``."""
    return max(300, depth * (3 if quick else 4))


@dataclass
class JobsRun:
    """What a block of jobs came to."""

    finished: list[float]
    """Finish times (SQL's ``finished_at``) of the jobs that succeeded."""
    errors: list[str]
    """Failed submissions, jobs that did not succeed, and any disagreement between
    the firehose and SQL."""
    firehose_entries: int
    firehose_reads: int


async def relayq_jobs_at_depth(
    ctx: Context, *, depth: int, total: int, body: dict[str, Any]
) -> JobsRun:
    """Run ``total`` jobs, ``depth`` in flight, until every one has ended."""
    since = time.time()
    errors: list[str] = []
    async with ctx.outcomes() as outcomes:
        await _keep_in_flight(ctx, outcomes, depth=depth, total=total, body=body, errors=errors)
    records = await asyncio.to_thread(ctx.stack.job_outcomes, since=since)
    errors += outcomes.disagreements({job: status for job, (status, _) in records.items()})
    errors += [f"job {status}" for status, _ in records.values() if status != "succeeded"]
    finished = [at for status, at in records.values() if status == "succeeded" and at is not None]
    return JobsRun(finished, errors, outcomes.entries, outcomes.reads)


async def _keep_in_flight(
    ctx: Context,
    outcomes: JobOutcomes,
    *,
    depth: int,
    total: int,
    body: dict[str, Any],
    errors: list[str],
) -> None:
    """Submit ``total`` jobs, topping up to ``depth`` in flight as each ends."""
    posts: set[asyncio.Task[None]] = set()
    submitted = 0

    async def submit() -> None:
        try:
            outcomes.expect(await ctx.jobs.submit(body))
        except Exception as exc:  # counted and reported, never hidden
            errors.append(f"{type(exc).__name__}: {exc}")
            outcomes.wake()

    while outcomes.ended + len(errors) < total:
        room = min(depth - (submitted - outcomes.ended - len(errors)), total - submitted)
        for _ in range(max(0, room)):
            task = asyncio.create_task(submit())
            posts.add(task)
            task.add_done_callback(posts.discard)
            submitted += 1
        await outcomes.wait(stall=_STALL_SECONDS)


def _own_cpu_seconds() -> float:
    """CPU time of this (the client's) process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _cpu_ms_per_job(
    ctx: Context, before: dict[str, float], client_before: float, jobs: int
) -> dict[str, float]:
    """Each process's CPU per job since ``before``, as ``cpu_<process>`` (ms)."""
    after = ctx.stack.cpu_seconds()
    spent = {name: after[name] - before.get(name, 0.0) for name in after}
    spent["client"] = _own_cpu_seconds() - client_before
    return {f"cpu_{name}": seconds * 1000 / jobs for name, seconds in spent.items()}


async def measure_pair(ctx: Context, *, depth: int, total: int, label: str) -> dict[str, float]:
    """A direct block then a relayq block of ``total`` calls/jobs at ``depth``: one repetition."""
    before, client_before = ctx.stack.cpu_seconds(), _own_cpu_seconds()
    direct_started = time.time()
    direct_finished, direct_errors = await closed_loop(
        lambda: ctx.direct.complete(chat_body(latency_ms=LATENCY_MS)),
        depth=depth,
        total=total,
    )
    # The direct side is the client and the mock alone.
    direct_cpu = _cpu_ms_per_job(ctx, before, client_before, total)
    before, client_before = ctx.stack.cpu_seconds(), _own_cpu_seconds()
    relayq_started = time.time()
    async with ctx.profiled(label):
        jobs = await relayq_jobs_at_depth(
            ctx, depth=depth, total=total, body=chat_body(latency_ms=LATENCY_MS)
        )
    relayq_cpu = _cpu_ms_per_job(ctx, before, client_before, total)
    direct_rate = closed_loop_rate(direct_finished, started=direct_started)
    relayq_rate = closed_loop_rate(jobs.finished, started=relayq_started)
    return {
        "direct": direct_rate,
        # The rate between the 10th and 90th percentile of finish times, as measured
        # before (it over-states a side whose calls end in waves): for the record.
        "direct_p10_p90": steady_rate(direct_finished),
        "relayq_p10_p90": steady_rate(jobs.finished),
        "relayq": relayq_rate,
        "ratio": ratio(relayq_rate, direct_rate),
        "direct_errors": float(len(direct_errors)),
        "relayq_errors": float(len(jobs.errors)),
        "direct_cpu_ms": direct_cpu["cpu_upstream"] + direct_cpu["cpu_client"],
        "relayq_cpu_ms": sum(relayq_cpu.values()),
        "relayq_own_cpu_ms": sum(v for k, v in relayq_cpu.items() if k not in _NOT_RELAYQ),
        "client_cpu_ms": relayq_cpu["cpu_client"],
        "firehose_entries_per_job": jobs.firehose_entries / total,
        "firehose_reads_per_job": jobs.firehose_reads / total,
        **relayq_cpu,
    }


def cpu_figure(
    depth: int, reps: list[dict[str, float]], direct_rate: float, *, label: str = ""
) -> Figure:
    """CPU per job over every process against the direct call's, and the budget at the target."""
    relayq = median([r["relayq_cpu_ms"] for r in reps])
    direct = median([r["direct_cpu_ms"] for r in reps])
    parts = sorted({key for r in reps for key in r if key.startswith("cpu_")})
    shares = ", ".join(f"{key[4:]} {median([r.get(key, 0.0) for r in reps]):.1f}" for key in parts)
    cores = os.cpu_count() or 1
    budget = cores * 1000 / (TARGET_SHARE * direct_rate) if direct_rate else float("nan")
    return Figure(
        name=f"{label}CPU per job, all processes, {depth} in flight",
        unit="ms",
        relayq=relayq,
        direct=direct,
        ratio=ratio(relayq, direct),
        target="context",
        passed=None,
        repetitions=reps,
        note=(
            f"ms of CPU per job by process: {shares}; the direct side is the client and the "
            f"mock; at the target rate ({TARGET_SHARE:.0%} of {direct_rate:.0f} jobs/s) "
            f"{cores} cores allow {budget:.1f} ms per job in all"
        ),
    )


def client_figure(depth: int, reps: list[dict[str, float]], *, label: str = "") -> Figure:
    """The harness client's CPU per job beside relayq's own processes' (not the mock's)."""
    client = median([r["client_cpu_ms"] for r in reps])
    own = median([r["relayq_own_cpu_ms"] for r in reps])
    entries = median([r["firehose_entries_per_job"] for r in reps])
    reads = median([r["firehose_reads_per_job"] for r in reps])
    return Figure(
        name=f"{label}harness client CPU per job, {depth} in flight",
        unit="ms",
        relayq=client,
        direct=None,
        ratio=ratio(client, own),
        target="< relayq's own CPU per job",
        passed=client < own,
        repetitions=reps,
        note=(
            f"the harness's process (submitting jobs, reading the event firehose: "
            f"{entries:.1f} entries and {reads:.2f} reads per job) against relayq's own "
            f"processes (API, workers, Redis, and PostgreSQL's when used) at {own:.1f} ms "
            f"per job; the ratio is the client's share of that"
        ),
    )


async def run(ctx: Context) -> ScenarioResult:
    result = ScenarioResult()
    sweep: dict[str, Any] = {}
    # Warm up both paths (connections, pools, imports) before measuring.
    await relayq_jobs_at_depth(ctx, depth=50, total=100, body=chat_body(latency_ms=0))
    for depth in _depths(ctx):
        total = total_jobs(depth, ctx.options.quick)
        reps = [
            await measure_pair(ctx, depth=depth, total=total, label=f"throughput-d{depth}")
            for _ in range(ctx.options.repeat)
        ]
        sweep[str(depth)] = {"total": total, "repetitions": reps}
        relayq = median([r["relayq"] for r in reps])
        direct = median([r["direct"] for r in reps])
        share = median([r["ratio"] for r in reps])
        errors = sum(r["relayq_errors"] for r in reps)
        main = depth == MAIN_DEPTH
        result.figures.append(
            Figure(
                name=f"job throughput, {depth} in flight, mock 1 s",
                unit="jobs/s",
                relayq=relayq,
                direct=direct,
                ratio=share,
                target="≥ 50 % of the ceiling" if main else "",
                passed=(share >= TARGET_SHARE and errors == 0) if main else None,
                repetitions=reps,
                note=f"{total} jobs per repetition; {int(errors)} relayq errors",
            )
        )
        if main:
            result.figures.append(cpu_figure(depth, reps, direct))
            result.figures.append(client_figure(depth, reps))
    result.data["sweep"] = sweep
    return result
