"""Checking that an answer is an error in OpenAI's shape."""

from __future__ import annotations

import json
from typing import Any

import httpx

__all__ = ["ERROR_FIELDS", "anthropic_shape_problem", "error_of", "shape_problem"]

ERROR_FIELDS = frozenset({"message", "type", "param", "code", "request_id"})


def shape_problem(
    *, content_type: str | None, content: bytes, request_id: str | None
) -> str | None:
    """What keeps an answer from being ``{"error": {"message", "type", "param", "code",
    "request_id"}}`` with ``request_id`` the one of its ``x-request-id`` header."""
    if not (content_type or "").startswith("application/json"):
        return f"content-type is {content_type!r}, not JSON"
    try:
        payload = json.loads(content)
    except ValueError as exc:
        return f"the body is not JSON ({exc})"
    if not isinstance(payload, dict) or set(payload) != {"error"}:
        return "the body is not an object with one member, 'error'"
    error = payload["error"]
    if not isinstance(error, dict) or set(error) != ERROR_FIELDS:
        return f"'error' does not have exactly the members {sorted(ERROR_FIELDS)}"
    if not isinstance(error["message"], str) or not isinstance(error["type"], str):
        return "'error.message' and 'error.type' must be strings"
    if any(
        error[name] is not None and not isinstance(error[name], str) for name in ("param", "code")
    ):
        return "'error.param' and 'error.code' must be strings or null"
    if request_id is None:
        return "the answer has no x-request-id header"
    if error["request_id"] != request_id:
        return f"'error.request_id' is {error['request_id']!r}, its header {request_id!r}"
    return None


def anthropic_shape_problem(
    *, content_type: str | None, content: bytes, request_id: str | None
) -> str | None:
    """What keeps an answer of an Anthropic-dialect route from being ``{"type": "error",
    "error": {"type", "message"}, "request_id"}`` with its header's request id."""
    if not (content_type or "").startswith("application/json"):
        return f"content-type is {content_type!r}, not JSON"
    try:
        payload = json.loads(content)
    except ValueError as exc:
        return f"the body is not JSON ({exc})"
    if not isinstance(payload, dict) or set(payload) != {"type", "error", "request_id"}:
        return "the body is not an object with the members 'type', 'error' and 'request_id'"
    error = payload["error"]
    if payload["type"] != "error" or not isinstance(error, dict):
        return "'type' is not 'error', or 'error' is not an object"
    if set(error) != {"type", "message"} or not all(isinstance(v, str) for v in error.values()):
        return "'error' does not have exactly the string members 'type' and 'message'"
    if request_id is None or payload["request_id"] != request_id:
        return f"'request_id' is {payload['request_id']!r}, its header {request_id!r}"
    return None


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    """The ``error`` member of ``response``, which must have ``status`` and OpenAI's shape."""
    assert response.status_code == status, response.text
    problem = shape_problem(
        content_type=response.headers.get("content-type"),
        content=response.content,
        request_id=response.headers.get("x-request-id"),
    )
    assert problem is None, f"{problem}: {response.text}"
    error: dict[str, Any] = response.json()["error"]
    return error
