"""Job throughput on PostgreSQL with one worker process and with two.

The throughput scenario's main block (500 jobs in flight, the mock answering
in 1 s, each block beside a direct block of as many calls) on a stack whose
database is PostgreSQL (``relayq_bench`` on 127.0.0.1:5432), whatever
``--database`` and ``--workers`` say. Each repetition measures it with one
worker process, starts a second (the same settings: up to 500 jobs in flight
each), measures again, and stops the second; the two counts alternate, so a
change in the shared machine's load colours both alike. Reported per count:
the rate beside the direct call's, CPU per job (every process, the PostgreSQL
server's included) and the harness client's; then the rate with two over the
rate with one, the median of each repetition's pair.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bench.perf.clients import chat_body
from bench.perf.scenarios.base import Context, Figure, RunOptions, ScenarioResult
from bench.perf.scenarios.throughput import (
    MAIN_DEPTH,
    client_figure,
    cpu_figure,
    measure_pair,
    relayq_jobs_at_depth,
    total_jobs,
)
from bench.perf.stack import StackConfig
from bench.perf.stats import median, ratio

__all__ = ["WORKER_COUNTS", "run", "stack"]

WORKER_COUNTS = (1, 2)
_SUMMED = ("relayq", "direct", "ratio", "relayq_cpu_ms", "relayq_own_cpu_ms", "client_cpu_ms")


def stack(options: RunOptions) -> StackConfig:
    return StackConfig(
        workers=1,
        concurrency=MAIN_DEPTH,
        database="postgres",
        redis=options.redis,
        log_level=options.log_level,
    )


async def _warm_up(ctx: Context) -> None:
    """Short jobs, so a fresh worker's connections and pools are open before measuring."""
    await relayq_jobs_at_depth(ctx, depth=50, total=100, body=chat_body(latency_ms=0))


async def _with_workers(ctx: Context, count: int) -> None:
    """Start or stop worker processes until ``count`` run."""
    while len(ctx.stack.workers) > count:
        await asyncio.to_thread(ctx.stack.stop_worker)
    started = False
    while len(ctx.stack.workers) < count:
        await asyncio.to_thread(ctx.stack.start_worker, len(ctx.stack.workers))
        started = True
    if started:
        await _warm_up(ctx)


def _label(count: int) -> str:
    return f"PostgreSQL, {count} worker process{'' if count == 1 else 'es'}: "


def _figures(count: int, reps: list[dict[str, float]], total: int) -> list[Figure]:
    direct = median([r["direct"] for r in reps])
    errors = sum(r["relayq_errors"] for r in reps)
    rate = Figure(
        name=f"{_label(count)}job throughput, {MAIN_DEPTH} in flight, mock 1 s",
        unit="jobs/s",
        relayq=median([r["relayq"] for r in reps]),
        direct=direct,
        ratio=median([r["ratio"] for r in reps]),
        target="",
        passed=None,
        repetitions=reps,
        note=f"{total} jobs per repetition; {int(errors)} relayq errors",
    )
    return [
        rate,
        cpu_figure(MAIN_DEPTH, reps, direct, label=_label(count)),
        client_figure(MAIN_DEPTH, reps, label=_label(count)),
    ]


def _growth(reps: dict[int, list[dict[str, float]]]) -> Figure:
    one, two = reps[1], reps[2]
    relayq = median([ratio(b["relayq"], a["relayq"]) for a, b in zip(one, two, strict=True)])
    direct = median([ratio(b["direct"], a["direct"]) for a, b in zip(one, two, strict=True)])
    rates = " → ".join(f"{median([r['relayq'] for r in reps[n]]):.1f}" for n in WORKER_COUNTS)
    return Figure(
        name="PostgreSQL: job rate with 2 worker processes over 1",
        unit="x",
        relayq=relayq,
        direct=direct,
        ratio=None,
        target="context",
        passed=None,
        note=(
            f"jobs/s {rates}, {MAIN_DEPTH} in flight; each repetition's 2-worker rate over its "
            f"1-worker rate, median; the direct column is the same quotient of the direct "
            f"call's (the ceiling does not depend on workers: it shows the noise)"
        ),
    )


async def run(ctx: Context) -> ScenarioResult:
    total = total_jobs(MAIN_DEPTH, ctx.options.quick)
    reps: dict[int, list[dict[str, float]]] = {count: [] for count in WORKER_COUNTS}
    await _warm_up(ctx)
    for _ in range(ctx.options.repeat):
        for count in WORKER_COUNTS:
            await _with_workers(ctx, count)
            label = f"postgres-w{count}"
            reps[count].append(await measure_pair(ctx, depth=MAIN_DEPTH, total=total, label=label))
    await _with_workers(ctx, 1)
    result = ScenarioResult()
    for count in WORKER_COUNTS:
        result.figures += _figures(count, reps[count], total)
    result.figures.append(_growth(reps))
    by_workers: dict[str, Any] = {}
    for count in WORKER_COUNTS:
        summary = {key: median([r[key] for r in reps[count]]) for key in _SUMMED}
        by_workers[str(count)] = {"total": total, **summary, "repetitions": reps[count]}
    result.data["by_workers"] = by_workers
    result.notes.append(
        "the stack starts one worker process; a second is started (and warmed up with "
        "100 short jobs) for each 2-worker block and stopped after it"
    )
    return result
