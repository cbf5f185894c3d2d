"""JSON values relayq can keep: what its JSON columns, events, cache and SQL text hold.

Python's ``json`` module, which parses request bodies, takes integers of any
size, lone UTF-16 surrogates written as escapes (``"\\udfff"``), non-finite
numbers (``NaN``, or ``1e400`` read as infinity) and nesting as deep as its
recursion allows. orjson, which encodes job rows, events and cache entries,
refuses integers outside 64 bits and strings that are not Unicode (a
surrogate alone is half of a character) and stops at 255 levels, so such a
value used to fail half-way through storing a job, as a 500. PostgreSQL's
text refuses U+0000 (NUL), in a column or a query alike; it is refused in
every string, not only in those that reach one (a webhook URL, a file id), so
a request is answered alike on SQLite and PostgreSQL.
:func:`first_unkeepable` finds the first such value and the path to it, so the
caller can be told what to fix and where.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

__all__ = ["MAX_DEPTH", "MAX_INT", "MIN_INT", "Unkeepable", "first_unkeepable", "text_problem"]

MIN_INT = -(2**63)
MAX_INT = 2**64 - 1
"""The integers orjson encodes: signed 64-bit at the bottom, unsigned at the top."""

MAX_DEPTH = 64
"""Levels of arrays and objects a value may nest. Far more than any request
needs (OpenAI's structured outputs allow 10 levels of schema), and far enough
under orjson's 255 to leave room for the objects a job is wrapped in (its
webhook payload, its events)."""

Path = tuple[str | int, ...]


@dataclass(frozen=True, kw_only=True)
class Unkeepable:
    """A value relayq cannot keep: where it is, and why, in words fit for the caller."""

    path: Path
    reason: str
    too_deep: bool = False
    """The value nests too deeply (the body is then not JSON relayq reads, whatever the path)."""


def first_unkeepable(value: Any, *, max_depth: int = MAX_DEPTH) -> Unkeepable | None:
    """The first value in document order that relayq cannot keep, or None.

    Every request body goes through here, so the common case is kept cheap
    (a few microseconds for a typical body): ASCII keys and strings cost one
    test each, and a path is built only for the value refused.
    """
    if isinstance(value, dict | list):
        return _container(value, 1, max_depth)
    reason = _problem(value)
    return None if reason is None else Unkeepable(path=(), reason=reason)


def _container(
    container: dict[str, Any] | list[Any], level: int, max_depth: int
) -> Unkeepable | None:
    """The first problem inside ``container``, the ``level``-th array or object down,
    with its path from there.

    Recursive, in document order; the recursion ends at ``max_depth``, far
    inside Python's limit.
    """
    if level > max_depth:
        deep = f"it is nested more than {max_depth} levels deep"
        return Unkeepable(path=(), reason=deep, too_deep=True)
    items: Iterable[tuple[str | int, Any]]
    if isinstance(container, dict):
        keys = "".join(container)
        found = None if keys.isascii() and "\x00" not in keys else _key_problem(container)
        if found is not None:
            return found
        items = container.items()
    else:
        items = enumerate(container)
    for key, item in items:
        kind = type(item)
        if kind is dict or kind is list:
            found = _container(item, level + 1, max_depth)
            if found is not None:
                return replace(found, path=(key, *found.path))
        elif (kind is str and item.isascii() and "\x00" not in item) or kind is bool:
            continue
        elif item is not None and (reason := _problem(item)) is not None:
            return Unkeepable(path=(key,), reason=reason)
    return None


def _key_problem(container: dict[str, Any]) -> Unkeepable | None:
    for key in container:
        problem = text_problem(key)
        if problem is not None:
            shown = key[:40].encode("unicode_escape").decode()
            return Unkeepable(path=(), reason=f"the key '{shown}' {problem}")
    return None


def _problem(item: Any) -> str | None:
    if isinstance(item, str):
        problem = text_problem(item)
        return None if problem is None else f"the string {problem}"
    if isinstance(item, bool):
        return None
    if isinstance(item, int) and not MIN_INT <= item <= MAX_INT:
        return f"the integer {_shown(item)} is outside the 64-bit range ({MIN_INT} to {MAX_INT})"
    if isinstance(item, float) and not math.isfinite(item):
        return f"the number is {item}: JSON numbers must be finite"
    return None


def text_problem(text: str) -> str | None:
    """What in ``text`` relayq cannot keep (a NUL, a lone surrogate), or None."""
    nul = text.find("\x00")
    if nul >= 0:
        return f"holds U+0000 (NUL) at index {nul}, which the database's text cannot hold"
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (
            f"has a lone UTF-16 surrogate (\\u{ord(text[exc.start]):04x}) at index {exc.start}, "
            "half of a character: one beyond U+FFFF is written as two escapes, "
            "a high surrogate then a low one"
        )
    return None


def _shown(number: int) -> str:
    """The number, its middle cut when long (the parser allows 4,300 digits)."""
    text = str(number)
    return text if len(text) <= 30 else f"{text[:12]}…{text[-6:]} ({len(text.lstrip('-'))} digits)"
