"""``/v1/usage``: a key's tokens and cost by day, model, batch (and key, for an admin)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request

from api.deps import ReadCaller, SessionDep
from api.errors import ERROR_RESPONSES, APIError
from relayq.auth.caller import Caller
from relayq.schemas.scopes import Scope
from relayq.schemas.usage import UsageReport
from relayq.store.usage import GROUPS, UsageQuery, job_usage_buckets, usage_buckets
from relayq.store.views import usage_report

__all__ = ["router"]

router = APIRouter(prefix="/v1/usage", tags=["usage"], responses=ERROR_RESPONSES)

_DEFAULT_DAYS = 30
_METADATA = re.compile(r"metadata\[([^\[\]]{1,64})\]")


@router.get("", response_model=UsageReport, response_model_exclude_unset=True)
async def usage(
    request: Request,
    key: ReadCaller,
    session: SessionDep,
    start_day: Annotated[
        str | None, Query(description="First UTC day, YYYY-MM-DD (default: 29 days ago).")
    ] = None,
    end_day: Annotated[str | None, Query(description="Last UTC day (default: today).")] = None,
    group_by: Annotated[
        str, Query(description="Comma-separated: any of key_id, model, day, batch_id.")
    ] = "day,model",
    model: Annotated[str | None, Query(description="Only this model (route).")] = None,
    batch_id: Annotated[str | None, Query(description="Only this batch's requests.")] = None,
    key_id: Annotated[
        str | None, Query(description="Only this key's (another key's: admin scope).")
    ] = None,
) -> UsageReport:
    """The caller's usage, summed from the usage ledger, a bucket per group.

    Filter by a job's metadata with ``metadata[KEY]=VALUE`` (repeatable, all must
    match): those are added up from the jobs themselves, so they cover only jobs
    not yet purged. A key with the ``admin`` scope sees every key's usage and may
    filter on ``key_id``.
    """
    end = _day(end_day, "end_day") if end_day else datetime.now(UTC).date().isoformat()
    start = (
        _day(start_day, "start_day")
        if start_day
        else (date.fromisoformat(end) - timedelta(days=_DEFAULT_DAYS - 1)).isoformat()
    )
    if start > end:
        raise APIError(400, f"end_day {end} is before start_day {start}.", param="end_day")
    query = UsageQuery(
        start_day=start,
        end_day=end,
        group_by=_groups(group_by),
        key_id=_key_filter(key, key_id),
        model=model,
        batch_id=batch_id,
        metadata=_metadata(request),
    )
    if query.metadata:
        buckets = await job_usage_buckets(session, query=query)
    else:
        buckets = await usage_buckets(session, query=query)
    return usage_report(buckets)


def _day(value: str, param: str) -> str:
    try:
        day = date.fromisoformat(value) if len(value) == 10 else None
    except ValueError:
        day = None
    if day is None:
        raise APIError(400, f"{param} must be a UTC day written YYYY-MM-DD.", param=param)
    return day.isoformat()


def _groups(value: str) -> list[str]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    for name in names:
        if name not in GROUPS:
            raise APIError(
                400,
                f"Cannot group by {name[:40]!r}: group_by takes any of {', '.join(GROUPS)}.",
                param="group_by",
            )
    if len(set(names)) != len(names):
        raise APIError(400, "group_by names a field twice.", param="group_by")
    return names


def _key_filter(caller: Caller, key_id: str | None) -> str | None:
    """Whose usage: the caller's own, or (admin scope) any key's, every key's by default."""
    if Scope.ADMIN.value in caller.scopes:
        return key_id
    if key_id is not None and key_id != caller.id:
        raise APIError(
            403,
            "Only a key with the 'admin' scope may read another key's usage.",
            code="insufficient_scope",
            param="key_id",
        )
    return caller.id


def _metadata(request: Request) -> dict[str, str]:
    """The ``metadata[KEY]=VALUE`` filters of the query string."""
    found: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if not name.startswith("metadata"):
            continue
        matched = _METADATA.fullmatch(name)
        if matched is None:
            raise APIError(
                400,
                f"Unknown parameter {name[:80]!r}: filter on metadata with "
                "metadata[KEY]=VALUE (a key of 1 to 64 characters).",
                param=name[:80],
            )
        if matched.group(1) in found and found[matched.group(1)] != value:
            raise APIError(400, f"{name} is given twice with different values.", param=name)
        found[matched.group(1)] = value
    return found
