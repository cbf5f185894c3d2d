"""What every scenario shares: run options, the context it runs in, and its figures."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.perf.clients import Endpoint, RelayqJobs, new_session
from bench.perf.outcomes import JobOutcomes
from bench.perf.profiling import Profiler
from bench.perf.stack import KEY_PREFIX, PerfStack, StackConfig

__all__ = [
    "Context",
    "Figure",
    "RunOptions",
    "Scenario",
    "ScenarioResult",
    "closed_loop",
    "poll_until",
]


@dataclass(frozen=True)
class RunOptions:
    """The command line's choices, as every scenario sees them."""

    quick: bool = False
    repeat: int = 3
    soak_seconds: float = 120.0
    database: str = "sqlite"
    redis: str = "valkey"
    workers: int = 1
    log_level: str = "INFO"
    profile_dir: Path | None = None
    profile_rate: int = 100


@dataclass
class Figure:
    """One measured figure beside its ceiling, and the target it is held to."""

    name: str
    unit: str
    relayq: float
    direct: float | None
    ratio: float | None
    """relayq / direct (throughputs: share of the ceiling; latencies: times slower)."""
    target: str
    passed: bool | None
    """None when the figure has no target (context only)."""
    added: float | None = None
    """relayq minus direct, for latencies."""
    repetitions: list[dict[str, float]] = field(default_factory=list)
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "unit": self.unit,
            "relayq": _clean(self.relayq),
            "direct": _clean(self.direct),
            "ratio": _clean(self.ratio),
            "added": _clean(self.added),
            "target": self.target,
            "passed": self.passed,
            "repetitions": [{k: _clean(v) for k, v in r.items()} for r in self.repetitions],
            "note": self.note,
        }


def _clean(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else round(value, 6)


@dataclass
class ScenarioResult:
    figures: list[Figure] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    """Raw samples for the plots and the JSON file."""
    status: str = "done"
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Scenario:
    """A named measurement: the stack it needs and the coroutine that measures."""

    name: str
    title: str
    stack: Callable[[RunOptions], StackConfig]
    run: Callable[[Context], Awaitable[ScenarioResult]]
    needs_stack: bool = True
    """False for a slot whose feature is not built yet: nothing is started."""


@dataclass
class Context:
    """A running stack and the clients aimed at it and at the mock directly."""

    stack: PerfStack
    options: RunOptions
    session: aiohttp.ClientSession
    profiler: Profiler

    @property
    def direct(self) -> Endpoint:
        return Endpoint("direct", f"{self.stack.upstream_url}/chat/completions", self.session)

    @property
    def relayq(self) -> Endpoint:
        return Endpoint(
            "relayq",
            f"{self.stack.api_url}/v1/chat/completions",
            self.session,
            {"Authorization": f"Bearer {self.stack.api_key}"},
        )

    @property
    def jobs(self) -> RelayqJobs:
        return RelayqJobs(self.stack.api_url, self.session, self.stack.api_key)

    def outcomes(self) -> JobOutcomes:
        """A reader of job outcomes off relayq's event firehose, for ``async with``."""
        return JobOutcomes(self.stack.redis_url, key_prefix=KEY_PREFIX)

    def repeat(self, full: int, quick: int) -> int:
        """How many of something: the ``--repeat`` count, fewer with ``--quick``."""
        return quick if self.options.quick else full

    @asynccontextmanager
    async def profiled(self, label: str) -> AsyncIterator[None]:
        """Profile the API and workers over the block, when ``--profile`` asks for it."""
        async with self.profiler.recording(label, self.stack):
            yield


async def closed_loop(
    call: Callable[[], Awaitable[object]], *, depth: int, total: int
) -> tuple[list[float], list[str]]:
    """Make ``total`` calls, ``depth`` at a time; (finish times, error messages)."""
    finished: list[float] = []
    errors: list[str] = []
    remaining = total

    async def lane() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            try:
                await call()
            except Exception as exc:  # counted and reported, never hidden
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            finished.append(time.time())

    await asyncio.gather(*(lane() for _ in range(depth)))
    return finished, errors


async def poll_until(
    check: Callable[[], Awaitable[bool]], *, every: float, limit: float | None = None
) -> bool:
    """Call ``check`` every ``every`` seconds until it is true (True) or ``limit`` passes
    (False)."""
    deadline = None if limit is None else time.monotonic() + limit
    while True:
        if await check():
            return True
        if deadline is not None and time.monotonic() > deadline:
            return False
        await asyncio.sleep(every)


def new_context(
    stack: PerfStack, options: RunOptions, profiler: Profiler, *, connections: int = 0
) -> Context:
    return Context(
        stack=stack, options=options, session=new_session(limit=connections), profiler=profiler
    )
