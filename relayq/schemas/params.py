"""Naming a parameter the way OpenAI's errors do: ``messages[0].role``."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["KIND_TAG_PREFIX", "param_path"]

_SOURCES = frozenset({"body", "query", "path", "header"})
KIND_TAG_PREFIX = "kind="
"""What a tagged union of request bodies puts in an error's location (``kind=chat``)
before the field: no part of the parameter's name."""


def param_path(loc: Sequence[int | str], *, prefix: str = "") -> str | None:
    """``("body", "messages", 0, "role")`` as ``messages[0].role`` (after ``prefix``)."""
    parts = [
        part
        for part in (loc[1:] if loc and loc[0] in _SOURCES else loc)
        if not (isinstance(part, str) and part.startswith(KIND_TAG_PREFIX))
    ]
    text = prefix
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or None
