"""Completion windows: ``24h``, ``30m``, ``90s``, at most a year."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter, ValidationError

from relayq.schemas.spans import MAX_SPAN_SECONDS, Span, span_seconds

spans = TypeAdapter(Span)


@pytest.mark.parametrize(
    ("span", "seconds"),
    [("24h", 86_400), ("30m", 1_800), ("1.5s", 1.5), ("8760h", MAX_SPAN_SECONDS)],
)
def test_a_span_is_its_seconds(span: str, seconds: float) -> None:
    assert span_seconds(spans.validate_python(span)) == seconds


@pytest.mark.parametrize("span", ["8761h", "525601m", "9" * 400 + "h", "24", "1e3h", "-1s", ""])
def test_a_span_that_is_no_span_or_over_a_year_is_refused(span: str) -> None:
    with pytest.raises(ValidationError):
        spans.validate_python(span)
