"""Keeping the garbage collector's full passes off a busy process's loop.

CPython's collection of its oldest generation walks every tracked object the
process holds, and a process runs one whenever the objects that survived into
that generation since the last full pass reach a quarter of it. A worker
holding 500 streaming jobs tracks 150,000 to 260,000 objects, most of them
its imports and settings; each full pass took 100 to 170 ms there, every few
seconds, and every stream's next token waited for it (measured in the SSE
fan-out benchmark: whole waves of 500 tokens 200 to 300 ms late).

:func:`settle` is called once a process has started (its modules imported, its
clients opened): one collection, then ``gc.freeze()`` moves everything alive
into the permanent generation, which no later pass walks. Freezing alone is
not enough: the oldest generation is then nearly empty, so the quarter rule
no longer holds full passes back and one ran every ten middle ones (50 to
100 ms each with 500 streams in flight). The thresholds are raised too, as
long-running CPython services commonly do: the youngest generation is
collected every 20,000 net allocations instead of 700 (each pass longer,
about 0.4 ms for 20,000 young objects on an idle core, up to tens of ms of
wall time seen from the collector's callbacks on a busy 2-core machine, but
30 times rarer), the middle one every 20 of those, the oldest every 100
middle passes. Garbage in
cycles is still freed by the next pass of its generation, only later.

Measured in ``python -m bench.perf --only fanout --quick`` (500 streams, 500
followers): SSE delivery p99 about 290 ms as CPython ships, about 205 ms
frozen alone, 107 to 132 ms frozen with these thresholds.
"""

from __future__ import annotations

import gc

__all__ = ["THRESHOLDS", "settle"]

THRESHOLDS = (20_000, 20, 100)
"""Allocations between youngest passes; youngest passes per middle; middle per oldest."""


def settle() -> None:
    """Collect once, then leave everything alive now out of every later collection."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
