"""Job throughput at depth: jobs through ``POST /v1/jobs`` against direct calls to the mock.

Both sides keep ``depth`` calls in flight against the mock answering in
``latency_ms``. The direct side makes the call relayq's worker makes (a
streamed completion read to ``[DONE]``) from asyncio + aiohttp. The relayq
side submits jobs over HTTP and tops the jobs in flight back up to ``depth``
as they finish; it sees them finish by counting ended jobs in SQL every
20 ms (a cheap read beside the stack, not an API call). The rate of each is
taken between the 10th and 90th percentile of finish times: the rate at that
depth, without the ramp-up and the drain.

Beside the rates, each side's CPU per job is read from /proc: on the direct
side the client's and the mock's, on relayq's every process of the stack as
well. That shows whether a rate is bound by waiting or by CPU, and what the
target leaves per job on this machine's cores.
"""

from __future__ import annotations

import asyncio
import os
import resource
import time
from typing import Any

from bench.perf.clients import chat_body
from bench.perf.scenarios.base import Context, Figure, RunOptions, ScenarioResult, closed_loop
from bench.perf.stack import StackConfig
from bench.perf.stats import median, ratio, steady_rate

__all__ = ["relayq_jobs_at_depth", "run", "stack"]

LATENCY_MS = 1000
MAIN_DEPTH = 500
TARGET_SHARE = 0.5
_POLL_SECONDS = 0.02


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


def _total(depth: int, quick: bool) -> int:
    return max(300, depth * (3 if quick else 4))


async def relayq_jobs_at_depth(
    ctx: Context, *, depth: int, total: int, body: dict[str, Any]
) -> tuple[list[float], list[str]]:
    """Run ``total`` jobs, ``depth`` in flight; (finish times of succeeded jobs, errors)."""
    since = time.time()
    submitted = 0
    errors: list[str] = []
    posts: set[asyncio.Task[None]] = set()

    async def submit() -> None:
        try:
            await ctx.jobs.submit(body)
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")

    while True:
        done = await asyncio.to_thread(ctx.stack.finished_count, since=since)
        if done + len(errors) >= total:
            break
        room = min(depth - (submitted - done - len(errors)), total - submitted)
        for _ in range(max(0, room)):
            task = asyncio.create_task(submit())
            posts.add(task)
            task.add_done_callback(posts.discard)
            submitted += 1
        await asyncio.sleep(_POLL_SECONDS)
    outcomes = await asyncio.to_thread(ctx.stack.job_outcomes, since=since)
    finished = [at for status, at in outcomes if status == "succeeded" and at is not None]
    errors += [f"job {status}" for status, _ in outcomes if status != "succeeded"]
    return finished, errors


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


async def _pair(ctx: Context, depth: int, total: int) -> dict[str, float]:
    before, client_before = ctx.stack.cpu_seconds(), _own_cpu_seconds()
    direct_finished, direct_errors = await closed_loop(
        lambda: ctx.direct.stream(chat_body(latency_ms=LATENCY_MS, stream=True)),
        depth=depth,
        total=total,
    )
    # The direct side is the client and the mock alone.
    direct_cpu = _cpu_ms_per_job(ctx, before, client_before, total)
    before, client_before = ctx.stack.cpu_seconds(), _own_cpu_seconds()
    async with ctx.profiled(f"throughput-d{depth}"):
        relayq_finished, relayq_errors = await relayq_jobs_at_depth(
            ctx, depth=depth, total=total, body=chat_body(latency_ms=LATENCY_MS)
        )
    relayq_cpu = _cpu_ms_per_job(ctx, before, client_before, total)
    direct_rate = steady_rate(direct_finished)
    relayq_rate = steady_rate(relayq_finished)
    return {
        "direct": direct_rate,
        "relayq": relayq_rate,
        "ratio": ratio(relayq_rate, direct_rate),
        "direct_errors": float(len(direct_errors)),
        "relayq_errors": float(len(relayq_errors)),
        "direct_cpu_ms": direct_cpu["cpu_upstream"] + direct_cpu["cpu_client"],
        "relayq_cpu_ms": sum(relayq_cpu.values()),
        **relayq_cpu,
    }


def _cpu_figure(depth: int, reps: list[dict[str, float]], direct_rate: float) -> Figure:
    """CPU per job over every process against the direct call's, and the budget at the target."""
    relayq = median([r["relayq_cpu_ms"] for r in reps])
    direct = median([r["direct_cpu_ms"] for r in reps])
    parts = sorted({key for r in reps for key in r if key.startswith("cpu_")})
    shares = ", ".join(f"{key[4:]} {median([r.get(key, 0.0) for r in reps]):.1f}" for key in parts)
    cores = os.cpu_count() or 1
    budget = cores * 1000 / (TARGET_SHARE * direct_rate) if direct_rate else float("nan")
    return Figure(
        name=f"CPU per job, all processes, {depth} in flight",
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


async def run(ctx: Context) -> ScenarioResult:
    result = ScenarioResult()
    sweep: dict[str, Any] = {}
    # Warm up both paths (connections, pools, imports) before measuring.
    await relayq_jobs_at_depth(ctx, depth=50, total=100, body=chat_body(latency_ms=0))
    for depth in _depths(ctx):
        total = _total(depth, ctx.options.quick)
        reps = [await _pair(ctx, depth, total) for _ in range(ctx.options.repeat)]
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
            result.figures.append(_cpu_figure(depth, reps, direct))
    result.data["sweep"] = sweep
    return result
