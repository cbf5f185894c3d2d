"""Showing a batch's progress: a live bar on a terminal, plain lines elsewhere."""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

from relayq.schemas.batches import BatchObject, BatchStatus, RequestCounts

__all__ = ["ProgressDisplay", "duration"]

_NO_PACE = ("- req/s", "-")


class ProgressDisplay:
    """A batch's progress: done/total, failed, rate and ETA.

    A live rich bar on a terminal; elsewhere (logs, pipes, tests), where a
    bar cannot redraw, a plain line each time the status or counts change.
    """

    def __init__(self, out: Console, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._out = out
        self._clock = clock
        self._began = clock()
        self._running_since: tuple[float, int] | None = None
        self._last: tuple[BatchStatus, RequestCounts] | None = None
        self._away = False
        self._bar: Progress | None = None
        self._task = TaskID(0)
        if out.is_terminal:
            self._bar = Progress(
                TextColumn("{task.description:<14}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("failed {task.fields[failed]}  {task.fields[rate]}"),
                TextColumn("ETA {task.fields[eta]}"),
                console=out,
            )
            self._task = self._bar.add_task("submitted", total=None, failed=0, rate="", eta="")

    def __enter__(self) -> ProgressDisplay:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.stop()

    def _pace(self, batch: BatchObject, done: int) -> tuple[str, str]:
        """Requests per second since the batch was first seen running, and the time left."""
        if batch.status is BatchStatus.VALIDATING:
            return _NO_PACE
        now = self._clock()
        since, done_then = self._running_since = self._running_since or (now, done)
        if now - since < 0.5 or done == done_then:
            return _NO_PACE
        rate = (done - done_then) / (now - since)
        return f"{rate:.1f} req/s", duration((batch.request_counts.total - done) / rate)

    def show(self, batch: BatchObject) -> None:
        counts = batch.request_counts
        done = counts.completed + counts.failed
        rate, eta = self._pace(batch, done)
        if self._bar is not None:
            self._bar.update(
                self._task,
                description=batch.status.value,
                total=counts.total or None,
                completed=done,
                failed=counts.failed,
                rate=rate,
                eta=eta,
            )
            return
        if self._away:
            self._line("reconnected")
            self._away = False
        if (batch.status, counts) != self._last:
            self._last = (batch.status, counts)
            progress = f"{done}/{counts.total} done, {counts.failed} failed"
            self._line(f"{batch.status.value}: {progress}, {rate}, ETA {eta}")

    def reconnecting(self, reason: str, *, retry_in: float) -> None:
        if self._bar is not None:
            self._bar.update(self._task, description="[yellow]reconnecting…[/yellow]")
            return
        self._away = True
        self._line(f"reconnecting… ({reason}); next try in {retry_in:.1f}s")

    def _line(self, text: str) -> None:
        self._out.print(f"\\[{duration(self._clock() - self._began)}] {escape(text)}")


def duration(seconds: float) -> str:
    whole = max(0, round(seconds))
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"
