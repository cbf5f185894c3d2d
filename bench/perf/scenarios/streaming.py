"""Streaming: time to first token with ``stream: true``, relayq against the direct call.

One client; each call is read to ``data: [DONE]``, and the time to the first
chunk carrying content is its time to first token. Blocks alternate as in the
sync latency scenario.
"""

from __future__ import annotations

from bench.perf.clients import Endpoint, chat_body
from bench.perf.scenarios.base import Context, RunOptions, ScenarioResult
from bench.perf.scenarios.sync_path import latency_figures, latency_pairs
from bench.perf.scenarios.sync_path import stack as sync_stack
from bench.perf.stack import StackConfig

__all__ = ["run", "stack"]

ADDED_P50_MS = 5.0


def stack(options: RunOptions) -> StackConfig:
    return sync_stack(options)


async def run(ctx: Context) -> ScenarioResult:
    body = chat_body(latency_ms=0, tokens=8, stream=True)
    calls = ctx.repeat(300, 100)

    async def measure(endpoint: Endpoint, n: int) -> list[float]:
        return [(await endpoint.stream(body))[0] * 1000 for _ in range(n)]

    reps, samples = await latency_pairs(ctx, calls=calls, measure=measure, label="streaming")
    result = ScenarioResult(data={"samples_ms": samples, "calls_per_repetition": calls})
    result.figures = latency_figures(
        reps, name="streaming time to first token", p50_target=ADDED_P50_MS, p99_target=None
    )
    return result
