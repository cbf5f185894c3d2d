"""A clock that moves only when the test says so: pass it where code takes ``clock``."""

from __future__ import annotations

import time

__all__ = ["FakeClock"]


class FakeClock:
    """Seconds that stand still until :meth:`advance` (or an assignment to ``now``).

    Without ``now`` it starts at the real time, so rows it stamps sit beside
    rows stamped with :func:`time.time`.
    """

    def __init__(self, now: float | None = None) -> None:
        self.now = time.time() if now is None else now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
