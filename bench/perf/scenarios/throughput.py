"""Job throughput at depth: jobs through ``POST /v1/jobs`` against direct calls to the mock.

Both sides keep ``depth`` calls in flight against the mock answering in
``latency_ms``. The direct side makes the call relayq's worker makes (a
streamed completion read to ``[DONE]``) from asyncio + aiohttp. The relayq
side submits jobs over HTTP and tops the jobs in flight back up to ``depth``
as they finish; it sees them finish by counting ended jobs in SQL every
20 ms (a cheap read beside the stack, not an API call). The rate of each is
taken between the 10th and 90th percentile of finish times: the rate at that
depth, without the ramp-up and the drain.
"""

from __future__ import annotations

import asyncio
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


async def _pair(ctx: Context, depth: int, total: int) -> dict[str, float]:
    direct_finished, direct_errors = await closed_loop(
        lambda: ctx.direct.stream(chat_body(latency_ms=LATENCY_MS, stream=True)),
        depth=depth,
        total=total,
    )
    async with ctx.profiled(f"throughput-d{depth}"):
        relayq_finished, relayq_errors = await relayq_jobs_at_depth(
            ctx, depth=depth, total=total, body=chat_body(latency_ms=LATENCY_MS)
        )
    direct_rate = steady_rate(direct_finished)
    relayq_rate = steady_rate(relayq_finished)
    return {
        "direct": direct_rate,
        "relayq": relayq_rate,
        "ratio": ratio(relayq_rate, direct_rate),
        "direct_errors": float(len(direct_errors)),
        "relayq_errors": float(len(relayq_errors)),
    }


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
    result.data["sweep"] = sweep
    return result
