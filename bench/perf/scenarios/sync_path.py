"""The sync path: ``POST /v1/chat/completions`` (not streamed) against the direct call.

Latency: one client, calls one after another, the mock answering at once;
each repetition is a block of direct calls then a block of relayq calls, and
the figure is the median over repetitions of relayq's percentile minus the
direct call's. Throughput: 32 clients calling in a loop for a fixed time,
direct then relayq in each repetition.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.perf.clients import Endpoint, chat_body
from bench.perf.scenarios.base import Context, Figure, RunOptions, ScenarioResult
from bench.perf.stack import StackConfig
from bench.perf.stats import median, percentile, ratio

__all__ = ["latency_pairs", "run_latency", "run_throughput", "stack"]

ADDED_P50_MS = 5.0
ADDED_P99_MS = 15.0
CLIENTS = 32
THROUGHPUT_CALLS = 300.0
DEEP_CLIENTS = 500
DEEP_LATENCY_MS = 1000
DEEP_SHARE = 0.5


def stack(options: RunOptions) -> StackConfig:
    return StackConfig(
        workers=options.workers,
        concurrency=200,
        database=options.database,
        redis=options.redis,
        log_level=options.log_level,
    )


async def _sequential(endpoint: Endpoint, body: dict[str, Any], calls: int) -> list[float]:
    return [await endpoint.complete(body) * 1000 for _ in range(calls)]


async def latency_pairs(
    ctx: Context, *, calls: int, measure: Any, label: str, floor: Endpoint | None = None
) -> tuple[list[dict[str, float]], dict[str, list[float]]]:
    """Alternate direct and relayq blocks of ``calls`` measured by ``measure(endpoint, n)``;
    per repetition p50/p99 of each, and every sample (ms).

    With ``floor`` (the floor relay's endpoint), a block of it follows relayq's in
    each repetition, and its figures go with the repetition's (``floor_*``).
    """
    samples: dict[str, list[float]] = {"direct": [], "relayq": []}
    sides = [("direct", ctx.direct), ("relayq", ctx.relayq)]
    if floor is not None:
        samples["floor"] = []
        sides.append(("floor", floor))
    for _, endpoint in sides:  # warm-up: connections, caches, the worker's first job
        await measure(endpoint, 20)
    reps: list[dict[str, float]] = []
    for _ in range(ctx.options.repeat):
        rep: dict[str, float] = {}
        for side, endpoint in sides:
            if side == "relayq":
                async with ctx.profiled(label):
                    taken = await measure(endpoint, calls)
            else:
                taken = await measure(endpoint, calls)
            samples[side] += taken
            rep[f"{side}_p50"] = percentile(taken, 50)
            rep[f"{side}_p99"] = percentile(taken, 99)
        for q in ("p50", "p99"):
            rep[f"added_{q}"] = rep[f"relayq_{q}"] - rep[f"direct_{q}"]
            if floor is not None:
                rep[f"floor_added_{q}"] = rep[f"floor_{q}"] - rep[f"direct_{q}"]
        reps.append(rep)
    return reps, samples


def latency_figures(
    reps: list[dict[str, float]], *, name: str, p50_target: float, p99_target: float | None
) -> list[Figure]:
    """The p50 and p99 figures (medians over repetitions) with their targets."""
    figures = []
    for q, target in (("p50", p50_target), ("p99", p99_target)):
        added = median([r[f"added_{q}"] for r in reps])
        relayq = median([r[f"relayq_{q}"] for r in reps])
        direct = median([r[f"direct_{q}"] for r in reps])
        figures.append(
            Figure(
                name=f"{name} {q}",
                unit="ms",
                relayq=relayq,
                direct=direct,
                ratio=ratio(relayq, direct),
                added=added,
                target=f"added ≤ {target:g} ms" if target is not None else "",
                passed=added <= target if target is not None else None,
                repetitions=reps,
            )
        )
    return figures


async def run_latency(ctx: Context) -> ScenarioResult:
    body = chat_body(latency_ms=0)
    calls = ctx.repeat(300, 100)

    async def measure(endpoint: Endpoint, n: int) -> list[float]:
        return await _sequential(endpoint, body, n)

    reps, samples = await latency_pairs(ctx, calls=calls, measure=measure, label="sync-latency")
    result = ScenarioResult(data={"samples_ms": samples, "calls_per_repetition": calls})
    result.figures = latency_figures(
        reps, name="sync latency, 1 client", p50_target=ADDED_P50_MS, p99_target=ADDED_P99_MS
    )
    return result


async def _clients(
    endpoint: Endpoint, seconds: float, *, clients: int = CLIENTS, latency_ms: float = 0
) -> tuple[float, int, list[str]]:
    """``clients`` loops calling for ``seconds``; (calls per second, calls, errors)."""
    body = chat_body(latency_ms=latency_ms)
    deadline = time.perf_counter() + seconds
    done = 0
    errors: list[str] = []

    async def client() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            try:
                await endpoint.complete(body)
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return done / (time.perf_counter() - started), done, errors


async def _side_by_side(
    ctx: Context, *, seconds: float, clients: int, latency_ms: float, label: str
) -> tuple[list[dict[str, float]], list[str]]:
    """Per repetition, ``clients`` calling the direct side, then relayq, for ``seconds``;
    (the repetitions' rates and counts, a few relayq errors)."""
    reps: list[dict[str, float]] = []
    error_samples: list[str] = []
    for _ in range(ctx.options.repeat):
        direct, _, direct_errors = await _clients(
            ctx.direct, seconds, clients=clients, latency_ms=latency_ms
        )
        async with ctx.profiled(label):
            relayq, calls, relayq_errors = await _clients(
                ctx.relayq, seconds, clients=clients, latency_ms=latency_ms
            )
        error_samples += relayq_errors[:5]
        reps.append(
            {
                "direct": direct,
                "relayq": relayq,
                "ratio": ratio(relayq, direct),
                "relayq_calls": float(calls),
                "relayq_errors": float(len(relayq_errors)),
                "direct_errors": float(len(direct_errors)),
            }
        )
    return reps, error_samples


async def run_throughput(ctx: Context) -> ScenarioResult:
    seconds = ctx.repeat(15, 6)
    await _clients(ctx.direct, 2)
    await _clients(ctx.relayq, 2)
    reps, error_samples = await _side_by_side(
        ctx, seconds=seconds, clients=CLIENTS, latency_ms=0, label="sync-throughput"
    )
    errors = int(sum(r["relayq_errors"] for r in reps))
    relayq = median([r["relayq"] for r in reps])
    figure = Figure(
        name=f"sync throughput, {CLIENTS} clients",
        unit="calls/s",
        relayq=relayq,
        direct=median([r["direct"] for r in reps]),
        ratio=median([r["ratio"] for r in reps]),
        target=f"≥ {THROUGHPUT_CALLS} calls/s, 0 errors",
        passed=relayq >= THROUGHPUT_CALLS and errors == 0,
        repetitions=reps,
        note=f"{seconds} s per side per repetition; {errors} relayq errors",
    )
    return ScenarioResult(figures=[figure], data={"errors": error_samples})


def deep_stack(options: RunOptions) -> StackConfig:
    return StackConfig(
        workers=options.workers,
        concurrency=DEEP_CLIENTS,
        database=options.database,
        redis=options.redis,
        log_level=options.log_level,
    )


async def run_deep(ctx: Context) -> ScenarioResult:
    """Sync chat with 500 clients at once against a mock taking 1 s: what a gateway in
    front of slow models carries, side by side with the direct call."""
    seconds = ctx.repeat(12, 6)
    await _clients(ctx.relayq, 3, clients=50, latency_ms=DEEP_LATENCY_MS)
    reps, error_samples = await _side_by_side(
        ctx, seconds=seconds, clients=DEEP_CLIENTS, latency_ms=DEEP_LATENCY_MS, label="sync-deep"
    )
    errors = int(sum(r["relayq_errors"] for r in reps))
    share = median([r["ratio"] for r in reps])
    figure = Figure(
        name=f"sync throughput, {DEEP_CLIENTS} clients, mock 1 s",
        unit="calls/s",
        relayq=median([r["relayq"] for r in reps]),
        direct=median([r["direct"] for r in reps]),
        ratio=share,
        target=f"≥ {DEEP_SHARE:.0%} of the direct call, 0 errors",
        passed=share >= DEEP_SHARE and errors == 0,
        repetitions=reps,
        note=f"{seconds} s per side per repetition; {errors} relayq errors",
    )
    return ScenarioResult(figures=[figure], data={"errors": error_samples})
