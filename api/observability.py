"""Request metrics, as a plain ASGI middleware (streams and disconnects pass untouched)."""

from __future__ import annotations

import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from relayq.metrics import ApiMetrics

__all__ = ["RequestMetrics"]


class RequestMetrics:
    """Counts answers by route and status, and times them to the first byte."""

    def __init__(self, app: ASGIApp, *, metrics: Callable[[], ApiMetrics | None]) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        metrics = self.metrics() if scope["type"] == "http" else None
        if metrics is None:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        method = scope["method"]

        async def timed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                route = getattr(scope.get("route"), "path", "unmatched")
                metrics.requests.labels(method, route, str(message["status"])).inc()
                metrics.request_seconds.labels(method, route).observe(time.perf_counter() - started)
            await send(message)

        await self.app(scope, receive, timed_send)
