"""OpenAI's list pages: ``{object: "list", data, first_id, last_id, has_more}``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, TypeVar

from fastapi import Query
from pydantic import BaseModel

__all__ = ["After", "cursor_page"]

Page = TypeVar("Page", bound=BaseModel)

After = Annotated[str | None, Query(description="Cursor: the last id of the previous page.")]
"""The ``after`` query parameter of every list route."""


def cursor_page(page: type[Page], data: Sequence[Any], *, has_more: bool) -> Page:
    """A page of ``data`` (items with an ``id``); the next page starts ``after`` its last id."""
    return page(
        data=data,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
        has_more=has_more,
    )
