"""Small statistics for benchmark samples: percentiles, medians, steady rates."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

__all__ = ["closed_loop_rate", "median", "percentile", "ratio", "steady_rate"]


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Sequence[float]) -> float:
    """The median, NaN when there is nothing."""
    clean = [v for v in values if not math.isnan(v)]
    return statistics.median(clean) if clean else math.nan


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``; NaN when the denominator is zero or NaN."""
    if denominator == 0 or math.isnan(denominator) or math.isnan(numerator):
        return math.nan
    return numerator / denominator


def closed_loop_rate(finish_times: Sequence[float], *, started: float) -> float:
    """Completions per second from a closed loop's start (every caller starting at once)
    to its last completion.

    In a closed loop each caller starts its next call as its last one ends, so
    this counts whole cycles. :func:`steady_rate` does not when calls end in
    waves (every call of a fixed latency started together ends together): its
    quantiles then fall on waves, and it counts 1,200 of 1,500 calls over two
    cycles, not three, over-stating the rate by up to a fifth. Stragglers at the
    end (a side whose last calls drain unevenly) count against that side.
    """
    if len(finish_times) < 10:
        return math.nan
    span = max(finish_times) - started
    return len(finish_times) / span if span > 0 else math.nan


def steady_rate(finish_times: Sequence[float], *, trim: float = 0.1) -> float:
    """Completions per second between the ``trim`` and ``1 - trim`` quantiles of finish times.

    Dropping the first and last completions leaves out the ramp-up (connections,
    the first burst of submissions) and the drain (fewer than the depth in flight),
    so the figure is the rate at the requested depth. The same function is used for
    the direct calls and for relayq.
    """
    ordered = sorted(finish_times)
    count = len(ordered)
    if count < 10:
        return math.nan
    first = int(count * trim)
    last = int(count * (1 - trim)) - 1
    span = ordered[last] - ordered[first]
    return (last - first) / span if span > 0 else math.nan
