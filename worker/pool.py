"""A Celery pool whose tasks run on the worker's event loop: no thread per task in flight.

Celery (5.7) has no asyncio tasks. The threads pool gives every task in
flight a thread that blocks until the loop has run it: 1,000 jobs in flight
are 1,000 parked threads, their stacks, and a GIL hand-off at each end.

:class:`LoopPool` keeps Celery's consumer, acks, retries, signals and task
events, and changes only where a task's work runs. A task that declares
``loop_start`` (a callable taking the task's arguments and returning a
:class:`concurrent.futures.Future` for work it started on the loop) is
started on the loop straight from the consumer. When its work ends, Celery's
own tracer runs the task body in one of a few threads; the body reads the
finished work with :func:`loop_outcome` instead of doing it again, so
success, ``task.retry`` and failure go through Celery exactly as before. The
tracer (task-succeeded event, ack) takes well under a millisecond, so a
handful of threads serve any number of jobs in flight.

Tasks without ``loop_start`` run whole in a thread, as on the threads pool.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextvars import ContextVar
from typing import Any, TypeVar, cast

from celery.concurrency.base import BasePool, apply_target
from kombu.serialization import loads, prepare_accept_content

__all__ = [
    "LoopPool",
    "LoopStart",
    "loop_outcome",
    "loop_result",
    "loop_task",
    "message_headers",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

LoopStart = Callable[..., "Future[Any]"]
"""A task's ``loop_start``: called with the task's arguments, returns the loop's future."""

_outcome: ContextVar[Future[Any] | None] = ContextVar("relayq_loop_outcome", default=None)
_headers: ContextVar[dict[str, Any] | None] = ContextVar("relayq_message_headers", default=None)

_TRACER_THREADS = 4
"""Threads that run the tracer of finished loop work (each takes well under 1 ms)."""


def loop_task(start: LoopStart) -> dict[str, Any]:
    """Options of a relayq task whose work ``start`` begins on the loop.

    Bound (it retries itself), acked once it ran (at-least-once), no result kept.
    """
    return {
        "bind": True,
        "acks_late": True,
        "ignore_result": True,
        "loop_start": staticmethod(start),
    }


def loop_outcome() -> Future[Any] | None:
    """In a task body traced by :class:`LoopPool`: the loop's finished work, else None."""
    return _outcome.get()


def message_headers() -> dict[str, Any]:
    """In a ``loop_start`` called by :class:`LoopPool`: its message's headers, else ``{}``."""
    return _headers.get() or {}


def loop_result(start: Callable[..., Future[T]], *args: Any) -> T:
    """A task body's result: the work :class:`LoopPool` already ran, or run it now.

    Under another pool (threads, solo) the body starts the work with
    ``start(*args)`` itself and waits for it.
    """
    outcome = loop_outcome()
    future = outcome if outcome is not None else start(*args)
    return cast(T, future.result())


class _Applied:
    """What ``apply_async`` returns: Celery keeps a weak reference and may wait on it."""

    def __init__(self) -> None:
        self.done = threading.Event()

    def wait(self, timeout: float | None = None) -> None:
        self.done.wait(timeout)

    def get(self, timeout: float | None = None) -> None:
        self.done.wait(timeout)


def _with_runtime(callback: Callable[..., Any] | None, ran: float) -> Callable[..., Any] | None:
    """Celery's success callback, told the work's own time (``ran`` seconds on the loop).

    The tracer times only itself: it runs the task body after the work, so
    Flower's runtime and the task-succeeded event would say a few hundred
    microseconds for a job that ran for seconds.
    """
    if callback is None:
        return None

    def timed(result: Any) -> Any:
        if isinstance(result, tuple) and len(result) == 3:  # (failed, retval, runtime)
            failed, retval, _ = result
            result = (failed, retval, ran)
        return callback(result)

    return timed


class LoopPool(BasePool):
    """Runs ``loop_start`` tasks on the event loop, anything else in a thread."""

    body_can_be_buffer = True
    signal_safe = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._tracers = ThreadPoolExecutor(_TRACER_THREADS, thread_name_prefix="relayq-trace")
        # Grows only as blocking tasks arrive; loop tasks never take one of these.
        self._blocking = ThreadPoolExecutor(self.limit, thread_name_prefix="relayq-task")
        self._lock = threading.Lock()
        self._in_flight: set[_Applied] = set()
        self._accept = (
            prepare_accept_content(self.app.conf.accept_content) if self.app is not None else None
        )

    @property
    def in_flight(self) -> int:
        """Loop tasks started and not yet traced."""
        with self._lock:
            return len(self._in_flight)

    # celery-types declares on_apply(*args, **kwargs) -> None; Celery passes these
    # and keeps a weak reference to what it returns (the threads pool's too).
    def on_apply(  # type: ignore[override]
        self,
        target: Callable[..., Any],
        args: tuple[Any, ...] | None = None,
        kwargs: dict[str, Any] | None = None,
        callback: Callable[..., Any] | None = None,
        accept_callback: Callable[..., Any] | None = None,
        **_: Any,
    ) -> _Applied:
        applied = _Applied()
        began = time.monotonic()
        started = self._start_on_loop(args or ())
        if started is None:
            future = self._blocking.submit(
                apply_target, target, args, kwargs, callback, accept_callback
            )
            future.add_done_callback(lambda _: applied.done.set())
            return applied
        if accept_callback is not None:
            accept_callback(os.getpid(), time.monotonic())
        with self._lock:
            self._in_flight.add(applied)

        def trace(finished: Future[Any], ran: float) -> None:
            token = _outcome.set(finished)
            try:
                apply_target(target, args, kwargs, _with_runtime(callback, ran))
            finally:
                _outcome.reset(token)
                with self._lock:
                    self._in_flight.discard(applied)
                applied.done.set()

        def done(finished: Future[Any]) -> None:
            self._tracers.submit(trace, finished, time.monotonic() - began)

        started.add_done_callback(done)
        return applied

    def _start_on_loop(self, args: tuple[Any, ...]) -> Future[Any] | None:
        """Start the task's work on the loop if it has ``loop_start``; else None.

        ``args`` are the tracer's: task name, task id, request, message body,
        content type and encoding (Celery's message protocol 2).
        """
        if len(args) != 6 or self.app is None:
            return None
        name, _, headers, body, content_type, content_encoding = args
        task = self.app.tasks.get(name)
        start: LoopStart | None = getattr(task, "loop_start", None)
        if start is None:
            return None
        token = _headers.set(headers if isinstance(headers, dict) else None)
        try:
            task_args, task_kwargs, _ = loads(
                bytes(body), content_type, content_encoding, accept=self._accept
            )
            return start(*task_args, **task_kwargs)
        except Exception:
            # The body then runs in a thread and meets the same error there, in the tracer.
            log.exception("%s could not start on the loop; running it in a thread", name)
            return None
        finally:
            _headers.reset(token)

    def on_stop(self) -> None:
        """Warm shutdown: let loop tasks finish and be acked, then the threads."""
        with self._lock:
            pending = list(self._in_flight)
        for applied in pending:
            applied.wait()
        self._tracers.shutdown(wait=True)
        self._blocking.shutdown(wait=True)
        super().on_stop()

    def on_terminate(self) -> None:
        self._tracers.shutdown(wait=False, cancel_futures=True)
        self._blocking.shutdown(wait=False, cancel_futures=True)

    def _get_info(self) -> dict[str, Any]:
        """What ``celery inspect stats`` and Flower show of the pool."""
        return {
            "implementation": f"{type(self).__module__}:{type(self).__name__}",
            "max-concurrency": self.limit,
            "in-flight": self.in_flight,
        }
