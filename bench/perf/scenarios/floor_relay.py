"""The floor relay's two processes (:mod:`bench.perf.floor`), started beside a scenario's stack.

They use the stack's Valkey and mock, and sit idle while relayq is measured.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from bench.perf.processes import free_port, wait_for_port
from bench.perf.scenarios.base import Context

__all__ = ["floor_relay"]


@contextlib.contextmanager
def floor_relay(ctx: Context, *, together: int) -> Iterator[str]:
    """Run the floor's API and worker; yields the API's origin (``http://127.0.0.1:port``).

    ``together``: how many jobs submitted under ``/together/`` start at once.
    """
    stack = ctx.stack
    port = free_port()
    common = ["-m", "bench.perf.floor"]
    api = stack.processes.spawn(
        [*common, "api", "--redis", stack.redis_url, "--port", str(port)],
        log=stack.logs / "floor-api.log",
        env=os.environ,
    )
    worker = stack.processes.spawn(
        [
            *common,
            *("worker", "--redis", stack.redis_url, "--upstream", stack.upstream_url),
            *("--together", str(together)),
        ],
        log=stack.logs / "floor-worker.log",
        env=os.environ,
    )
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        stack.processes.stop(worker)
        stack.processes.stop(api)
