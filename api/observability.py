"""What every request leaves behind: its id, its metrics, its access log line and its span.

One plain ASGI middleware (streams and disconnects pass untouched) rather
than three: each layer costs every request a few microseconds.

- **Request id.** The caller's ``X-Request-Id`` when it is a plain token (at
  most 128 letters, digits and ``._:-``), else a new ``req_…`` id; answered
  in the ``x-request-id`` header (as OpenAI's API does), bound to every log
  line written while the request runs (:func:`relayq.observability.logs.logged_with`), and
  carried with the jobs it makes to their worker, whose lines about the job
  carry it too.
- **Metrics**: answers by route and status, and their time to the first byte.
- **Access log**: one ``relayq.access`` line when the answer ends (a stream
  when it closes): method, path, route, status, the caller's key id, time to
  the first byte and to the end. Never the query string, headers or body.
- **Span**, when tracing (:mod:`relayq.observability.tracing`): a SERVER span per request,
  named by its route once matched (``POST /v1/jobs``), the child of the
  caller's W3C ``traceparent`` if it sent one. The jobs the request makes carry
  it to their workers. Off, a request pays one check.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import re
import secrets
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from relayq.observability import tracing
from relayq.observability.logs import logged_with
from relayq.observability.metrics import ApiMetrics

__all__ = ["REQUEST_ID_HEADER", "SECURITY_HEADERS", "RequestObserver", "request_id_of"]

access = logging.getLogger("relayq.access")

REQUEST_ID_HEADER = "x-request-id"
_PROCESS = secrets.token_hex(6)
"""This process's part of the ids it gives: 48 random bits, then a count (an id each
from the system's randomness cost 2 µs a request)."""
_SEQUENCE = itertools.count()
_GIVEN_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")


def request_id_of(scope: Scope) -> str | None:
    """The id :class:`RequestObserver` gave this request (None outside it)."""
    state = scope.get("state")
    found = state.get("request_id") if isinstance(state, dict) else None
    return found if isinstance(found, str) else None


def _request_id(scope: Scope) -> str:
    value: bytes
    for name, value in scope["headers"]:
        if name == b"x-request-id" and _GIVEN_ID.fullmatch(value):
            return value.decode("ascii")
    return f"req_{_PROCESS}{next(_SEQUENCE):010x}"


SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"frame-ancestors 'none'"),
    (b"referrer-policy", b"no-referrer"),
)
"""On every answer (OWASP's for REST services): no content sniffing, no framing, no
referrer. No ``default-src`` policy: it would stop ``/docs`` loading its scripts."""


class RequestObserver:
    """Gives each HTTP request its id, counts and times it, and logs it once it ends;
    every answer carries the id (``x-request-id``) and :data:`SECURITY_HEADERS`."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Callable[[], ApiMetrics | None],
        access_log: bool = True,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        metrics = self.metrics()
        started = time.perf_counter()
        answer: dict[str, float | int] = {}

        async def observed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
                answer["first_byte"] = time.perf_counter() - started
                message["headers"] = [
                    *message.get("headers", ()),
                    (REQUEST_ID_HEADER.encode(), request_id.encode()),
                    *SECURITY_HEADERS,
                ]
                if metrics is not None:
                    route = _route(scope)
                    method = scope["method"]
                    metrics.requests(method, route, str(message["status"])).inc()
                    metrics.request_seconds(method, route).observe(answer["first_byte"])
            await send(message)

        with logged_with(request_id=request_id), _request_span(scope, request_id) as span:
            try:
                await self.app(scope, receive, observed_send)
            finally:
                if span is not None:
                    _describe(span, scope, answer)
                if self.access_log:
                    _log_access(scope, answer, time.perf_counter() - started)


def _request_span(
    scope: Scope, request_id: str
) -> contextlib.AbstractContextManager[tracing.Span | None]:
    """The request's SERVER span, the caller's ``traceparent`` its parent; a null
    context when tracing is off."""
    if not tracing.enabled():
        return tracing.NO_SPAN
    parent = next(
        (value.decode("latin-1") for name, value in scope["headers"] if name == b"traceparent"),
        None,
    )
    return tracing.span(
        scope["method"],
        kind="server",
        parent=parent,
        attributes={
            "http.request.method": scope["method"],
            "url.path": scope["path"],
            "url.scheme": scope.get("scheme", "http"),
            "relayq.request_id": request_id,
        },
    )


def _describe(span: tracing.Span, scope: Scope, answer: dict[str, float | int]) -> None:
    """Name the span by its route (known once the request was routed) and give its status."""
    route = getattr(scope.get("route"), "path", None)
    if route is not None:
        span.update_name(f"{scope['method']} {route}")
        span.set_attribute("http.route", route)
    key_id = scope.get("state", {}).get("key_id")
    if key_id is not None:
        span.set_attribute("relayq.key_id", key_id)
    status = answer.get("status")
    if status is None:  # no answer began: the caller left, or the app raised
        return
    span.set_attribute("http.response.status_code", int(status))
    if status >= 500:
        tracing.failed(span, str(status))


def _route(scope: Scope) -> str:
    return getattr(scope.get("route"), "path", "unmatched")


def _log_access(scope: Scope, answer: dict[str, float | int], seconds: float) -> None:
    state = scope.get("state", {})
    first_byte = answer.get("first_byte")
    access.info(
        "%s %s %s",
        scope["method"],
        scope["path"],
        answer.get("status", "-"),
        extra={
            "method": scope["method"],
            "path": scope["path"],
            "route": _route(scope),
            # No answer began: the caller left, or the app raised (a 500 was sent by
            # Starlette's outermost handler, outside this middleware).
            "status": answer.get("status"),
            "key_id": state.get("key_id"),
            "first_byte_ms": round(first_byte * 1000, 2) if first_byte is not None else None,
            "duration_ms": round(seconds * 1000, 2),
            "client": (scope.get("client") or (None,))[0],
        },
    )
