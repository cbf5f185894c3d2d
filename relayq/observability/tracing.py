"""Traces: OpenTelemetry spans for requests, job attempts and provider calls, when enabled.

The only module of relayq that imports OpenTelemetry (the ``otel`` extra), and
only when asked to trace: in :func:`setup`, once per process when
``RELAYQ_TRACING__ENABLED`` is true (and :func:`check`). Off (the default),
every helper here answers at once: :func:`span` gives a shared null context,
:func:`current_traceparent` None; a job pays a few calls that check one global
(0.65 µs in all), and relayq imports nothing of OpenTelemetry. (FastAPI and
redis-py import ``opentelemetry-api`` themselves.)

A trace crosses processes as a W3C ``traceparent`` string: the API reads it
from the caller's header, the intake captures the request span's own
(:func:`current_traceparent`) into each job's message, and the worker makes it
the parent of the job's attempt span (``span(..., parent=traceparent)``). The
exporter is OTLP over HTTP, configured by OpenTelemetry's own variables
(``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_SERVICE_NAME``, ``OTEL_TRACES_SAMPLER``…),
which the SDK reads.

The provider set up here is relayq's own, not the global one: nothing else in
the process (FastAPI's native telemetry, which relayq turns off) traces through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Literal, Protocol, cast

from relayq.config.settings import TracingSettings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span as OtelSpan
    from opentelemetry.trace import SpanKind, Tracer
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = [
    "NO_SPAN",
    "Kind",
    "Span",
    "TracingUnavailable",
    "check",
    "current_traceparent",
    "enabled",
    "failed",
    "setup",
    "shutdown",
    "span",
]

Kind = Literal["server", "client", "consumer", "internal"]
AttributeValue = str | bool | int | float

_INSTALL_HINT = "pip install 'relayq[otel]'"
_OTLP_EXPORTER = "opentelemetry.exporter.otlp.proto.http.trace_exporter"


class Span(Protocol):
    """What relayq does with a live span: name it once its route is known, describe it."""

    def set_attribute(self, key: str, value: AttributeValue) -> None: ...

    def update_name(self, name: str) -> None: ...


class TracingUnavailable(SystemExit):
    """Tracing is enabled but the ``otel`` extra is not installed: the process cannot start.

    A :class:`SystemExit`, so the process ends with this one line (also from a
    Celery start-up signal, whose receivers' ordinary errors are only logged).
    """


NO_SPAN: AbstractContextManager[None] = contextlib.nullcontext()
"""What :func:`span` gives while tracing is off: enters as None, costs two calls."""


@dataclass(frozen=True, slots=True)
class _Tracing:
    """This process's tracing, once set up: what each span needs, imported once."""

    provider: TracerProvider
    tracer: Tracer
    propagator: TraceContextTextMapPropagator
    kinds: Mapping[str, SpanKind]
    trace: ModuleType
    """``opentelemetry.trace``."""
    context: ModuleType
    """``opentelemetry.context``."""


_active: _Tracing | None = None


def enabled() -> bool:
    """Whether this process traces (:func:`setup` ran with tracing enabled)."""
    return _active is not None


def check(settings: TracingSettings) -> None:
    """Raise :class:`TracingUnavailable` if tracing is enabled without the ``otel`` extra.

    For a process that starts others (the worker's supervisor): it sets nothing up.
    """
    if not settings.enabled:
        return
    try:
        for module in ("opentelemetry.sdk.trace", _OTLP_EXPORTER):
            importlib.import_module(module)
    except ImportError:
        raise _unavailable() from None


def _unavailable() -> TracingUnavailable:
    return TracingUnavailable(
        "RELAYQ_TRACING__ENABLED is true but OpenTelemetry's SDK and OTLP exporter are not "
        f"installed: {_INSTALL_HINT}, or set RELAYQ_TRACING__ENABLED=false"
    )


def setup(settings: TracingSettings, *, service: str, exporter: SpanExporter | None = None) -> bool:
    """Set up this process's tracer if tracing is enabled (once; later calls change
    nothing); whether the process traces.

    ``service`` is the service name unless ``OTEL_SERVICE_NAME`` (or
    ``OTEL_RESOURCE_ATTRIBUTES``) names one. Spans go to OTLP over HTTP in
    batches, or, given an ``exporter`` (tests), to it as each span ends.
    Raises :class:`TracingUnavailable` without the ``otel`` extra.
    """
    global _active
    if _active is not None or not settings.enabled:
        return _active is not None
    try:
        from opentelemetry import context, trace
        from opentelemetry.sdk.resources import SERVICE_NAME, OTELResourceDetector, Resource
        from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        processor: SpanProcessor
        if exporter is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            processor = BatchSpanProcessor(OTLPSpanExporter())
        else:
            processor = SimpleSpanProcessor(exporter)
    except ImportError:
        raise _unavailable() from None
    # The environment's service name, if it gives one, wins over relayq's.
    resource = Resource.create({SERVICE_NAME: service}).merge(OTELResourceDetector().detect())
    provider = TracerProvider(resource=resource)  # its sampler: OTEL_TRACES_SAMPLER
    provider.add_span_processor(processor)
    _active = _Tracing(
        provider=provider,
        tracer=provider.get_tracer("relayq"),
        propagator=TraceContextTextMapPropagator(),
        kinds={kind.name.lower(): kind for kind in trace.SpanKind},
        trace=trace,
        context=context,
    )
    return True


def shutdown() -> None:
    """Export what is left and stop tracing in this process (the SDK also does it at exit)."""
    global _active
    active, _active = _active, None
    if active is not None:
        active.provider.shutdown()


def current_traceparent() -> str | None:
    """The ``traceparent`` of the span now current (to carry in a message); None when
    tracing is off or no span is."""
    active = _active
    if active is None:
        return None
    carrier: dict[str, str] = {}
    active.propagator.inject(carrier)
    return carrier.get("traceparent")


def span(
    name: str,
    *,
    kind: Kind = "internal",
    parent: str | None = None,
    attributes: Mapping[str, AttributeValue] | None = None,
) -> AbstractContextManager[Span | None]:
    """A span around the block, current within it; :data:`NO_SPAN` when tracing is off.

    Its parent is ``parent`` (a ``traceparent`` carried from another process), or
    else the span current here. An exception leaving the block marks the span as an
    error, with ``error.type``: relayq's error code where it has one.
    """
    active = _active
    if active is None:
        return NO_SPAN
    # An invalid traceparent extracts as no parent: the span starts a trace.
    context = active.propagator.extract({"traceparent": parent}) if parent else None
    started = active.tracer.start_span(
        name, context=context, kind=active.kinds[kind], attributes=attributes
    )
    return _Scope(active, started)


def failed(span: Span, error_type: str) -> None:
    """Mark ``span`` as an error of ``error_type`` (an outcome, not an exception)."""
    active = _active
    if active is None:
        return
    span.set_attribute("error.type", error_type)
    status = active.trace.Status(active.trace.StatusCode.ERROR, error_type)
    cast("OtelSpan", span).set_status(status)


def _error_type(exc: BaseException) -> str:
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    if isinstance(exc, TimeoutError):
        return "timeout"
    code = getattr(exc, "code", None)
    return code if isinstance(code, str) else type(exc).__qualname__


class _Scope:
    """Makes a started span current for a block and ends it after. (The SDK's own
    ``use_span`` records an exception with its message and stack, which may quote
    a request; here an exception leaves its type only.)"""

    __slots__ = ("_active", "_span", "_token")

    def __init__(self, active: _Tracing, started: OtelSpan) -> None:
        self._active = active
        self._span = started
        self._token: object = None

    def __enter__(self) -> Span:
        active = self._active
        self._token = active.context.attach(active.trace.set_span_in_context(self._span))
        return self._span

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            if exc is not None:
                failed(self._span, _error_type(exc))
            self._span.end()
        finally:
            self._active.context.detach(self._token)
