"""SSE fan-out: hundreds of followers of running jobs on one API process.

Delivery delay is measured end to end on one clock: the mock writes the Unix
time into each streamed token's text; relayq's worker carries that text in
the job's ``delta`` events; a follower of ``GET /v1/jobs/{id}/events``
subtracts the stamp from the time it reads the event. So the delay covers the
worker reading the token, the Redis Stream, the API's event hub and the SSE
write. The ceiling is the same: as many direct streamed calls to the mock, the
delay of each token from its write to its read.

Each job's followers connect as soon as the job is accepted, and the mock
holds each call for 3 s before its first token, so followers are live when
tokens flow (a longer silence is avoided on purpose: the API's event hub
drops every follower when its blocking read sees no event for 5 s, see
docs/benchmarks.md); tokens stamped before a follower connected (replayed,
not live) are not counted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

from bench.perf.clients import RelayqJobs, chat_body
from bench.perf.scenarios.base import Context, Figure, RunOptions, ScenarioResult
from bench.perf.scenarios.floor_relay import floor_relay
from bench.perf.stack import StackConfig
from bench.perf.stats import median, percentile, ratio

__all__ = ["run", "stack"]

FOLLOWERS = 500
P99_TARGET_MS = 50.0
TOKENS = 10
INTERVAL_MS = 300
START_DELAY_MS = 3000


def stack(options: RunOptions) -> StackConfig:
    return StackConfig(
        workers=options.workers,
        concurrency=FOLLOWERS,
        database=options.database,
        redis=options.redis,
        log_level=options.log_level,
    )


async def _direct(ctx: Context) -> list[float]:
    body = chat_body(latency_ms=0, tokens=TOKENS, interval_ms=INTERVAL_MS, stream=True)
    runs = await asyncio.gather(*(ctx.direct.stream_delays(body) for _ in range(FOLLOWERS)))
    return [delay * 1000 for delays in runs for delay in delays]


@contextlib.contextmanager
def _floor(ctx: Context) -> Iterator[tuple[RelayqJobs, RelayqJobs]]:
    """The thinnest relay of relayq's shape (:mod:`bench.perf.floor`): its jobs as they
    come, and its jobs started together."""
    with floor_relay(ctx, together=FOLLOWERS) as origin:
        yield (
            RelayqJobs(origin, ctx.session, ""),
            RelayqJobs(f"{origin}/together", ctx.session, ""),
        )


async def _relayq(
    ctx: Context, jobs: int, client: RelayqJobs | None = None
) -> tuple[list[float], int, list[str]]:
    """(delays in ms, followers connected, how each follower ended)."""
    # stream: a job sends its text as delta events only when created streaming.
    body = chat_body(latency_ms=START_DELAY_MS, tokens=TOKENS, interval_ms=INTERVAL_MS, stream=True)
    per_job = max(1, FOLLOWERS // jobs)
    connected: list[float] = []
    ended: list[str] = []

    async def job_and_followers() -> list[float]:
        # Followers connect as soon as their job exists, well before its first token.
        try:
            job = await (client or ctx.jobs).submit(body)
        except Exception:
            ended.append("not submitted")
            return []
        runs = await asyncio.gather(
            *(
                (client or ctx.jobs).follow_delays(job, connected=connected, ended=ended)
                for _ in range(per_job)
            )
        )
        return [delay for delays in runs for delay in delays]

    runs = await asyncio.gather(*(job_and_followers() for _ in range(jobs)))
    delays = [delay * 1000 for run in runs for delay in run]
    return delays, len(connected), ended


async def run(ctx: Context) -> ScenarioResult:
    jobs = FOLLOWERS  # one follower per running job: the most streams for the hub to read
    reps: list[dict[str, float]] = []
    samples: dict[str, list[float]] = {"direct": [], "relayq": [], "floor": [], "together": []}
    notes: list[str] = []
    with _floor(ctx) as (floor_client, together_client):
        for _ in range(ctx.options.repeat):
            direct = await _direct(ctx)
            async with ctx.profiled("fanout"):
                relayq, connected, ended = await _relayq(ctx, jobs)
            floor, _, floor_ended = await _relayq(ctx, jobs, floor_client)
            together, _, _ = await _relayq(ctx, jobs, together_client)
            samples["direct"] += direct
            samples["relayq"] += relayq
            samples["floor"] += floor
            samples["together"] += together
            reps.append(
                {
                    "direct_p50": percentile(direct, 50),
                    "direct_p99": percentile(direct, 99),
                    "relayq_p50": percentile(relayq, 50),
                    "relayq_p99": percentile(relayq, 99),
                    "floor_p50": percentile(floor, 50),
                    "floor_p99": percentile(floor, 99),
                    "together_p50": percentile(together, 50),
                    "together_p99": percentile(together, 99),
                    "together_tokens": float(len(together)),
                    "relayq_tokens": float(len(relayq)),
                    "floor_tokens": float(len(floor)),
                    "direct_tokens": float(len(direct)),
                    "followers_connected": float(connected),
                    "followers_to_the_end": float(
                        sum(1 for e in ended if e not in {"broken", "not submitted"})
                    ),
                    "floor_followers_to_the_end": float(
                        sum(1 for e in floor_ended if e not in {"broken", "not submitted"})
                    ),
                    "jobs_not_submitted": float(sum(1 for e in ended if e == "not submitted")),
                    "followers_cut": float(sum(1 for e in ended if e == "broken")),
                }
            )
    expected = FOLLOWERS * TOKENS
    notes.append(
        f"{FOLLOWERS} followers of {jobs} jobs; {TOKENS} tokens {INTERVAL_MS} ms apart per job; "
        f"tokens counted per repetition (of {expected}): "
        + ", ".join(str(int(r["relayq_tokens"])) for r in reps)
        + "; followers that saw their job's end: "
        + ", ".join(str(int(r["followers_to_the_end"])) for r in reps)
        + "; streams cut by the server: "
        + ", ".join(str(int(r["followers_cut"])) for r in reps)
        + "; jobs refused at submission: "
        + ", ".join(str(int(r["jobs_not_submitted"])) for r in reps)
    )
    notes.append(
        "floor (bench/perf/floor.py, the thinnest relay of relayq's shape, same run): "
        "p50 / p99 per repetition "
        + ", ".join(f"{r['floor_p50']:.1f} / {r['floor_p99']:.1f} ms" for r in reps)
        + f"; median p99 {median([r['floor_p99'] for r in reps]):.1f} ms; tokens counted "
        + ", ".join(str(int(r["floor_tokens"])) for r in reps)
        + "; followers that saw their job's end: "
        + ", ".join(str(int(r["floor_followers_to_the_end"])) for r in reps)
    )
    notes.append(
        f"floor with its {FOLLOWERS} jobs started together (relayq's clumps at their "
        "largest): p50 / p99 per repetition "
        + ", ".join(f"{r['together_p50']:.1f} / {r['together_p99']:.1f} ms" for r in reps)
        + f"; median p99 {median([r['together_p99'] for r in reps]):.1f} ms; tokens counted "
        + ", ".join(str(int(r["together_tokens"])) for r in reps)
    )
    figures = []
    for q, target in (("p50", None), ("p99", P99_TARGET_MS)):
        relayq_q = median([r[f"relayq_{q}"] for r in reps])
        direct_q = median([r[f"direct_{q}"] for r in reps])
        figures.append(
            Figure(
                name=f"SSE delivery delay, {FOLLOWERS} followers, {q}",
                unit="ms",
                relayq=relayq_q,
                direct=direct_q,
                ratio=ratio(relayq_q, direct_q),
                added=relayq_q - direct_q,
                target=f"≤ {target:g} ms" if target is not None else "",
                passed=relayq_q <= target if target is not None else None,
                repetitions=reps,
            )
        )
    data: dict[str, Any] = {"samples_ms": samples}
    return ScenarioResult(figures=figures, data=data, notes=notes)
