"""Budget windows: the UTC day or month a key's budget is counted in.

A window is named by its start, as text that sorts by time: ``2026-12-05`` for
a day, ``2026-12`` for a month. A job is counted in the window it was
submitted in, to the end: its cost is booked there even if it finishes after
midnight, so a reservation is always released from the row that took it.
"""

from __future__ import annotations

import datetime as dt
from enum import Enum

__all__ = ["Period", "window_of"]


class Period(str, Enum):
    """How long a key's budget lasts before it starts again (UTC)."""

    DAY = "day"
    MONTH = "month"


def window_of(period: Period | str, now: float) -> str:
    """The window of ``period`` that the Unix time ``now`` falls in."""
    moment = dt.datetime.fromtimestamp(now, tz=dt.UTC)
    if Period(period) is Period.DAY:
        return moment.strftime("%Y-%m-%d")
    return moment.strftime("%Y-%m")
