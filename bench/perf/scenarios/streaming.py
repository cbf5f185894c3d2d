"""Streaming: time to first token with ``stream: true``, relayq against the direct call.

One client; each call is read to ``data: [DONE]``, and the time to the first
chunk carrying content is its time to first token. Blocks alternate as in the
sync latency scenario, with a third: the floor relay (:mod:`bench.perf.floor`),
the thinnest relay of relayq's shape (an API process, a list on Valkey, a
worker, a reply stream back), so each repetition also says what that shape
costs before any of relayq's own code.
"""

from __future__ import annotations

from bench.perf.clients import Endpoint, chat_body
from bench.perf.scenarios.base import Context, RunOptions, ScenarioResult
from bench.perf.scenarios.floor_relay import floor_relay
from bench.perf.scenarios.sync_path import latency_figures, latency_pairs
from bench.perf.scenarios.sync_path import stack as sync_stack
from bench.perf.stack import StackConfig
from bench.perf.stats import median

__all__ = ["run", "stack"]

ADDED_P50_MS = 5.0


def stack(options: RunOptions) -> StackConfig:
    return sync_stack(options)


async def run(ctx: Context) -> ScenarioResult:
    body = chat_body(latency_ms=0, tokens=8, stream=True)
    calls = ctx.repeat(300, 100)

    async def measure(endpoint: Endpoint, n: int) -> list[float]:
        return [(await endpoint.stream(body))[0] * 1000 for _ in range(n)]

    with floor_relay(ctx, together=1) as origin:
        floor = Endpoint("floor", f"{origin}/v1/chat/completions", ctx.session)
        reps, samples = await latency_pairs(
            ctx, calls=calls, measure=measure, label="streaming", floor=floor
        )
    result = ScenarioResult(data={"samples_ms": samples, "calls_per_repetition": calls})
    result.figures = latency_figures(
        reps, name="streaming time to first token", p50_target=ADDED_P50_MS, p99_target=None
    )
    for figure in result.figures:
        q = figure.name.rsplit(" ", 1)[-1]
        added = [r[f"floor_added_{q}"] for r in reps]
        figure.note = (
            "floor relay (bench/perf/floor.py, same run) added "
            + ", ".join(f"{a:.1f}" for a in added)
            + f" ms; median {median(added):.1f} ms"
        )
    return result
