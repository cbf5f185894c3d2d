"""Worker memory: RSS growth per 1,000 jobs in flight, and RSS over a steady soak.

In flight: the worker's RSS (the Celery worker process itself, which holds
the event loop and every job) is read idle after a warm-up of 300 short jobs,
then with 1,000 jobs held by the mock, and the difference is scaled to 1,000.
Each repetition uses a fresh worker process: what the first 1,000 jobs took
stays with the process, so a second load on the same one would measure reuse. The ceiling is
the same measurement of a bare asyncio + aiohttp client in a process of its
own (``bench.perf.probe``) holding as many calls.

Soak: jobs at a steady rate for ``--soak-seconds`` (mock 1 s), the worker's
and the API's RSS sampled every 5 s. After a warm-up (a quarter of the soak,
at most 60 s) the growth is the median of the last five samples minus the
median of the first five; the slope of a least-squares line is reported too.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import time
from typing import Any

from bench.perf.clients import chat_body
from bench.perf.machine import process_rss_mb
from bench.perf.probe import rss_now, upstream_in_flight
from bench.perf.processes import ROOT
from bench.perf.scenarios.base import Context, Figure, RunOptions, ScenarioResult, poll_until
from bench.perf.scenarios.throughput import relayq_jobs_at_depth
from bench.perf.stack import StackConfig
from bench.perf.stats import median, ratio

__all__ = ["run_in_flight", "run_soak", "soak_stack", "stack"]

IN_FLIGHT = 1000
HOLD_MS = 90_000
GROWTH_TARGET_MB = 30.0
SOAK_RATE = 15.0
SOAK_LATENCY_MS = 1000
SOAK_GROWTH_MB = 5.0
_SAMPLE_SECONDS = 5.0


def stack(options: RunOptions) -> StackConfig:
    return StackConfig(
        workers=1,
        concurrency=IN_FLIGHT,
        database=options.database,
        redis=options.redis,
        log_level=options.log_level,
    )


def soak_stack(options: RunOptions) -> StackConfig:
    return StackConfig(
        workers=1,
        concurrency=500,
        database=options.database,
        redis=options.redis,
        log_level=options.log_level,
    )


def _worker_pid(ctx: Context) -> int:
    return ctx.stack.workers[0].pid


def _direct_probe(ctx: Context) -> dict[str, float]:
    done = subprocess.run(
        [
            *(sys.executable, "-m", "bench.perf.probe", "--upstream", ctx.stack.upstream_url),
            *("--calls", str(IN_FLIGHT), "--latency-ms", str(HOLD_MS)),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=HOLD_MS / 1000 + 120,
        check=True,
    )
    probe: dict[str, float] = json.loads(done.stdout)
    return probe


async def _in_flight(ctx: Context) -> int:
    return await upstream_in_flight(ctx.session, ctx.stack.upstream_url)


async def _relayq_growth(ctx: Context) -> dict[str, float]:
    pid = _worker_pid(ctx)

    async def idle_upstream() -> bool:  # the probe's calls are gone
        return await _in_flight(ctx) == 0

    async def all_held() -> bool:
        return await _in_flight(ctx) >= IN_FLIGHT

    await poll_until(idle_upstream, every=0.2)
    idle = await asyncio.to_thread(rss_now, pid)
    body = chat_body(latency_ms=HOLD_MS)
    async with ctx.outcomes() as outcomes:
        for job_id in await asyncio.gather(*(ctx.jobs.submit(body) for _ in range(IN_FLIGHT))):
            outcomes.expect(job_id)
        await poll_until(all_held, every=0.2, limit=HOLD_MS / 1000 - 10)
        in_flight = await _in_flight(ctx)
        loaded = await asyncio.to_thread(rss_now, pid)
        while outcomes.ended < IN_FLIGHT:
            await outcomes.wait(stall=HOLD_MS / 1000 + 60)
    await asyncio.sleep(2)
    after = await asyncio.to_thread(rss_now, pid)
    return {"idle_mb": idle, "loaded_mb": loaded, "in_flight": float(in_flight), "after_mb": after}


def _per_thousand(probe: dict[str, float]) -> float:
    return (probe["loaded_mb"] - probe["idle_mb"]) * 1000 / max(probe["in_flight"], 1.0)


async def run_in_flight(ctx: Context) -> ScenarioResult:
    reps: list[dict[str, float]] = []
    for index in range(min(ctx.options.repeat, 2)):  # each takes two holds of 90 s
        if index:
            # A fresh worker each time: memory taken for the first 1,000 jobs stays with
            # the process (threads, heap), so a second load on it would measure reuse.
            await asyncio.to_thread(ctx.stack.restart_worker, 0)
        await relayq_jobs_at_depth(ctx, depth=100, total=300, body=chat_body(latency_ms=0))
        direct = await asyncio.to_thread(_direct_probe, ctx)
        async with ctx.profiled("memory"):
            relayq = await _relayq_growth(ctx)
        rep = {f"direct_{k}": v for k, v in direct.items()}
        rep.update({f"relayq_{k}": v for k, v in relayq.items()})
        rep["direct"] = _per_thousand(direct)
        rep["relayq"] = _per_thousand(relayq)
        reps.append(rep)
    relayq_growth = median([r["relayq"] for r in reps])
    direct_growth = median([r["direct"] for r in reps])
    figure = Figure(
        name="worker RSS growth per 1,000 jobs in flight",
        unit="MiB",
        relayq=relayq_growth,
        direct=direct_growth,
        ratio=ratio(relayq_growth, direct_growth),
        target=f"≤ {GROWTH_TARGET_MB:g} MiB",
        passed=relayq_growth <= GROWTH_TARGET_MB,
        repetitions=reps,
        note=f"{IN_FLIGHT} jobs held {HOLD_MS / 1000:g} s by the mock; worker concurrency "
        f"{IN_FLIGHT}",
    )
    return ScenarioResult(figures=[figure])


async def _steady(ctx: Context, seconds: float, samples: list[dict[str, float]]) -> int:
    """Submit at ``SOAK_RATE`` for ``seconds``, sampling RSS; returns submit errors."""
    body = chat_body(latency_ms=SOAK_LATENCY_MS)
    errors = 0
    posts: set[asyncio.Task[Any]] = set()
    started = time.monotonic()
    next_sample = started
    sent = 0
    api_pid = ctx.stack.api.pid if ctx.stack.api is not None else 0
    while (now := time.monotonic()) - started < seconds:
        due = int((now - started) * SOAK_RATE) - sent
        for _ in range(due):
            task = asyncio.create_task(ctx.jobs.submit(body))
            posts.add(task)
            task.add_done_callback(posts.discard)
        sent += max(due, 0)
        if now >= next_sample:
            samples.append(
                {
                    "t": now - started,
                    "worker_mb": process_rss_mb(_worker_pid(ctx)),
                    "api_mb": process_rss_mb(api_pid),
                    "sent": float(sent),
                }
            )
            next_sample += _SAMPLE_SECONDS
        await asyncio.sleep(0.01)
    results = await asyncio.gather(*posts, return_exceptions=True)
    errors += sum(1 for r in results if isinstance(r, BaseException))
    return errors


async def run_soak(ctx: Context) -> ScenarioResult:
    seconds = ctx.options.soak_seconds
    warmup = min(60.0, seconds / 4)
    samples: list[dict[str, float]] = []
    since = time.time()
    async with ctx.profiled("soak"):
        errors = await _steady(ctx, seconds, samples)
    outcomes = await asyncio.to_thread(ctx.stack.job_outcomes, since=since)
    steady = [s for s in samples if s["t"] >= warmup]
    first = statistics.median(s["worker_mb"] for s in steady[:5])
    last = statistics.median(s["worker_mb"] for s in steady[-5:])
    slope = statistics.linear_regression(
        [s["t"] for s in steady], [s["worker_mb"] for s in steady]
    ).slope
    finished = [at for status, at in outcomes.values() if status == "succeeded" and at is not None]
    achieved = len(finished) / seconds
    growth = last - first
    figure = Figure(
        name=f"worker RSS growth over a {seconds:g} s soak at {SOAK_RATE:g} jobs/s",
        unit="MiB",
        relayq=growth,
        direct=None,
        ratio=None,
        target=f"no growth (≤ {SOAK_GROWTH_MB:g} MiB after warm-up)",
        passed=growth <= SOAK_GROWTH_MB and errors == 0,
        note=f"warm-up {warmup:g} s excluded; slope {slope * 60:.3f} MiB/min; RSS "
        f"{first:.1f} → {last:.1f} MiB; {len(finished)} jobs succeeded "
        f"({achieved:.1f}/s of {SOAK_RATE:g}/s offered), {errors} submit errors",
    )
    return ScenarioResult(figures=[figure], data={"samples": samples, "warmup_seconds": warmup})
