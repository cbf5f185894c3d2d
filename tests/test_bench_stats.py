"""The benchmark's rates: a closed loop's rate counts whole cycles."""

from __future__ import annotations

import math

import pytest

from bench.perf.stats import closed_loop_rate, steady_rate


def test_calls_ending_in_waves_are_counted_over_whole_cycles() -> None:
    """500 callers, calls of 1 s: three waves end at 1, 2 and 3 s; 500 calls a second."""
    finished = [float(wave) for wave in (1, 2, 3) for _ in range(500)]

    assert closed_loop_rate(finished, started=0.0) == pytest.approx(500.0)
    # The quantile rate falls on the first and last waves: 1,199 calls over two cycles.
    assert steady_rate(finished) == pytest.approx(599.5)


def test_an_even_stream_of_completions_has_the_same_rate_either_way() -> None:
    finished = [i / 100 for i in range(1, 1001)]  # 100 a second, evenly

    assert closed_loop_rate(finished, started=0.0) == pytest.approx(100.0)
    assert steady_rate(finished) == pytest.approx(100.0)


def test_too_few_completions_have_no_rate() -> None:
    assert math.isnan(closed_loop_rate([1.0, 2.0], started=0.0))
