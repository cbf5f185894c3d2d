"""What a caller may do: the scopes a key or a token carries.

A route asks for one scope; a caller holding it may call the route. ``read``
covers every GET of the caller's own objects; ``admin`` covers the admin API
and nothing else (an admin key that should also submit jobs holds ``jobs``).
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["ALL_SCOPES", "DEFAULT_SCOPES", "Scope", "parse_scopes"]


class Scope(StrEnum):
    JOBS = "jobs"
    """``POST /v1/jobs``, cancelling jobs, webhook endpoints."""
    CHAT = "chat"
    """``POST /v1/chat/completions``, ``/v1/responses`` and ``/v1/messages``."""
    BATCHES = "batches"
    """Creating and cancelling batches."""
    FILES = "files"
    """Uploading and deleting files."""
    READ = "read"
    """Reading one's own jobs, events, batches, files, usage and models."""
    ADMIN = "admin"
    """The admin API: keys, breakers, deployments, the audit log."""


ALL_SCOPES: tuple[str, ...] = tuple(s.value for s in Scope)
DEFAULT_SCOPES: tuple[str, ...] = tuple(s.value for s in Scope if s is not Scope.ADMIN)
"""What a new key holds unless told otherwise: everything but the admin API."""


def parse_scopes(values: object) -> tuple[str, ...]:
    """``values`` (a list, or a space- or comma-separated string) as known scopes, in
    :class:`Scope` order; raises ``ValueError`` naming an unknown one."""
    if isinstance(values, str):
        items = values.replace(",", " ").split()
    elif isinstance(values, list | tuple | set | frozenset):
        items = [str(v) for v in values]
    else:
        raise ValueError("scopes must be a list of strings or a space-separated string")
    unknown = sorted(set(items) - set(ALL_SCOPES))
    if unknown:
        raise ValueError(f"unknown scope {unknown[0]!r}; known: {', '.join(ALL_SCOPES)}")
    return tuple(s for s in ALL_SCOPES if s in items)
