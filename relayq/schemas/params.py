"""Naming a parameter the way OpenAI's errors do: ``messages[0].role``."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["param_path"]

_SOURCES = frozenset({"body", "query", "path", "header"})


def param_path(loc: Sequence[int | str], *, prefix: str = "") -> str | None:
    """``("body", "messages", 0, "role")`` as ``messages[0].role`` (after ``prefix``)."""
    parts = list(loc[1:] if loc and loc[0] in _SOURCES else loc)
    text = prefix
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or None
