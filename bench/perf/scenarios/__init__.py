"""The scenarios, by name, in the order a full run takes them."""

from __future__ import annotations

from bench.perf.scenarios import (
    batches,
    fanout,
    memory,
    streaming,
    sync_path,
    throughput,
    workers,
)
from bench.perf.scenarios.base import Scenario

__all__ = ["SCENARIOS"]

SCENARIOS: dict[str, Scenario] = {
    scenario.name: scenario
    for scenario in (
        Scenario("throughput", "Job throughput at depth", throughput.stack, throughput.run),
        Scenario(
            "postgres-workers",
            "Job throughput on PostgreSQL, 1 and 2 worker processes",
            workers.stack,
            workers.run,
        ),
        Scenario("sync-latency", "Sync path latency", sync_path.stack, sync_path.run_latency),
        Scenario(
            "sync-throughput", "Sync path throughput", sync_path.stack, sync_path.run_throughput
        ),
        Scenario(
            "sync-deep",
            "Sync path, 500 clients, mock 1 s",
            sync_path.deep_stack,
            sync_path.run_deep,
        ),
        Scenario("streaming", "Streaming time to first token", streaming.stack, streaming.run),
        Scenario("fanout", "SSE fan-out", fanout.stack, fanout.run),
        Scenario("memory", "Worker memory per in-flight job", memory.stack, memory.run_in_flight),
        Scenario("soak", "Worker memory over a soak", memory.soak_stack, memory.run_soak),
        Scenario("batches", "Batch intake", batches.stack, batches.run),
    )
}
